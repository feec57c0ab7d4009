"""Click-to-call: a number clicked in Bitrix24 is dialled by the user's own phone.

ONEXTERNALCALLSTART arrives after Bitrix24 registered the outgoing call itself (REFERENCE 4.7,
pitfall 12): its CALL_ID is the call's, and registering again would make a second one. So the
call is made here, already registered: the phone picked (commands.selection) gets a `dial`
command whose `call_id` the bridge uses for the call it places, and the call's own handlers then
finish the Bitrix24 call with that CALL_ID (calls.handlers never registers a call that has one).
The outgoing scenario runs as for any call once the bridge reports it.

A click that cannot connect (no usable phone, the command expired, the agent declined it, the
phone could not dial) finishes the pre-registered call as not connected and tells the user why
in a Bitrix24 notification; the call page says so too.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from calls.models import Call, CallEvent, CallTransition
from calls.selectors import caller_lookup
from commands.models import Command, Dial
from commands.selection import line_choose
from commands.services import command_create, commands_expire_due, on_command_closed
from common.phones import InvalidPhoneNumber, phone_to_e164
from crm.domain import CrmObject
from crm.errors import Bitrix24Error
from crm.events import event_handler
from crm.mapping import domain_type
from crm.models import InboundEvent
from crm.services import crm_call_finish, crm_notify
from tenants.connection import tenant_connection
from tenants.context import tenant_country, tenant_language_active
from tenants.fanout import task_queue
from tenants.wake import tenant_wake, visit_hook

# A failed dial's close is retried with this backoff; the dispatcher takes it up if its task
# message is lost.
CLOSE_LEASE = timedelta(seconds=30)
CLOSE_MAX_ATTEMPTS = 10
# A dial the phone acknowledged, but whose call it never reported, is closed after this.
REPORT_WITHIN = timedelta(minutes=15)
# A click taken up later than this (a worker backlog, an outage) is not dialled: the user has
# long stopped waiting at the call page, and a phone ringing out of the blue minutes later
# helps nobody. The dial command's own TTL.
CLICK_STALE_AFTER = timedelta(seconds=60)
# What the call records when a click did not connect, and what Bitrix24's call then says.
_OUTCOME = {
    Dial.Status.NO_PHONE: Call.Outcome.FAILED,
    Dial.Status.EXPIRED: Call.Outcome.FAILED,
    Dial.Status.FAILED: Call.Outcome.FAILED,
    Dial.Status.REJECTED: Call.Outcome.CANCELLED,
}
# Stored in English (the admin's audit); the user's notification says them in the tenant's
# language (_message).
_BY_COMMAND = {
    Command.Status.EXPIRED: (
        Dial.Status.EXPIRED,
        gettext_noop("the phone did not pick up the call in time"),
    ),
    Command.Status.REJECTED: (
        Dial.Status.REJECTED,
        gettext_noop("the agent declined the call on the phone"),
    ),
    Command.Status.FAILED: (Dial.Status.FAILED, gettext_noop("the phone could not dial")),
}
_NEVER_REPORTED = gettext_noop("the phone dialled but never reported the call")


def _data(event: InboundEvent, name: str) -> str:
    return str(event.data.get(name) or "").strip()


@event_handler("ONEXTERNALCALLSTART")
def external_call_start(event: InboundEvent) -> dict[str, Any]:
    b24_call_id = _data(event, "CALL_ID")
    try:
        user_id = int(_data(event, "USER_ID"))
    except ValueError:
        return {"skipped": "no USER_ID"}
    if not b24_call_id:
        return {"skipped": "no CALL_ID"}
    entity_id = _data(event, "CRM_ENTITY_ID")
    # "CONTACT" → "contact", as every call stores it; a type SIMtrix does not log to, none.
    entity_type = domain_type(_data(event, "CRM_ENTITY_TYPE")) or ""
    late = timezone.now() - event.received_at
    dial = dial_start(
        b24_call_id=b24_call_id[:100],
        late_s=int(late.total_seconds()) if late > CLICK_STALE_AFTER else None,
        user_id=user_id,
        phone=_data(event, "PHONE_NUMBER_INTERNATIONAL") or _data(event, "PHONE_NUMBER"),
        line_number=_data(event, "LINE_NUMBER")[:64],
        entity_type=entity_type,
        entity_id=int(entity_id)
        if entity_type and entity_id.isdigit() and int(entity_id) > 0
        else None,
    )
    return {"dial": dial.pk, "status": dial.status, "device": dial.device_id}


def dial_start(
    *,
    b24_call_id: str,
    user_id: int,
    phone: str,
    line_number: str = "",
    entity_type: str = "",
    entity_id: int | None = None,
    late_s: int | None = None,
) -> Dial:
    """Picks the phone and sends it the dial, once per Bitrix24 call (an event delivered twice
    finds its dial). A click `late_s` seconds old is closed as expired instead."""
    existing = Dial.objects.filter(b24_call_id=b24_call_id).first()
    if existing is not None:
        return existing
    try:
        return _dial_make(
            b24_call_id=b24_call_id,
            user_id=user_id,
            phone=phone,
            line_number=line_number,
            entity_type=entity_type,
            entity_id=entity_id,
            late_s=late_s,
        )
    except IntegrityError:
        # The same event delivered twice at once: the other delivery made the dial.
        return Dial.objects.get(b24_call_id=b24_call_id)


def _dial_make(
    *,
    b24_call_id: str,
    user_id: int,
    phone: str,
    line_number: str,
    entity_type: str,
    entity_id: int | None,
    late_s: int | None,
) -> Dial:
    try:
        e164 = phone_to_e164(phone, country=tenant_country())
    except InvalidPhoneNumber:
        e164 = ""
    choice = (
        line_choose(user_id=user_id, phone_e164=e164, line_number=line_number)
        if e164 and late_s is None
        else None
    )
    # Who the number is, for the phone's screen (before the dial's transaction, whose savepoint
    # a twin delivery's unique b24_call_id rolls back: Bitrix24 may be slow).
    crm: CrmObject = (
        caller_lookup(phone_number=e164, budget_s=None)
        if choice and choice.device
        else {"status": "not_found"}
    )
    with transaction.atomic():
        dial = Dial(
            b24_call_id=b24_call_id,
            b24_user_id=user_id,
            phone_number=e164 or phone[:32],
            line_number=line_number,
            crm_entity_type=entity_type,
            crm_entity_id=entity_id,
        )
        if late_s is not None:
            dial.status = Dial.Status.EXPIRED
            dial.failure = f"the click reached SIMtrix {late_s} s late, too late to dial"
            dial.save()
            _close_soon(dial)
            return dial
        if choice is None or choice.device is None:
            dial.status = Dial.Status.NO_PHONE
            dial.line_reason = (choice.reason if choice else "")[:300]
            dial.failure = (
                f"no usable phone: {choice.reason}"[:300]
                if choice is not None
                else f"the number {phone!r} cannot be dialled"
            )
            dial.save()
            _close_soon(dial)
            return dial
        device = choice.device
        call_id = f"b24-{uuid.uuid4().hex}"
        now = timezone.now()
        call = Call.objects.create(
            device=device,
            call_id=call_id,
            direction=Call.Direction.OUTGOING,
            phone_number=e164,
            phone_raw=e164,
            started_at=now,
            crm=crm,
            crm_status=crm.get("status", ""),
            b24_user_id=user_id,
            b24_call_id=b24_call_id,
            b24_entity_type=entity_type,
            b24_entity_id=entity_id,
            b24_registered_at=now,
            b24_log_mode=Call.LogMode.TELEPHONY,
            b24_log_note="Registered by Bitrix24 when the user clicked the number "
            "(click-to-call): finished with its CALL_ID, never registered again.",
        )
        CallTransition.objects.create(
            call=call,
            source=CallTransition.Source.BITRIX24,
            to_status=call.status,
            changes={"line_rule": [None, choice.rule], "device": [None, device.pk]},
            description=f"Click-to-call from Bitrix24 user {user_id}: dialled by "
            f"{device.name} because {choice.reason}"[:300],
        )
        command = command_create(
            device=device,
            type=Command.Type.DIAL,
            phone_number=e164,
            payload={"call_id": call_id, "crm": crm},
        )
        dial.device, dial.call, dial.command = device, call, command
        dial.line_reason = choice.reason[:300]
        dial.save()
    return dial


@on_command_closed(Command.Type.DIAL)
def _dial_command_closed(command: Command) -> None:
    """In the closing transaction: the phone dialled, or the click did not connect."""
    dial = Dial.objects.select_for_update().filter(command=command).first()
    if dial is None or dial.status != Dial.Status.SENT:
        return
    if command.status == Command.Status.DONE:
        dial.status = Dial.Status.DIALLED
        # The phone reports the call it placed; if it never does, the dispatcher closes it.
        dial.next_attempt_at = timezone.now() + REPORT_WITHIN
        dial.save(update_fields=["status", "next_attempt_at", "updated_at"])
        tenant_wake(at=dial.next_attempt_at)
        return
    dial.status, why = _BY_COMMAND[Command.Status(command.status)]
    dial.failure = f"{why}: {command.error}"[:300] if command.error else why
    dial.save(update_fields=["status", "failure", "updated_at"])
    _close_soon(dial)


def _reported(dial: Dial) -> bool:
    """The phone reported the dial's call: the call's own handlers finish it in Bitrix24."""
    return dial.call_id is not None and CallEvent.objects.filter(call_id=dial.call_id).exists()


def _closed_as_reported(dial: Dial, *, at: datetime) -> None:
    dial.closed_at, dial.next_attempt_at = at, None
    dial.save(update_fields=["closed_at", "next_attempt_at"])


def _close_soon(dial: Dial) -> None:
    """Queues the close (finish in Bitrix24, notify) once this transaction commits."""
    now = timezone.now()
    if _reported(dial):
        # After all (an acknowledgement lost, a late one): it went as its events say.
        _closed_as_reported(dial, at=now)
        return
    dial.next_attempt_at = now + CLOSE_LEASE  # the dispatcher's, if the task is lost
    dial.save(update_fields=["next_attempt_at"])
    tenant_wake(at=dial.next_attempt_at)
    _call_ended(dial, at=now)
    pk = dial.pk
    transaction.on_commit(lambda: _queue_close(pk))


def _call_ended(dial: Dial, *, at: datetime) -> None:
    if dial.call_id is None:
        return
    outcome = _OUTCOME[Dial.Status(dial.status)]
    call = Call.objects.select_for_update().get(pk=dial.call_id)
    before = call.status
    Call.objects.filter(pk=call.pk).update(
        status=Call.Status.ENDED, outcome=outcome, ended_at=at, duration_seconds=0
    )
    CallTransition.objects.create(
        call=call,
        source=CallTransition.Source.BITRIX24,
        from_status=before,
        to_status=Call.Status.ENDED,
        changes={"outcome": [call.outcome or None, outcome]},
        description=f"Click-to-call not connected: {dial.failure}"[:300],
    )


def _queue_close(dial_pk: int) -> None:
    from commands.tasks import dial_close_task  # noqa: PLC0415 — Celery's loop: the task calls back here

    task_queue(dial_close_task, dial_pk, what=f"the close of dial {dial_pk}")


def _message(dial: Dial) -> str:
    """The user's notification, in the tenant's language (a fixed reason too; a reason with
    details stays as recorded)."""
    return _("SIMtrix could not call %(number)s: %(why)s.") % {
        "number": dial.phone_number,
        "why": _(dial.failure) if dial.failure else "",
    }


def dial_close(dial_pk: int) -> str:
    """Finishes a failed click's Bitrix24 call (not connected) and tells the user why; once.

    Claimed in a short transaction (the lease keeps the dispatcher off it), Bitrix24 asked
    with no row locked, the outcome written in another: a slow portal holds no lock that the
    phone's events for the same call would wait on. Both requests carry intent keys, so a close
    run twice (a task delivered twice) reaches Bitrix24 once."""
    with transaction.atomic():
        dial = (
            Dial.objects.select_for_update(skip_locked=True)
            .filter(pk=dial_pk, closed_at__isnull=True, status__in=Dial.FAILURES)
            .first()
        )
        if dial is None:
            return "nothing to close"
        if _reported(dial):
            # The phone did place the call after all (its acknowledgement was lost or late):
            # the call's own handlers finish it in Bitrix24, with what really happened.
            _closed_as_reported(dial, at=timezone.now())
            return "reported"
        dial.attempts += 1
        dial.next_attempt_at = timezone.now() + CLOSE_LEASE
        dial.save(update_fields=["attempts", "next_attempt_at"])
        tenant_wake(at=dial.next_attempt_at)
    try:
        with tenant_language_active():
            _close_in_bitrix24(dial)
    except Bitrix24Error as exc:
        return _close_failed(dial, exc)
    now = timezone.now()
    dial.closed_at, dial.next_attempt_at, dial.last_error = now, None, ""
    with transaction.atomic():
        dial.save(update_fields=["last_error", "closed_at", "next_attempt_at"])
        if dial.call_id is not None:
            _detach(dial, call_pk=dial.call_id)
    return "closed"


def _close_in_bitrix24(dial: Dial) -> None:
    crm_call_finish(
        intent_key=f"dial:{tenant_connection.schema_name}:{dial.pk}:finish",
        b24_call_id=dial.b24_call_id,
        user_id=dial.b24_user_id,
        duration_s=0,
        outcome=_OUTCOME[Dial.Status(dial.status)],
        failed_reason=dial.failure[:200],
    )
    crm_notify(
        user_id=dial.b24_user_id,
        message=_message(dial),
        intent_key=f"dial:{tenant_connection.schema_name}:{dial.pk}:notify",
    )


def _close_failed(dial: Dial, exc: Bitrix24Error) -> str:
    dial.last_error = exc.display()[:300]
    if exc.transient and dial.attempts < CLOSE_MAX_ATTEMPTS:
        delay = min(600, 10 * 2 ** (dial.attempts - 1))
        dial.next_attempt_at = timezone.now() + timedelta(seconds=delay)
        with transaction.atomic():
            dial.save(update_fields=["last_error", "next_attempt_at"])
            tenant_wake(at=dial.next_attempt_at)
        return "retry"
    dial.closed_at, dial.next_attempt_at = timezone.now(), None
    dial.save(update_fields=["last_error", "closed_at", "next_attempt_at"])
    return "failed"


def _detach(dial: Dial, *, call_pk: int) -> None:
    """The call no longer stands for Bitrix24's call, which is finished as not connected. If
    the phone did place it after all (its acknowledgement lost) and reports it late, it is
    registered and logged as a call of its own, as any call the phone reports."""
    Call.objects.filter(pk=call_pk, b24_call_id=dial.b24_call_id).update(
        b24_call_id="",
        b24_registered_at=None,
        b24_finished_at=None,
        b24_log_mode="",
        b24_log_note=f"Its click-to-call was finished in Bitrix24 as not connected (CALL_ID "
        f"{dial.b24_call_id}); reported by the phone after all, it is logged as a call of its "
        "own.",
    )


@visit_hook("commands")
def commands_due(now: datetime) -> datetime | None:
    """The dispatcher's visit: expires what the phones never acknowledged, retries closes,
    gives up on dialled calls the phone never reported."""
    next_expiry = commands_expire_due(now)
    _unreported_close(now)
    due = list(
        Dial.objects.filter(
            closed_at__isnull=True, next_attempt_at__lte=now, status__in=Dial.FAILURES
        ).values_list("pk", flat=True)[:200]
    )
    if due:
        Dial.objects.filter(pk__in=due).update(next_attempt_at=now + CLOSE_LEASE)
        for pk in due:
            _queue_close(pk)
    next_close = (
        Dial.objects.filter(closed_at__isnull=True, next_attempt_at__isnull=False)
        .order_by("next_attempt_at")
        .values_list("next_attempt_at", flat=True)
        .first()
    )
    return min((at for at in (next_expiry, next_close) if at is not None), default=None)


def _unreported_close(now: datetime) -> None:
    """A dial acknowledged `done` whose call never came: not connected, as far as anyone knows."""
    with transaction.atomic():
        stale = list(
            Dial.objects.select_for_update(skip_locked=True).filter(
                status=Dial.Status.DIALLED, closed_at__isnull=True, next_attempt_at__lte=now
            )[:100]
        )
        for dial in stale:
            if _reported(dial):
                _closed_as_reported(dial, at=now)
                continue
            dial.status = Dial.Status.FAILED
            dial.failure = _NEVER_REPORTED
            dial.save(update_fields=["status", "failure", "updated_at"])
            _close_soon(dial)
