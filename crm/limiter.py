"""A per-portal request limiter in Redis, shared by every worker and process.

Bitrix24 counts requests per portal in a leaky bucket (REFERENCE 2): +1 per request, draining
2/s (Enterprise 5/s), refusing with 503 QUERY_LIMIT_EXCEEDED above 50 (250). SIMtrix keeps a
model of that bucket in Redis, GCRA-style: each request reserves the earliest moment it may be
sent, and sleeps until then. A little headroom absorbs the network jitter between reserving a
slot and the portal counting the request, so SIMtrix stays under the limit instead of hitting it.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from redis.commands.core import Script

from common.metrics import rate_limit_wait_record
from crm.redis_client import get_redis

# Reserve: returns the seconds to wait before sending, or -wait when that exceeds max_wait
# (nothing reserved then). Uses Redis' clock so every host agrees on "now".
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local blocked = tonumber(redis.call('GET', KEYS[2]) or '0')
local send_at = math.max(now, tat - tolerance, blocked)
local wait = send_at - now
if wait > max_wait then
  return tostring(-wait)
end
local new_tat = math.max(tat, send_at) + interval
local ttl = math.ceil((new_tat - now + tolerance + 1) * 1000)
redis.call('SET', KEYS[1], string.format('%.6f', new_tat), 'PX', ttl)
return tostring(wait)
"""

_BLOCK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local until_ = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if until_ > current then
  local ttl = math.ceil(tonumber(ARGV[1]) * 1000) + 1000
  redis.call('SET', KEYS[1], string.format('%.6f', until_), 'PX', ttl)
end
return 1
"""


@functools.cache
def _script(source: str) -> Script:
    return get_redis().register_script(source)


# Stay a little below the portal's numbers: requests reserved in order may arrive bunched.
RATE_MARGIN = 0.9


@dataclass(frozen=True)
class PortalLimiter:
    domain: str
    per_second: float
    burst: int

    @property
    def _keys(self) -> list[str]:
        base = f"simtrix:b24:rate:{self.domain}"
        return [f"{base}:tat", f"{base}:blocked"]

    @property
    def interval(self) -> float:
        return 1.0 / (self.per_second * RATE_MARGIN)

    @property
    def effective_burst(self) -> int:
        headroom = max(1, math.ceil(self.burst * 0.1))
        return max(1, self.burst - headroom)

    def reserve(self, *, max_wait: float) -> float | None:
        """Seconds to sleep before sending one request, or None if no slot within max_wait."""
        tolerance = (self.effective_burst - 1) * self.interval
        wait = float(_script(_ACQUIRE)(keys=self._keys, args=[self.interval, tolerance, max_wait]))
        rate_limit_wait_record(wait)
        return None if wait < 0 else wait

    def block(self, seconds: float) -> None:
        """Nobody sends to this portal for ``seconds`` (after the portal said 503)."""
        _script(_BLOCK)(keys=self._keys[1:], args=[seconds])

    def reset(self) -> None:
        """Forgets the bucket and every method block of this portal."""
        r = get_redis()
        blocks = list(r.scan_iter(match=method_block_key(self.domain, "*"), count=500))
        r.delete(*self._keys, *blocks)


def method_block_key(domain: str, method: str) -> str:
    return f"simtrix:b24:oplimit:{domain}:{method.lower()}"
