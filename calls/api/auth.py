"""Who is calling the bridge API: a device, by its bearer token, on its own tenant's host."""

from __future__ import annotations

import time
from dataclasses import dataclass

from django.core.cache import cache
from django.db import connection
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

from calls.models import Device
from calls.selectors import call_settings_get, device_for_token
from calls.services import device_touch

THROTTLE_WINDOW_SECONDS = 60


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
        if header[0].decode(errors="replace").lower() != self.keyword.lower() or len(header) != 2:
            raise exceptions.AuthenticationFailed("Use the header `Authorization: Bearer <token>`.")
        token = header[1].decode(errors="replace")
        # The lookup runs in the schema the Host selected, so another tenant's token finds nothing.
        device = device_for_token(token=token)
        if device is None:
            raise exceptions.AuthenticationFailed("Unknown or revoked device token.")
        device_touch(device=device)
        return BridgeClient(device), token

    def authenticate_header(self, request: Request) -> str:
        return f'{self.keyword} realm="bridge"'


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
        now = time.time()
        window = int(now // THROTTLE_WINDOW_SECONDS)
        key = f"simtrix:throttle:{connection.schema_name}:{client.device.pk}:{window}"
        redis = cache._cache.get_client(key, write=True)
        pipe = redis.pipeline()
        pipe.incr(key)
        pipe.expire(key, THROTTLE_WINDOW_SECONDS + 5)
        count, _ = pipe.execute()
        self._wait = (window + 1) * THROTTLE_WINDOW_SECONDS - now
        return count <= limit

    def wait(self) -> float | None:
        return getattr(self, "_wait", None)
