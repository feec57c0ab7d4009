"""SMS through the agents' SIMs: a message to send becomes a `send_sms` command for one phone;
the bridge's SMS events move it on (sent, delivered, failed) or bring a text the phone received.

Every change that Bitrix24 should hear of (the provider's status, the timeline comment of a
scenario's SMS, a received text) marks the message's follow-up due, in the same transaction;
sms.sync does it, queued at commit and found again by the dispatcher if that message is lost.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext, gettext_noop

from calls.models import Device
from commands.models import Command
from commands.services import command_create, on_command_closed
from common.phones import InvalidPhoneNumber, phone_sms_problem, phone_to_e164
from sms.models import SmsEvent, SmsMessage, SmsSettings
from tenants.context import tenant_country, tenant_timezone
from tenants.fanout import task_queue
from tenants.wake import tenant_wake

logger = logging.getLogger(__name__)

MAX_TEXT = 1600
# A follow-up whose task message was lost is taken up by the dispatcher after this.
SYNC_LEASE = timedelta(seconds=30)
SENT = "sms.sent"
DELIVERED = "sms.delivered"
FAILED = "sms.failed"
RECEIVED = "sms.received"
EVENT_TYPES = (SENT, DELIVERED, FAILED, RECEIVED)
# An event moves a message forward only: a `sent` that arrives after `delivered` (the phone's
# queue replayed out of order) is recorded and changes nothing.
_RANK = {
    SmsMessage.Status.QUEUED: 0,
    SmsMessage.Status.SENT: 1,
    SmsMessage.Status.DELIVERED: 2,
    SmsMessage.Status.FAILED: 2,
}
_TO_STATUS = {
    SENT: SmsMessage.Status.SENT,
    DELIVERED: SmsMessage.Status.DELIVERED,
    FAILED: SmsMessage.Status.FAILED,
}
# Stored in English (the admin shows them in the reader's language).
_BY_COMMAND = {
    Command.Status.EXPIRED: gettext_noop("the phone did not take the SMS within 24 hours"),
    Command.Status.REJECTED: gettext_noop("the agent declined to send it"),
    Command.Status.FAILED: gettext_noop("the phone could not send it"),
}


class SmsEventConflict(Exception):
    """The event_id was already used for a different event."""


class SmsNotFound(Exception):
    """An sms_id this device was never given."""


@dataclass(frozen=True)
class SmsEventFacts:
    event_id: str
    type: str
    occurred_at: datetime
    sms_id: str = ""
    phone_number: str = ""
    text: str = ""
    error: str = ""


@dataclass(frozen=True)
class SmsReceipt:
    status: str  # "accepted" | "duplicate"
    sms: SmsMessage


def sms_settings_get() -> SmsSettings:
    settings, _ = SmsSettings.objects.get_or_create(singleton=1)
    return settings


def sms_resource(sms: SmsMessage) -> dict[str, Any]:
    return {
        "sms_id": sms.sms_id,
        "direction": sms.direction,
        "status": sms.status,
        "phone_number": sms.phone_number,
    }


# --- Sending ------------------------------------------------------------------------------------


def sms_send(
    *,
    device: Device,
    phone_number: str,
    text: str,
    source: str,
    intent_key: str,
    b24_message_id: str = "",
    b24_user_id: int | None = None,
    entity: tuple[str, int] | None = None,
    call_id: int | None = None,
) -> SmsMessage:
    """The message and its `send_sms` command for `device`, once per `intent_key` (the same
    intent again finds the first message)."""

    def make() -> SmsMessage:
        sms = _outgoing(
            phone_number=phone_number,
            text=text,
            source=source,
            intent_key=intent_key,
            b24_message_id=b24_message_id,
            b24_user_id=b24_user_id,
            entity=entity,
            device=device,
            status=SmsMessage.Status.QUEUED,
            call_id=call_id,
        )
        sms.command = command_create(
            device=device,
            type=Command.Type.SEND_SMS,
            phone_number=phone_number,
            payload={"sms_id": sms.sms_id, "text": sms.text},
        )
        sms.save(update_fields=["command"])
        return sms

    return _outgoing_once(intent_key, make)


def sms_failed_unsent(
    *,
    phone_number: str,
    text: str,
    source: str,
    intent_key: str,
    error: str,
    b24_message_id: str = "",
    b24_user_id: int | None = None,
    entity: tuple[str, int] | None = None,
) -> SmsMessage:
    """A message no phone could take (no line for it): recorded as failed, and Bitrix24 told."""

    def make() -> SmsMessage:
        sms = _outgoing(
            phone_number=phone_number,
            text=text,
            source=source,
            intent_key=intent_key,
            b24_message_id=b24_message_id,
            b24_user_id=b24_user_id,
            entity=entity,
            status=SmsMessage.Status.FAILED,
            error=error[:500],
            failed_at=timezone.now(),
        )
        sync_soon(sms)
        return sms

    return _outgoing_once(intent_key, make)


def _outgoing_once(intent_key: str, make: Callable[[], SmsMessage]) -> SmsMessage:
    """The intent's message: found, or made by `make` in a transaction; a twin made at the
    same moment (an event delivered twice) is found instead."""
    existing = SmsMessage.objects.filter(intent_key=intent_key).first()
    if existing is not None:
        return existing
    try:
        with transaction.atomic():
            return make()
    except IntegrityError:
        return SmsMessage.objects.get(intent_key=intent_key)


def _outgoing(
    *,
    phone_number: str,
    text: str,
    source: str,
    intent_key: str,
    b24_message_id: str,
    b24_user_id: int | None,
    entity: tuple[str, int] | None,
    **fields: Any,
) -> SmsMessage:
    return SmsMessage.objects.create(
        direction=SmsMessage.Direction.OUTGOING,
        source=source,
        phone_number=phone_number[:32],
        text=text[:MAX_TEXT],
        intent_key=intent_key,
        b24_message_id=b24_message_id,
        b24_user_id=b24_user_id,
        crm_entity_type=entity[0] if entity else "",
        crm_entity_id=entity[1] if entity else None,
        **fields,
    )


@on_command_closed(Command.Type.SEND_SMS)
def _sms_command_closed(command: Command) -> None:
    """In the closing transaction: a command the phone refused or never took fails its SMS."""
    if command.status == Command.Status.DONE:
        return  # handed to the radio: the bridge's sms.sent / sms.failed tell the rest
    sms = SmsMessage.objects.select_for_update().filter(command=command).first()
    if sms is None or sms.status != SmsMessage.Status.QUEUED:
        return
    why = _BY_COMMAND[Command.Status(command.status)]
    sms.status = SmsMessage.Status.FAILED
    sms.error = (f"{why}: {command.error}" if command.error else why)[:500]
    sms.failed_at = timezone.now()
    sms.save(update_fields=["status", "error", "failed_at"])
    sync_soon(sms)


def sync_soon(sms: SmsMessage) -> None:
    """Marks the message's Bitrix24 follow-up due; queued once this transaction commits."""
    sms.sync_due_at = timezone.now() + SYNC_LEASE
    SmsMessage.objects.filter(pk=sms.pk).update(sync_due_at=sms.sync_due_at)
    tenant_wake(at=sms.sync_due_at)
    pk = sms.pk
    transaction.on_commit(lambda: sync_queue(pk))


def sync_queue(sms_pk: int) -> None:
    from sms.tasks import sms_sync_task  # noqa: PLC0415 — Celery's loop: the task calls back here

    task_queue(sms_sync_task, sms_pk, what=f"the Bitrix24 follow-up of SMS {sms_pk}")


# --- The bridge's SMS events --------------------------------------------------------------------


def _body(facts: SmsEventFacts) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": facts.event_id,
        "type": facts.type,
        "occurred_at": facts.occurred_at.isoformat(),
    }
    optional = {
        "sms_id": facts.sms_id,
        "phone_number": facts.phone_number,
        "text": facts.text,
        "error": facts.error,
    }
    body.update({name: value for name, value in optional.items() if value})
    return body


def _hash(body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _replay(*, device: Device, event_id: str, digest: str) -> SmsReceipt | None:
    stored = SmsEvent.objects.select_related("sms").filter(event_id=event_id).first()
    if stored is None:
        return None
    if stored.device_id != device.pk or stored.body_hash != digest:
        raise SmsEventConflict(gettext("This event_id was already used for a different event."))
    return SmsReceipt("duplicate", stored.sms)


def sms_event_receive(*, device: Device, facts: SmsEventFacts) -> SmsReceipt:
    """Records one validated SMS event of the device: idempotent by event_id, applied only
    if it moves its message forward. Raises SmsNotFound for another device's sms_id."""
    body = _body(facts)
    digest = _hash(body)
    receipt = _replay(device=device, event_id=facts.event_id, digest=digest)
    if receipt is not None:
        return receipt
    try:
        with transaction.atomic():
            if facts.type == RECEIVED:
                sms, applied = _received(device=device, facts=facts), True
            else:
                sms, applied = _status_apply(device=device, facts=facts)
            SmsEvent.objects.create(
                event_id=facts.event_id,
                device=device,
                sms=sms,
                type=facts.type,
                occurred_at=facts.occurred_at,
                body=body,
                body_hash=digest,
                applied=applied,
            )
    except IntegrityError:
        # A concurrent twin committed first: the stored event answers.
        receipt = _replay(device=device, event_id=facts.event_id, digest=digest)
        if receipt is None:
            raise
        return receipt
    return SmsReceipt("accepted", sms)


def _status_apply(*, device: Device, facts: SmsEventFacts) -> tuple[SmsMessage, bool]:
    sms = (
        SmsMessage.objects.select_for_update()
        .filter(sms_id=facts.sms_id, device=device, direction=SmsMessage.Direction.OUTGOING)
        .first()
    )
    if sms is None:
        raise SmsNotFound(facts.sms_id)
    status = _TO_STATUS[facts.type]
    if _RANK[SmsMessage.Status(status)] <= _RANK[SmsMessage.Status(sms.status)]:
        return sms, False
    sms.status = status
    fields = ["status"]
    if status == SmsMessage.Status.SENT:
        sms.sent_at = facts.occurred_at
        fields.append("sent_at")
    elif status == SmsMessage.Status.DELIVERED:
        sms.delivered_at = facts.occurred_at
        sms.sent_at = sms.sent_at or facts.occurred_at
        fields += ["delivered_at", "sent_at"]
    else:
        sms.failed_at = facts.occurred_at
        sms.error = (facts.error or gettext_noop("the phone reported the SMS as failed"))[:500]
        fields += ["failed_at", "error"]
    sms.save(update_fields=fields)
    sync_soon(sms)
    return sms, True


def _received(*, device: Device, facts: SmsEventFacts) -> SmsMessage:
    try:
        number = phone_to_e164(facts.phone_number, country=tenant_country())
    except InvalidPhoneNumber:
        number = facts.phone_number  # an alphanumeric sender ("BANK"): kept as shown
    sms = SmsMessage.objects.create(
        direction=SmsMessage.Direction.INCOMING,
        source=SmsMessage.Source.PHONE,
        device=device,
        phone_number=number[:32],
        text=facts.text[:MAX_TEXT],
        status=SmsMessage.Status.RECEIVED,
        received_at=facts.occurred_at,
        b24_user_id=device.bitrix24_user_id,
    )
    sync_soon(sms)
    return sms


def sms_guard_problem(*, phone_number: str, intent_key: str = "") -> str | None:
    """Why a scenario must not text this number now (the tenant's guards), or None."""
    if not phone_number:
        return "The number is hidden: no SMS."
    settings = sms_settings_get()
    if settings.mobile_only:
        problem = phone_sms_problem(phone_number)
        if problem:
            return f"No SMS to {phone_number}: {problem}."
    if settings.once_per_hours:
        since = timezone.now() - timedelta(hours=settings.once_per_hours)
        last = sms_last_to(
            phone_number=phone_number,
            source=SmsMessage.Source.SCENARIO,
            since=since,
            exclude_intent=intent_key,
        )
        if last is not None:
            when = last.created_at.astimezone(ZoneInfo(tenant_timezone()))
            return (
                f"{phone_number} was texted at {when:%Y-%m-%d %H:%M}: at most one SMS per "
                f"{settings.once_per_hours} h."
            )
    return None


def sms_last_to(
    *, phone_number: str, source: str, since: datetime, exclude_intent: str = ""
) -> SmsMessage | None:
    """The last message of `source` to the number since `since` that did not fail."""
    recent = SmsMessage.objects.filter(
        phone_number=phone_number,
        source=source,
        direction=SmsMessage.Direction.OUTGOING,
        created_at__gte=since,
    ).exclude(status=SmsMessage.Status.FAILED)
    if exclude_intent:
        recent = recent.exclude(intent_key=exclude_intent)
    return recent.order_by("-created_at").first()
