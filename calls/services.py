from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from calls.models import Device
from calls.phones import phone_to_e164
from calls.tokens import token_generate, token_hash


@transaction.atomic
def device_register(
    *, name: str, phone_number: str, bitrix24_user_id: int, country: str
) -> tuple[Device, str]:
    """Registers a bridge device and returns it with its token, which is never stored in clear."""
    token = token_generate()
    device = Device.objects.create(
        name=name,
        phone_number=phone_to_e164(phone_number, country=country),
        bitrix24_user_id=bitrix24_user_id,
        token_hash=token_hash(token),
        token_hint=token[:10],
    )
    return device, token


def device_rotate_token(*, device: Device) -> str:
    """Replaces the device's token (the old one stops working at once) and returns the new one."""
    token = token_generate()
    Device.objects.filter(pk=device.pk).update(
        token_hash=token_hash(token), token_hint=token[:10], revoked_at=None
    )
    device.refresh_from_db()
    return token


def device_revoke(*, device: Device) -> None:
    Device.objects.filter(pk=device.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    device.refresh_from_db()


def device_mark_seen(*, device_id: int, app_version: str, seen_at: str | None = None) -> int:
    """Records a sign of life from the device; returns the number of devices updated (0 or 1)."""
    return Device.objects.filter(pk=device_id).update(
        last_seen_at=seen_at or timezone.now(), app_version=app_version
    )


SUPPORT_GROUP = "Support"
# What support staff may look at (read-only) in a tenant's admin.
SUPPORT_VIEW_MODELS = [("calls", "device")]


def support_group_ensure() -> None:
    """The view-only "Support" group exists with rights on every audit model."""
    from django.contrib.auth.models import Group, Permission

    group, _ = Group.objects.get_or_create(name=SUPPORT_GROUP)
    codenames = [f"view_{model}" for _, model in SUPPORT_VIEW_MODELS]
    permissions = Permission.objects.filter(
        content_type__app_label__in={app for app, _ in SUPPORT_VIEW_MODELS},
        codename__in=codenames,
    )
    group.permissions.set(permissions)
