"""The Bitrix24 side of a call's lifecycle, executed as outbox runs (scenarios.outbox).

Each handler reloads what it needs, does one step through `crm/` in domain terms, and records the
result on the call. Handlers are idempotent per run: non-idempotent Bitrix24 calls carry
`run_intent_key(run)`, so a run re-executed after a worker died is not sent twice, and the call's
own columns (b24_call_id, b24_finished_at) make a second run for the same step a no-op. crm's
typed errors go through unchanged: the outbox retries the transient ones.
"""

from __future__ import annotations

import math
from typing import Any, cast
from zoneinfo import ZoneInfo

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from calls.audio import ConversionFailed
from calls.intake import call_crm_set
from calls.lifecycle import RESOLVED
from calls.models import Call, CallRecording
from calls.recordings import recording_attached, recording_bitrix24_file
from calls.selectors import caller_lookup_with_facts
from calls.services import call_b24_logged, call_b24_registered
from calls.sql import call_get
from crm.errors import Bitrix24AuthTypeDenied, Bitrix24TransientError
from crm.services import (
    Direction,
    crm_activity_log_call,
    crm_call_attach_record,
    crm_call_finish,
    crm_call_register,
    crm_call_show,
)
from scenarios.choices import InternalAction
from scenarios.models import ActionRun
from scenarios.outbox import ActionSkipped, PermanentActionError, action_handler, run_intent_key
from tenants.connection import tenant_connection
from tenants.context import tenant_timezone

# Stored on the call in English (b24_log_note); the admin shows it in the reader's language.
TELEPHONY_REFUSED_NOTE = gettext_noop(
    "The portal refused telephony.externalCall.register/finish for webhook authentication "
    "(403 WRONG_AUTH_TYPE), so the call was logged as a CRM call activity instead: no call "
    "statistics, no card pop-up, no recording attachment. To log calls as telephony calls, "
    "switch the tenant's Bitrix24 connection to the local OAuth application (Bitrix24 "
    "connection > Auth mode: Local OAuth application; install the app in Bitrix24 under "
    "Developer resources > Other > Local application, 'Uses only API', scopes crm, telephony, "
    "user, im, task)."
)


class CallIncomplete(Exception):
    """Direction or number is still unknown (a lost call.started): retried until it arrives."""


def _call(run: ActionRun) -> Call:
    return call_get(pk=run.call_id)


def _external_call_id(call: Call) -> str:
    # Unique per physical call and stable across retries; Bitrix24 merges calls that share
    # user, number and type within 30 minutes unless this differs (REFERENCE 7.1).
    return f"simtrix:{tenant_connection.schema_name}:{call.pk}"


def _entity(call: Call) -> tuple[str, int] | None:
    if call.b24_entity_type and call.b24_entity_id:
        return (call.b24_entity_type, call.b24_entity_id)
    entity = (call.crm or {}).get("entity") or None
    if entity and entity.get("type") and entity.get("id"):
        return (entity["type"], int(entity["id"]))
    return None


def _started_at(call: Call) -> Any:
    started = call.started_at or call.ended_at or timezone.now()
    # With the tenant's offset, so the portal shows the time the phone showed (REFERENCE 7.5).
    return timezone.localtime(started, ZoneInfo(tenant_timezone()))


def _require_whole_call(call: Call) -> None:
    if not call.direction or not call.phone_raw:
        raise CallIncomplete("direction or number unknown yet (waiting for call.started)")
    if not call.phone_number:
        raise ActionSkipped(
            f"the number {call.phone_raw!r} is hidden or unreadable: Bitrix24 cannot log it"
        )


def _lookup_if_needed(call: Call) -> None:
    if call.crm_status in RESOLVED:
        return
    crm, facts = caller_lookup_with_facts(phone_number=call.phone_number, budget_s=math.inf)
    if crm.get("status") not in RESOLVED:
        # A call's CRM binding is fixed at register (REFERENCE 7.16): wait rather than bind none.
        raise Bitrix24TransientError("the caller lookup did not complete", code="LOOKUP_PENDING")
    with transaction.atomic():
        # Locked: storing the caller may route the call (a round-robin turn is taken once).
        locked = call_get(pk=call.pk, lock=True)
        call_crm_set(call=locked, crm=crm, facts=facts)
    call.refresh_from_db()


def _register(
    call: Call, *, intent_key: str, show: bool, also_show: list[int] | None = None
) -> str:
    """Registers the call (once) and returns its Bitrix24 call id."""

    if call.b24_call_id:
        return call.b24_call_id
    _require_whole_call(call)
    _lookup_if_needed(call)
    user_id = call.device.bitrix24_user_id
    registered = crm_call_register(
        intent_key=intent_key,
        user_id=user_id,
        phone=call.phone_number,
        direction=cast(Direction, call.direction),  # known: _require_whole_call
        started_at=_started_at(call),
        line_number=call.device.phone_number,
        external_call_id=_external_call_id(call),
        entity=_entity(call),
        show=show,
        also_show=also_show or (),
    )
    entity_type, entity_id = registered.entity or ("", None)
    call_b24_registered(
        call=call,
        b24_call_id=registered.b24_call_id,
        user_id=user_id,
        entity_type=entity_type,
        entity_id=entity_id,
    )
    return call.b24_call_id


@action_handler(InternalAction.REGISTER_CALL)
def register_call(run: ActionRun) -> dict[str, Any]:
    """While it rings: the call exists in Bitrix24, bound to the caller, card shown if asked."""

    call = _call(run)
    if call.b24_log_mode == Call.LogMode.ACTIVITY:
        raise ActionSkipped("the portal refuses telephony; the call is logged as an activity")
    show_to = [int(user) for user in run.params.get("show_to", [])]
    agent = call.device.bitrix24_user_id
    # A card is only worth showing while the phone still rings or talks.
    ringing = call.status != Call.Status.ENDED
    already = bool(call.b24_call_id)
    others = [user for user in show_to if user != agent or already]
    # Cards for other users ride in the register's own request (one batch) when it is sent now.
    with_register = others if ringing and not already else []
    try:
        b24_call_id = _register(
            call,
            intent_key=run_intent_key(run),
            show=ringing and agent in show_to,
            also_show=with_register,
        )
    except Bitrix24AuthTypeDenied as exc:
        raise ActionSkipped(f"telephony refused ({exc.code}); log_call logs an activity") from exc
    shown: list[int] = [agent] if ringing and agent in show_to and not already else []
    shown += with_register
    if ringing and others and not with_register:
        crm_call_show(b24_call_id=b24_call_id, user_ids=others)
        shown += others
    return {"b24_call_id": b24_call_id, "entity": _entity(call), "shown_to": shown}


@action_handler("show_card")
def show_card(run: ActionRun) -> dict[str, Any]:
    call = _call(run)
    user_ids = [int(user) for user in run.params.get("user_ids", [])]
    if not user_ids:
        raise ActionSkipped("nobody to show the card to")
    if call.b24_finished_at is not None or call.status == Call.Status.ENDED:
        raise ActionSkipped("the call is over: no card to show")
    if not call.b24_call_id:
        raise Bitrix24TransientError("the call is not registered yet", code="NOT_REGISTERED")
    crm_call_show(b24_call_id=call.b24_call_id, user_ids=user_ids)
    return {"b24_call_id": call.b24_call_id, "shown_to": user_ids}


@action_handler("log_call")
def log_call(run: ActionRun) -> dict[str, Any]:
    """After the end: finish the call (the timeline activity), exactly once per call."""

    call = _call(run)
    if call.b24_finished_at is not None:
        return _logged_result(call, already=True)
    if call.status != Call.Status.ENDED or not call.outcome:
        raise CallIncomplete("the call has not ended yet")
    _require_whole_call(call)
    user_id = call.device.bitrix24_user_id
    duration = (call.duration_seconds or 0) if call.outcome == Call.Outcome.ANSWERED else 0
    try:
        b24_call_id = _register(call, intent_key=run_intent_key(run, "register"), show=False)
        finished = crm_call_finish(
            intent_key=run_intent_key(run),
            b24_call_id=b24_call_id,
            user_id=user_id,
            duration_s=duration,
            outcome=call.outcome,
            failed_reason=_("Call failed on the phone") if call.outcome == "failed" else "",
        )
    except Bitrix24AuthTypeDenied:
        return _log_as_activity(run, call, user_id=user_id, duration=duration)
    entity_type, entity_id = finished.entity or ("", None)
    call_b24_logged(
        call=call,
        mode=Call.LogMode.TELEPHONY,
        user_id=user_id,
        activity_id=finished.activity_id,
        note=finished.activity_error,
        entity_type=entity_type,
        entity_id=entity_id,
    )
    result = _logged_result(call, already=False)
    result["status_code"] = finished.status_code
    return result


def _log_as_activity(run: ActionRun, call: Call, *, user_id: int, duration: int) -> dict[str, Any]:
    _lookup_if_needed(call)
    entity = _entity(call)
    if entity is None:
        raise ActionSkipped(
            "telephony refused and the caller is in no CRM entity: no activity can be bound"
        )
    activity_id = crm_activity_log_call(
        intent_key=run_intent_key(run, "activity"),
        entity=entity,
        user_id=user_id,
        phone=call.phone_number,
        direction=cast(Direction, call.direction),  # known: _require_whole_call
        started_at=_started_at(call),
        duration_s=duration,
        outcome=call.outcome,
    )
    call_b24_logged(
        call=call,
        mode=Call.LogMode.ACTIVITY,
        user_id=user_id,
        activity_id=activity_id,
        note=TELEPHONY_REFUSED_NOTE,
        entity_type=entity[0],
        entity_id=entity[1],
    )
    return _logged_result(call, already=False)


def _logged_result(call: Call, *, already: bool) -> dict[str, Any]:
    result: dict[str, Any] = {
        "mode": call.b24_log_mode,
        "b24_call_id": call.b24_call_id or None,
        "activity_id": call.b24_activity_id,
    }
    if already:
        result["already_logged"] = True
    return result


@action_handler(InternalAction.ATTACH_RECORDING)
def attach_recording(run: ActionRun) -> dict[str, Any]:
    """The recording on the Bitrix24 call: only after finish (REFERENCE 7.7), MP3/WAV only."""

    call = _call(run)
    version = int(run.params.get("version", 0))
    recording = CallRecording.objects.filter(call=call).first()
    if recording is None or recording.version != version:
        raise ActionSkipped("superseded by a newer upload")
    if recording.deleted_at is not None:
        raise ActionSkipped("the audio was deleted by retention before it could be attached")
    if recording.attached_version == version:
        return {"file_id": recording.b24_file_id, "already_attached": True}
    if call.b24_log_mode == Call.LogMode.ACTIVITY:
        raise ActionSkipped("the call was logged as an activity: Bitrix24 attaches no record")
    if call.b24_finished_at is None or not call.b24_call_id:
        raise Bitrix24TransientError(
            "the call is not finished in Bitrix24 yet", code="NOT_FINISHED"
        )

    try:
        filename, content = recording_bitrix24_file(recording=recording)
    except ConversionFailed as exc:
        raise PermanentActionError(f"the recording could not be converted to MP3: {exc}") from exc
    file_id = crm_call_attach_record(
        b24_call_id=call.b24_call_id, filename=filename, content=content
    )
    recording_attached(recording=recording, version=version, file_id=file_id)
    return {"file_id": file_id, "filename": filename, "bytes": len(content)}
