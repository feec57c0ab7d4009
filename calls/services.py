from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import Group, Permission
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext

from calls.models import (
    Call,
    CallNote,
    CallRecording,
    CallSettings,
    CallTransition,
    Device,
)
from calls.recordings import recording_attach_plan
from calls.selectors import (
    call_settings_forget,
)
from calls.sql import call_get
from calls.tokens import token_generate, token_hash
from common.phones import phone_to_e164
from crm.models import Bitrix24User
from scenarios.outbox import run_plan

logger = logging.getLogger(__name__)

# --- Devices ------------------------------------------------------------------------------


def device_user_problem(*, user_id: int) -> str | None:
    """Why a phone cannot be given to this Bitrix24 user: unknown to the portal, or
    deactivated there. None when the user is fine, or the directory was never synced (nothing
    to check against yet)."""
    if user_id < 1:
        return gettext("A Bitrix24 user ID is a positive number.")
    if not Bitrix24User.objects.exists():
        return None
    user = Bitrix24User.objects.filter(pk=user_id).first()
    if user is None:
        return gettext(
            "Bitrix24 has no user #%(id)s (the directory was synced from the portal)."
        ) % {"id": user_id}
    if not user.active:
        return gettext("%(name)s (#%(id)s) is deactivated in Bitrix24.") % {
            "name": user.name,
            "id": user_id,
        }
    return None


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
    device.refresh_from_db()
    device.token_hash, device.token_hint, device.revoked_at = token_hash(token), token[:10], None
    # save(), not update(): whoever follows devices (commands.lines) hears post_save.
    device.save(update_fields=["token_hash", "token_hint", "revoked_at"])
    return token


def device_revoke(*, device: Device) -> None:
    device.refresh_from_db()
    if device.revoked_at is None:
        device.revoked_at = timezone.now()
        device.save(update_fields=["revoked_at"])


def device_mark_seen(*, device_id: int, app_version: str, seen_at: datetime | None = None) -> int:
    """Records a sign of life from the device; returns the number of devices updated (0 or 1)."""
    return Device.objects.filter(pk=device_id).update(
        last_seen_at=seen_at or timezone.now(), app_version=app_version
    )


SEEN_RESOLUTION = timedelta(seconds=60)


def device_touch(*, device: Device) -> None:
    """Any authenticated request is a sign of life; written at most once a minute per device."""
    now = timezone.now()
    if device.last_seen_at is None or device.last_seen_at < now - SEEN_RESOLUTION:
        Device.objects.filter(pk=device.pk).update(last_seen_at=now)
        device.last_seen_at = now


# --- Tenant settings ------------------------------------------------------------------------


def call_settings_ensure() -> CallSettings:
    settings, _ = CallSettings.objects.get_or_create(singleton=1)
    call_settings_forget()
    return settings


# --- Bridge events ------------------------------------------------------------------------


# --- Bitrix24 lifecycle bookkeeping (written by the outbox handlers) --------------------------


def call_audit_note(
    *, call: Call, description: str, changes: dict[str, Any] | None = None
) -> CallTransition:
    """Something SIMtrix did in Bitrix24 for the call, for the audit trail (e.g. a transfer
    that made the answering agent the lead's responsible)."""
    return CallTransition.objects.create(
        call=call,
        source=CallTransition.Source.BITRIX24,
        from_status=call.status,
        to_status=call.status,
        changes=changes or {},
        description=description[:300],
    )


def call_b24_registered(
    *, call: Call, b24_call_id: str, user_id: int, entity_type: str, entity_id: int | None
) -> bool:
    """Keeps the Bitrix24 call id; the first registration wins (returns False if not first)."""
    now = timezone.now()
    registered = {
        "b24_call_id": b24_call_id,
        "b24_user_id": user_id,
        "b24_entity_type": entity_type,
        "b24_entity_id": entity_id,
        "b24_registered_at": now,
    }
    with transaction.atomic():
        updated = Call.objects.filter(pk=call.pk, b24_call_id="").update(**registered)
        if updated:
            binding = f"{entity_type} {entity_id}" if entity_type else "no CRM entity"
            CallTransition.objects.create(
                call=call,
                source=CallTransition.Source.BITRIX24,
                from_status=call.status,
                to_status=call.status,
                changes={"b24_call_id": ["", b24_call_id]},
                description=f"Registered in Bitrix24 as {b24_call_id} (bound to {binding})",
            )
    if updated:
        for name, value in registered.items():
            setattr(call, name, value)
    else:
        call.refresh_from_db()  # whoever registered it first: their id
    return bool(updated)


def call_b24_logged(
    *,
    call: Call,
    mode: str,
    user_id: int,
    activity_id: int | None,
    note: str = "",
    entity_type: str = "",
    entity_id: int | None = None,
) -> bool:
    """Marks the call as finished/logged in Bitrix24 (once) and lets a waiting recording go.

    Upload and finish may happen in either order: both take the call's row lock, so whichever
    commits second sees the other and the attachment is planned exactly when both exist.
    """

    now = timezone.now()
    with transaction.atomic():
        locked = call_get(pk=call.pk, lock=True)
        # The caller's instance as the row is now (read under the lock: no second read).
        for field in Call._meta.concrete_fields:
            setattr(call, field.attname, getattr(locked, field.attname))
        if locked.b24_finished_at is not None:
            return False
        fields: dict[str, Any] = {
            "b24_finished_at": now,
            "b24_log_mode": mode,
            "b24_activity_id": activity_id,
            "b24_log_note": note,
            "b24_user_id": locked.b24_user_id or user_id,
        }
        if entity_type and not locked.b24_entity_type:
            fields.update(b24_entity_type=entity_type, b24_entity_id=entity_id)
        Call.objects.filter(pk=call.pk).update(**fields)
        what = "Finished in Bitrix24" if mode == Call.LogMode.TELEPHONY else "Logged as activity"
        CallTransition.objects.create(
            call=call,
            source=CallTransition.Source.BITRIX24,
            from_status=locked.status,
            to_status=locked.status,
            changes={"b24_log_mode": ["", mode], "b24_activity_id": [None, activity_id]},
            description=f"{what} (activity {activity_id or '-'}){': ' + note if note else ''}"[
                :300
            ],
        )
        recording = CallRecording.objects.filter(call_id=call.pk, deleted_at__isnull=True).first()
        if recording is not None and recording.attached_version != recording.version:
            recording_attach_plan(call_id=call.pk, version=recording.version, run_plan=run_plan)
    for name, value in fields.items():
        setattr(call, name, value)
    return True


# --- Notes --------------------------------------------------------------------------------


def call_note_add(*, call: Call, text: str) -> CallNote:
    return CallNote.objects.create(call=call, text=text)


def call_notes_mark_synced(*, note_ids: list[int]) -> int:
    """For the post-call sync: these notes have reached Bitrix24."""
    return CallNote.objects.filter(pk__in=note_ids, crm_synced_at__isnull=True).update(
        crm_synced_at=timezone.now()
    )


# --- Recordings ---------------------------------------------------------------------------


# --- Support staff --------------------------------------------------------------------------

SUPPORT_GROUP = "Support"
# What support staff may look at (read-only) in a tenant's admin.
SUPPORT_VIEW_MODELS = [
    ("calls", "device"),
    ("calls", "call"),
    ("calls", "callevent"),
    ("calls", "calltransition"),
    ("calls", "callnote"),
    ("calls", "callrecording"),
    ("calls", "callsettings"),
    ("scenarios", "actionrun"),
    ("scenarios", "routingrule"),
    ("scenarios", "routingcondition"),
    ("scenarios", "routingsettings"),
    ("crm", "requestlog"),
    ("crm", "inboundevent"),
    ("commands", "command"),
    ("commands", "dial"),
    ("sms", "smsmessage"),
    ("sms", "smsevent"),
    ("sms", "smssettings"),
    # The reports (reports.models: a page each, no table).
    ("reports", "overviewreport"),
    ("reports", "missedhoursreport"),
    ("reports", "notreturnedreport"),
    ("reports", "callbackreport"),
    ("reports", "teamreport"),
    # What the alerts found, with its history (their settings are the admins').
    ("alerts", "incident"),
    ("alerts", "incidentevent"),
]


def support_group_ensure() -> None:
    """The view-only "Support" group exists with rights on every audit model."""

    group, _ = Group.objects.get_or_create(name=SUPPORT_GROUP)
    wanted = Q(pk__in=[])
    for app_label, model in SUPPORT_VIEW_MODELS:
        wanted |= Q(content_type__app_label=app_label, codename=f"view_{model}")
    group.permissions.set(Permission.objects.filter(wanted))
