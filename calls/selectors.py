from __future__ import annotations

from calls.models import Device
from calls.tokens import TOKEN_PREFIX, token_hash


def device_for_token(*, token: str) -> Device | None:
    """The active device of the current tenant schema that owns this token, if any."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    return Device.objects.filter(token_hash=token_hash(token), revoked_at__isnull=True).first()
