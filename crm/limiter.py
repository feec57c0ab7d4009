"""A per-portal request limiter in Redis, shared by every worker and process.

Bitrix24 counts requests per portal in a leaky bucket (REFERENCE 2): +1 per request, draining
2/s (Enterprise 5/s), refusing with 503 QUERY_LIMIT_EXCEEDED above 50 (250). SIMtrix keeps a
model of that bucket in Redis, GCRA-style: each request reserves the earliest moment it may be
sent, and sleeps until then. A little headroom absorbs the network jitter between reserving a
slot and the portal counting the request, so SIMtrix stays under the limit instead of hitting it.

The configured numbers are a ceiling, not a fact: another app on the portal drains the same
bucket, and the plan may be smaller than configured. So the limiter learns (AIMD): a 503
``QUERY_LIMIT_EXCEEDED`` on a request the model let through multiplies the portal's estimate
(burst and rate alike) by ``LEARN_DECREASE`` and marks the bucket full, and the estimate creeps
back by ``LEARN_RECOVERY_PER_SECOND`` of the configured numbers. A 503 of a request reserved
before the last decrease (in flight meanwhile) does not lower it again.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from django.conf import settings
from redis.commands.core import Script

from common.metrics import rate_limit_wait_record
from crm.redis_client import get_redis

# The learned estimate (KEYS[3] = "factor,since"): the factor now, crept back since then.
_FACTOR = """
local function factor(key, now, recovery)
  local learned = redis.call('GET', key)
  if not learned then
    return 1.0, 0.0
  end
  local f0, at = string.match(learned, '([^,]+),([^,]+)')
  return math.min(1.0, tonumber(f0) + recovery * (now - tonumber(at))), tonumber(at)
end
"""

# Reserve: returns {seconds to wait before sending (or -wait when that exceeds max_wait: nothing
# reserved then), Redis' now}. Uses Redis' clock so every host agrees on "now". ARGV[6]: the
# slots of the burst this request may not take (kept for the priority lane); ARGV[7] = '1' only
# looks (nothing reserved).
_ACQUIRE = (
    _FACTOR
    + """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local max_wait = tonumber(ARGV[3])
local f = 1.0
if ARGV[5] == '1' then
  f = factor(KEYS[3], now, tonumber(ARGV[4]))
end
local interval = tonumber(ARGV[1]) / f
local burst = math.max(1, math.floor(tonumber(ARGV[2]) * f))
local tolerance = (math.max(1, burst - tonumber(ARGV[6])) - 1) * interval
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local blocked = tonumber(redis.call('GET', KEYS[2]) or '0')
local send_at = math.max(now, tat - tolerance, blocked)
local wait = send_at - now
if ARGV[7] == '1' then
  -- Looking only: the wait, and how many requests could go at once now.
  local free = 0
  if blocked <= now then
    free = math.max(0, math.floor((now + tolerance - math.max(tat, now)) / interval + 1e-9) + 1)
  end
  return {tostring(wait), tostring(free)}
end
if wait > max_wait then
  return {tostring(-wait), tostring(now)}
end
local new_tat = math.max(tat, send_at) + interval
local ttl = math.ceil((new_tat - now + tolerance + 1) * 1000)
redis.call('SET', KEYS[1], string.format('%.6f', new_tat), 'PX', ttl)
return {tostring(wait), tostring(now)}
"""
)

# The portal said QUERY_LIMIT_EXCEEDED to a request reserved at ARGV[6] (Redis time): lower the
# estimate unless it was lowered after that reservation, and take the bucket as full.
_EXCEEDED = (
    _FACTOR
    + """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local recovery = tonumber(ARGV[3])
local f, since = factor(KEYS[2], now, recovery)
if tonumber(ARGV[6]) >= since then
  f = math.max(tonumber(ARGV[5]), f * tonumber(ARGV[4]))
  local ttl = math.ceil(((1.0 - f) / recovery + 1) * 1000)
  redis.call('SET', KEYS[2], string.format('%.6f,%.6f', f, now), 'PX', ttl)
end
local interval = tonumber(ARGV[1]) / f
local full = now + math.max(1, math.floor(tonumber(ARGV[2]) * f)) * interval
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if full > tat then
  redis.call('SET', KEYS[1], string.format('%.6f', full), 'PX', math.ceil((full - now + 1) * 1000))
end
return tostring(f)
"""
)

_ESTIMATE = (
    _FACTOR
    + """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local f = factor(KEYS[1], now, tonumber(ARGV[1]))
return tostring(f)
"""
)

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


def limiter_learns() -> bool:
    """Whether the limiter lowers a portal's estimate on 503; off only to measure the
    difference (``SIMTRIX_BITRIX24_LIMITER_LEARNS = False``)."""
    return bool(getattr(settings, "SIMTRIX_BITRIX24_LIMITER_LEARNS", True))


@functools.cache
def _script(source: str) -> Script:
    return get_redis().register_script(source)


# Without a deadline, how long a request may wait for a limiter slot or a 429 reset before the
# caller gets a transient error (a Celery task then retries later instead of holding a worker).
MAX_RATE_WAIT = 30.0
# Stay a little below the portal's numbers: requests reserved in order may arrive bunched.
RATE_MARGIN = 0.9
# Learning: a 503 halves the estimate (not below a tenth of the configured numbers); it creeps
# back by 1 % of them a second (from half to all in 50 s).
LEARN_DECREASE = 0.5
LEARN_FLOOR = 0.1
LEARN_RECOVERY_PER_SECOND = 0.01
# The priority lane: a fifth of the burst (of the learned estimate) is kept for requests that a
# ringing phone waits for (a lookup, the register that pops the card). The backlog fills the
# bucket only up to the rest, so a ringing call finds a slot at once however long the backlog.
PRIORITY_SHARE = 0.2


@dataclass(frozen=True)
class Slot:
    """A reserved request slot: sleep ``wait`` seconds; ``at`` is when it was reserved (Redis
    time), what ``PortalLimiter.exceeded`` needs to know."""

    wait: float
    at: float


@dataclass(frozen=True)
class PortalLimiter:
    domain: str
    per_second: float
    burst: int

    @property
    def _keys(self) -> list[str]:
        base = f"simtrix:b24:rate:{self.domain}"
        return [f"{base}:tat", f"{base}:blocked", f"{base}:learned"]

    @property
    def interval(self) -> float:
        return 1.0 / (self.per_second * RATE_MARGIN)

    @property
    def effective_burst(self) -> int:
        headroom = max(1, math.ceil(self.burst * 0.1))
        return max(1, self.burst - headroom)

    @property
    def priority_slots(self) -> int:
        """Slots of the burst only the priority lane takes."""
        return math.ceil(self.effective_burst * PRIORITY_SHARE)

    def acquire(
        self, *, max_wait: float, learns: bool = True, priority: bool = False
    ) -> Slot | None:
        """A slot for one request, or None if there is none within max_wait.

        ``learns``: by the learned estimate (False: by the configured numbers only);
        ``priority``: the whole burst may be taken (a ringing phone waits for this request)."""
        raw_wait, raw_now = _script(_ACQUIRE)(
            keys=self._keys, args=self._acquire_args(max_wait, learns, priority, look=False)
        )
        wait = float(raw_wait)
        rate_limit_wait_record(wait)
        return None if wait < 0 else Slot(wait=wait, at=float(raw_now) + wait)

    def free_slots(self, *, learns: bool = True) -> int:
        """How many requests of the backlog could go at once now (nothing is reserved)."""
        raw_wait, raw_free = _script(_ACQUIRE)(
            keys=self._keys, args=self._acquire_args(0.0, learns, False, look=True)
        )
        return 0 if float(raw_wait) > 0 else int(raw_free)

    def crowded(self, *, due: int = 1, learns: bool = True) -> bool:
        """Whether ``due`` requests of the backlog could not all go at once now: the portal has
        more due work than its bucket lets through (nothing is reserved)."""
        return self.free_slots(learns=learns) < due

    def _acquire_args(
        self, max_wait: float, learns: bool, priority: bool, *, look: bool
    ) -> list[float | int]:
        return [
            self.interval,
            self.effective_burst,
            max_wait,
            LEARN_RECOVERY_PER_SECOND,
            1 if learns else 0,
            0 if priority else self.priority_slots,
            1 if look else 0,
        ]

    def reserve(self, *, max_wait: float, priority: bool = True) -> float | None:
        """Seconds to sleep before sending one request, or None if no slot within max_wait."""
        slot = self.acquire(max_wait=max_wait, priority=priority)
        return None if slot is None else slot.wait

    def exceeded(self, reserved_at: float, *, learns: bool = True) -> float:
        """The portal answered QUERY_LIMIT_EXCEEDED to a request reserved at ``reserved_at``:
        lowers the estimate (when ``learns``) and takes the bucket as full. The factor now."""
        if not learns:
            return 1.0
        args = [
            self.interval,
            self.effective_burst,
            LEARN_RECOVERY_PER_SECOND,
            LEARN_DECREASE,
            LEARN_FLOOR,
            reserved_at,
        ]
        return float(_script(_EXCEEDED)(keys=[self._keys[0], self._keys[2]], args=args))

    def estimate(self) -> tuple[float, int]:
        """The learned (requests per second, burst let through at once) of the portal."""
        factor = float(_script(_ESTIMATE)(keys=[self._keys[2]], args=[LEARN_RECOVERY_PER_SECOND]))
        return self.per_second * factor, max(1, math.floor(self.effective_burst * factor))

    def block(self, seconds: float) -> None:
        """Nobody sends to this portal for ``seconds`` (after the portal said 503)."""
        _script(_BLOCK)(keys=self._keys[1:2], args=[seconds])

    def reset(self) -> None:
        """Forgets the bucket and every method block of this portal."""
        r = get_redis()
        blocks = list(r.scan_iter(match=method_block_key(self.domain, "*"), count=500))
        r.delete(*self._keys, *blocks)


def method_block_key(domain: str, method: str) -> str:
    return f"simtrix:b24:oplimit:{domain}:{method.lower()}"
