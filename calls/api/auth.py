"""Who is calling the bridge API: a device, by its bearer token, on its own tenant's host."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from django.core.cache import cache, caches
from django.db import connection
from django.utils.translation import gettext
from redis.exceptions import RedisError
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

from calls.models import Device
from calls.selectors import call_settings_get, device_for_token
from calls.services import device_touch
from common.http import address_counted, client_ip

logger = logging.getLogger(__name__)

THROTTLE_WINDOW_SECONDS = 60
# Wrong device tokens one address may try per window before every token from it waits (429),
# checked before the token is looked up. A token is 256 random bits: this is not what stops a
# guess, it keeps a guessing script from costing a database query per try. A phone with a
# revoked token stops at its first 401; an office NAT with a few such phones stays far below it.
TOKEN_FAILURES_PER_WINDOW = 20
_FAILED_AUTH_KEY = "simtrix:failed-auth"


@dataclass
class BridgeClient:
    """request.user of the bridge API."""

    device: Device
    is_authenticated: bool = True


class DeviceTokenAuthentication(BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[BridgeClient, str] | None:
        header = get_authorization_header(request).split()
        if not header:
            return None
        address = client_ip(request._request)
        wait = _token_failures_wait(address)
        if wait is not None:
            raise exceptions.Throttled(
                wait=wait, detail=gettext("Too many wrong device tokens from this address.")
            )
        if header[0].decode(errors="replace").lower() != self.keyword.lower() or len(header) != 2:
            _token_failure_count(address)
            raise exceptions.AuthenticationFailed(
                gettext("Use the header `Authorization: Bearer <token>`.")
            )
        token = header[1].decode(errors="replace")
        # The lookup runs in the schema the Host selected, so another tenant's token finds nothing.
        device = device_for_token(token=token)
        if device is None:
            _token_failure_count(address)
            raise exceptions.AuthenticationFailed(gettext("Unknown or revoked device token."))
        device_touch(device=device)
        return BridgeClient(device), token

    def authenticate_header(self, request: Request) -> str:
        return f'{self.keyword} realm="bridge"'


def _shared_redis(key: str, *, write: bool = False) -> Any:
    """The shared cache's Redis client (one round trip for INCR and EXPIRE, as the throttle)."""
    shared: Any = caches["shared"]
    return shared._cache.get_client(key, write=write)


def _token_failures_key(address: str, window: int) -> str:
    # Per address on every host (a guesser gains nothing by trying each tenant): the shared
    # cache's prefix, not the tenant's.
    return caches["shared"].make_key(f"{_FAILED_AUTH_KEY}:{address}:{window}")


# The throttles' clock (fixed one-minute windows); the tests hold it still, so a count never
# straddles two windows.
_clock = time.time


def _token_failures_wait(address: str) -> float | None:
    """Seconds until this address may try tokens again, or None when it may now (one GET).
    Without Redis it may: the phones' events matter more than a guesser's cost."""
    now = _clock()
    window = int(now // THROTTLE_WINDOW_SECONDS)
    key = _token_failures_key(address, window)
    try:
        count = _shared_redis(key).get(key)
    except RedisError as exc:
        logger.warning("wrong-token limit not checked (Redis unavailable): %s", exc)
        return None
    if count is None or int(count) < TOKEN_FAILURES_PER_WINDOW:
        return None
    return (window + 1) * THROTTLE_WINDOW_SECONDS - now


def _token_failure_count(address: str) -> None:
    window = int(_clock() // THROTTLE_WINDOW_SECONDS)
    key = _token_failures_key(address, window)
    pipe = _shared_redis(key, write=True).pipeline()
    pipe.incr(key)
    pipe.expire(key, THROTTLE_WINDOW_SECONDS + 5)
    try:
        pipe.execute()
    except RedisError as exc:
        logger.warning("wrong device token not counted (Redis unavailable): %s", exc)


def device_token_failures_forget(*, address: str | None = None) -> int:
    """Lifts the wait of one address (or of all): an operator's remedy after a misconfigured
    office, and the tests' clean slate. An IPv6 address lifts its /64, the unit counted.
    Returns the number of counters removed."""
    counted = address_counted(address) if address else "*"
    pattern = caches["shared"].make_key(f"{_FAILED_AUTH_KEY}:{counted}:*")
    redis = _shared_redis(pattern, write=True)
    keys = list(redis.scan_iter(match=pattern, count=1000))
    return redis.delete(*keys) if keys else 0


class IsBridgeDevice(BasePermission):
    def has_permission(self, request: Request, view: APIView) -> bool:
        return isinstance(request.user, BridgeClient)


class DeviceRateThrottle(BaseThrottle):
    """A fixed one-minute window per device in Redis (one round trip, atomic across workers)."""

    def allow_request(self, request: Request, view: APIView) -> bool:
        client = request.user
        if not isinstance(client, BridgeClient):
            return True

        limit = call_settings_get().throttle_per_minute
        now = _clock()
        window = int(now // THROTTLE_WINDOW_SECONDS)
        key = f"simtrix:throttle:{connection.schema_name}:{client.device.pk}:{window}"
        pipe = cache._cache.get_client(key, write=True).pipeline()
        pipe.incr(key)
        pipe.expire(key, THROTTLE_WINDOW_SECONDS + 5)
        try:
            count, _ = pipe.execute()
        except RedisError as exc:
            # Unthrottled rather than refused: nothing a phone sends may be lost to it.
            logger.warning("device %s not throttled (Redis unavailable): %s", client.device.pk, exc)
            return True
        self._wait = (window + 1) * THROTTLE_WINDOW_SECONDS - now
        return count <= limit

    def wait(self) -> float | None:
        return getattr(self, "_wait", None)
