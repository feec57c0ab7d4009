"""OpenAPI description of the device token (loaded by drf-spectacular via CallsConfig.ready)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class DeviceTokenScheme(OpenApiAuthenticationExtension):
    target_class = "calls.api.auth.DeviceTokenAuthentication"
    name = "deviceToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "stx_...",
            "description": "The device token issued in the tenant admin or by "
            "`manage.py issue_device_token`; valid only on its own tenant's host.",
        }
