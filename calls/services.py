from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

from django.core.files.base import ContentFile, File
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from calls.audio import (
    BITRIX24_FORMATS,
    SNIFF_BYTES,
    ConversionFailed,
    audio_convert_to_mp3,
    audio_format_sniff,
)
from calls.lifecycle import STARTED, CallState, EventFacts, call_state_from
from calls.models import (
    Call,
    CallNote,
    CallRecording,
    CallSettings,
    CallTransition,
    Device,
)
from calls.selectors import (
    call_resource,
    call_settings_forget,
    call_settings_get,
    caller_lookup_with_facts,
    routing_facts_from_crm,
    tenant_country,
)
from calls.sql import (
    CallSnapshot,
    call_insert,
    call_lock,
    call_new,
    call_read,
    event_record,
    event_stored,
)
from calls.tokens import token_generate, token_hash
from common.phones import InvalidPhoneNumber, phone_to_e164

logger = logging.getLogger(__name__)

# --- Devices ------------------------------------------------------------------------------


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


class EventConflict(Exception):
    """The event_id was already used for a different event."""


@dataclass(frozen=True)
class EventReceipt:
    status: str  # "accepted" | "duplicate"
    http_status: int
    body: dict[str, Any]


def _body_hash(raw: dict[str, Any]) -> str:
    # Key order and whitespace are the JSON encoder's, not the event's: hash a canonical form.
    canonical = json.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _replay(*, device: Device, event_id: str, digest: str) -> EventReceipt | None:
    stored = event_stored(event_id=event_id)
    if stored is None:
        return None
    device_id, body_hash, response_status, response_body = stored
    if device_id != device.pk or body_hash != digest:
        raise EventConflict("This event_id was already used for a different event.")
    return EventReceipt("duplicate", response_status or 200, response_body or {})


def _facts_stored(events: list[dict[str, Any]]) -> list[EventFacts]:
    """What the call's stored events say (in no particular order: call_state_from sorts)."""
    return [
        EventFacts(
            event_id=event["event_id"],
            type=event["type"],
            occurred_at=event["occurred_at"],
            direction=event["body"].get("direction") or "",
            phone_number=event["body"].get("phone_number") or "",
            outcome=event["body"].get("outcome") or "",
            duration_seconds=event["body"].get("duration_seconds"),
        )
        for event in events
    ]


# The call's fields an event may change (its state, the CRM lookup, the route).
_EVENT_FIELDS = (
    *CallState.__dataclass_fields__,
    "phone_number",
    "crm",
    "crm_status",
    "route",
)


_CRM_RANK = {"found": 2, "not_found": 2, "pending": 1, "unavailable": 1}


def _event_values(call: Call) -> dict[str, Any]:
    return {name: getattr(call, name) for name in _EVENT_FIELDS}


def _audit_view(values: dict[str, Any]) -> dict[str, Any]:
    """What a transition records of the call's values: the route as who and which rule."""
    view = {name: value for name, value in values.items() if name not in ("crm", "route")}
    route = values["route"] or {}
    view["routed_to"] = (route.get("user") or {}).get("id")
    view["route_rule"] = route.get("rule")
    return view


def _route_wanted(call: Call) -> bool:
    """A call is routed once; a provisional route (decided without the caller's CRM data, or
    before the direction was known) is decided again when more is known."""
    route = call.route or {}
    if not route:
        return True
    if not route.get("provisional"):
        return False
    return bool(call.direction) and (
        call.direction != Call.Direction.INCOMING or call.crm_status in ("found", "not_found")
    )


def _route_refresh(call: Call, *, facts: dict[str, Any] | None) -> bool:
    """Decides the call's route if it has none yet or only a provisional one (in the caller's
    transaction: a round-robin turn is taken only if the call is recorded)."""
    from scenarios.routing.services import route_decide_call

    if not _route_wanted(call):
        return False
    if facts is None and call.phone_number:
        facts = routing_facts_from_crm(call.crm or {})
    elif facts is None and call.crm_status in ("found", "not_found"):
        facts = {"entity_type": "", "entity": {}, "responsible_id": None, "deals": []}
    call.route = route_decide_call(
        facts=facts,
        crm_status=call.crm_status,
        direction=call.direction,
        agent_id=call.device.bitrix24_user_id,
    )
    return True


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def call_event_receive(
    *, device: Device, event: EventFacts, call_id: str, raw: dict[str, Any], lookup: bool = False
) -> EventReceipt:
    """Records one validated bridge event: idempotent by event_id, order-independent per call.

    With `lookup`, a new call.started asks the CRM who is calling (within the tenant's lookup
    budget) before anything is written, so no lock is held while Bitrix24 answers.
    """
    digest = _body_hash(raw)
    crm = caller = None
    if lookup and event.type == STARTED:
        # Don't ask Bitrix24 again for a resent call.started: check for a replay first.
        receipt = _replay(device=device, event_id=event.event_id, digest=digest)
        if receipt is not None:
            return receipt
        crm, caller = caller_lookup_with_facts(
            phone_number=_e164_or_blank(event.phone_number), budget_s=None
        )
    try:
        return _event_apply(
            device=device,
            event=event,
            call_id=call_id,
            raw=raw,
            digest=digest,
            crm=crm,
            caller=caller,
        )
    except IntegrityError:
        # The event_id is taken (a resend, or a concurrent twin that committed first): the
        # unique constraint, not a check before the insert, decides; nothing of this attempt
        # was kept, and the stored event answers.
        receipt = _replay(device=device, event_id=event.event_id, digest=digest)
        if receipt is None:
            raise
        return receipt


def _e164_or_blank(raw: str) -> str:
    if not raw:
        return ""
    try:
        return phone_to_e164(raw, country=tenant_country())
    except InvalidPhoneNumber:
        return ""  # a hidden or unreadable number ("Private number") has no CRM match


class _CallChanged(Exception):
    """The call changed (or was created) after this event read it: read it again."""


# Attempts at recording one event when other events of its call keep winning the race.
_EVENT_ATTEMPTS = 50


def _event_apply(
    *,
    device: Device,
    event: EventFacts,
    call_id: str,
    raw: dict[str, Any],
    digest: str,
    crm: dict[str, Any] | None,
    caller: dict[str, Any] | None = None,
) -> EventReceipt:
    """`crm` and `caller` (its routing facts) come from the lookup at call.started.

    Optimistic: the call is read without a lock, and the event is written only if the call's
    `version` is still the one read (one statement: the call's changes, the event, its
    transition); else it is read and computed again. Two events of a call are thus applied one
    after the other, whatever order they come in, without a row lock (whose tuple write cost
    more than the rest of the read). A transaction is opened only when the event also writes
    elsewhere: a new call, a round-robin turn, planned runs.
    """
    likely_new = event.type == STARTED
    for _ in range(_EVENT_ATTEMPTS):
        if likely_new:
            snapshot: CallSnapshot | None = CallSnapshot(
                call=call_new(device_id=device.pk, call_id=call_id), created=True
            )
        else:
            snapshot = call_read(device_id=device.pk, call_id=call_id)
            if snapshot is None:
                likely_new = True
                continue
        try:
            # A new call is inserted in a transaction, with what its first event plans.
            with transaction.atomic() if snapshot.created else nullcontext():
                return _event_record(
                    snapshot, device=device, event=event, raw=raw, digest=digest,
                    crm=crm, caller=caller,
                )  # fmt: skip
        except _CallChanged:
            likely_new = False
    raise RuntimeError(f"call {call_id}: other events kept changing it; not recorded")


def _event_record(
    read: CallSnapshot,
    *,
    device: Device,
    event: EventFacts,
    raw: dict[str, Any],
    digest: str,
    crm: dict[str, Any] | None,
    caller: dict[str, Any] | None,
) -> EventReceipt:
    from scenarios.services import scenario_on_call_event, scenario_planning_due

    call, created = read.call, read.created
    call.device = device  # already loaded: spares the planner a query
    saved = _event_values(call)
    facts = _facts_stored(read.stored_events)
    facts.append(event)
    state = call_state_from(facts)
    for name, value in state.as_dict().items():
        setattr(call, name, value)
    if created or state.phone_raw != saved["phone_raw"]:
        call.phone_number = _e164_or_blank(state.phone_raw)
    if crm is not None and _CRM_RANK.get(crm.get("status", ""), 0) >= _CRM_RANK.get(
        call.crm_status, 0
    ):
        call.crm = crm
        call.crm_status = crm.get("status", "")
    else:
        caller = None  # what the call already knows is as good: route by that
    writes_elsewhere = (
        created
        or _route_wanted(call)
        or scenario_planning_due(call=call, runs=read.runs, planned=read.planned)
    )
    # A round-robin turn and planned runs are kept only if the event is recorded. (A new call is
    # inserted in a transaction already. Called inside a caller's transaction, the event gets a
    # savepoint: a reused event_id must not abort the caller's.)
    transactional = not created and (writes_elsewhere or connection.in_atomic_block)
    with transaction.atomic() if transactional else nullcontext():
        if writes_elsewhere and not created:
            call_lock(call=call)
        _route_refresh(call, facts=caller)
        current = _event_values(call)
        changed = [name for name in _EVENT_FIELDS if current[name] != saved[name]]
        # A new call is stored as its first event says (no insert-then-update of its indexes).
        if created and not call_insert(call):
            raise _CallChanged  # created meanwhile by another event: read it
        # The call's runs as they were (the response lists them); read again only if planning
        # wrote any.
        runs: list[dict[str, Any]] | None = read.runs
        if writes_elsewhere and scenario_on_call_event(
            call=call, event_type=event.type, runs=runs, planned=read.planned
        ):
            runs = None

        http_status = 201 if created else 200
        body = call_resource(call=call, runs=runs)
        before, after = _audit_view(saved), _audit_view(current)
        changes = {
            name: [_jsonable(before[name]), _jsonable(after[name])]
            for name in after
            if before[name] != after[name]
        }
        transition = None
        if changes or created:
            transition = {
                "source": CallTransition.Source.BRIDGE,
                "from_status": "" if created else before["status"],
                "to_status": call.status,
                "changes": changes,
                "description": _describe(event=event, created=created, before=before, call=call),
            }
        recorded = event_record(
            call=call,
            changed=None if created else changed,
            event={
                "event_id": event.event_id,
                "device": device.pk,
                "type": event.type,
                "occurred_at": event.occurred_at,
                "body": raw,
                "body_hash": digest,
                "response_status": http_status,
                "response_body": body,
            },
            transition=transition,
        )
        if not recorded:
            raise _CallChanged  # (inside the transaction: what it wrote is undone)
    return EventReceipt("accepted", http_status, body)


def _describe(*, event: EventFacts, created: bool, before: dict[str, Any], call: Call) -> str:
    if created:
        head = f"{event.type} created the call ({call.status})"
    elif before["status"] != call.status:
        head = f"{event.type}: {before['status']} -> {call.status}"
    else:
        head = f"{event.type} updated the call"
    head = f"{head}, outcome {call.outcome}" if call.outcome else head
    route = call.route or {}
    if (before["routed_to"], before["route_rule"]) != (
        (route.get("user") or {}).get("id"),
        route.get("rule"),
    ):
        from scenarios.routing.services import route_rule_explanation

        head = f"{head}; {route_rule_explanation(route)}"
    return head[:300]


# --- Bitrix24 lifecycle bookkeeping (written by the outbox handlers) --------------------------


def call_crm_set(*, call: Call, crm: dict[str, Any], facts: dict[str, Any] | None = None) -> None:
    """Stores a later (background) lookup when it knows more than what the call has, and
    routes the call if it was routed only provisionally (the caller was not known in time).

    Run it with the call's row locked (select_for_update) inside a transaction when it may
    route: the round-robin turn is then taken once."""
    if _CRM_RANK.get(crm.get("status", ""), 0) < _CRM_RANK.get(call.crm_status, 0):
        return
    call.crm, call.crm_status = crm, crm.get("status", "")
    before = dict(call.route or {})
    routed = _route_refresh(call, facts=facts)
    # A new version: an event that read the call before this must read it again.
    Call.objects.filter(pk=call.pk).update(
        crm=call.crm, crm_status=call.crm_status, route=call.route, version=F("version") + 1
    )
    if routed:
        from scenarios.routing.services import route_rule_explanation

        CallTransition.objects.create(
            call=call,
            source=CallTransition.Source.BITRIX24,
            from_status=call.status,
            to_status=call.status,
            changes={
                "routed_to": [(before.get("user") or {}).get("id"), call.route["user"]["id"]],
                "route_rule": [before.get("rule"), call.route.get("rule")],
            },
            description=f"{route_rule_explanation(call.route)} once the caller was known"[:300],
        )


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
    with transaction.atomic():
        updated = Call.objects.filter(pk=call.pk, b24_call_id="").update(
            b24_call_id=b24_call_id,
            b24_user_id=user_id,
            b24_entity_type=entity_type,
            b24_entity_id=entity_id,
            b24_registered_at=now,
        )
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
    call.refresh_from_db()
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
    from scenarios.outbox import run_plan

    now = timezone.now()
    with transaction.atomic():
        locked = Call.objects.select_for_update().get(pk=call.pk)
        if locked.b24_finished_at is not None:
            call.refresh_from_db()
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
            _plan_attach(call_id=call.pk, version=recording.version, run_plan=run_plan)
    call.refresh_from_db()
    return True


def _plan_attach(*, call_id: int, version: int, run_plan: Any) -> None:
    run_plan(
        call_id=call_id,
        action_type="attach_recording",
        dedupe_key=f"call:{call_id}:attach_recording:v{version}",
        due_at=timezone.now(),
        params={"version": version},
    )


# --- Notes --------------------------------------------------------------------------------


def call_note_add(*, call: Call, text: str) -> CallNote:
    return CallNote.objects.create(call=call, text=text)


def call_notes_mark_synced(*, note_ids: list[int]) -> int:
    """For the post-call sync: these notes have reached Bitrix24."""
    return CallNote.objects.filter(pk__in=note_ids, crm_synced_at__isnull=True).update(
        crm_synced_at=timezone.now()
    )


# --- Recordings ---------------------------------------------------------------------------


class NotAudio(Exception):
    pass


class RecordingTooLarge(Exception):
    pass


def recording_limit_bytes() -> int:
    return call_settings_get().upload_limit_mb * 1024 * 1024


def call_recording_store(
    *, call: Call, upload: IO[bytes], size: int, name: str = "", content_type: str = ""
) -> CallRecording:
    """Keeps the call's audio (replacing an earlier upload) and plans its way to Bitrix24."""
    from scenarios.outbox import run_plan

    if size > recording_limit_bytes():
        raise RecordingTooLarge(f"The recording is larger than {recording_limit_bytes()} bytes.")
    upload.seek(0)
    audio_format = audio_format_sniff(upload.read(SNIFF_BYTES))
    if audio_format is None:
        raise NotAudio("The upload is not an audio file this server recognises.")
    upload.seek(0)
    digest = hashlib.sha256()
    for chunk in iter(lambda: upload.read(1024 * 1024), b""):
        digest.update(chunk)
    upload.seek(0)

    with transaction.atomic():
        locked = Call.objects.select_for_update().get(pk=call.pk)
        recording = CallRecording.objects.filter(call=locked).first()
        stale: list[str] = []
        if recording is None:
            recording = CallRecording(call=locked, version=1)
        else:
            stale = [f.name for f in (recording.original, recording.converted) if f]
            recording.version += 1
        version = recording.version
        recording.original_format = audio_format
        recording.original_content_type = content_type[:100]
        recording.original_name = Path(name).name[:200] if name else ""
        recording.size = size
        recording.sha256 = digest.hexdigest()
        recording.uploaded_at = timezone.now()
        recording.converted = ""
        recording.converted_at = None
        recording.conversion_error = ""
        recording.deleted_at = None
        recording.original.save(f"v{version}-original.{audio_format}", File(upload), save=False)
        recording.save()
        CallTransition.objects.create(
            call=locked,
            source=CallTransition.Source.RECORDING,
            from_status=locked.status,
            to_status=locked.status,
            changes={"recording_version": [version - 1 or None, version]},
            description=f"Recording v{version} uploaded ({audio_format}, {size} bytes)",
        )
        if locked.b24_finished_at is not None:
            _plan_attach(call_id=locked.pk, version=version, run_plan=run_plan)
        recording_pk = recording.pk
        transaction.on_commit(lambda: _files_delete(stale))
        if audio_format not in BITRIX24_FORMATS:
            transaction.on_commit(lambda: _queue_conversion(recording_pk, version))
    return recording


def _queue_conversion(recording_id: int, version: int) -> None:
    from calls.tasks import recording_convert_task

    recording_convert_task.delay(recording_id, version)


def _files_delete(names: list[str]) -> None:
    from django.core.files.storage import default_storage

    for name in names:
        try:
            default_storage.delete(name)
        except OSError:  # a file already gone is what we wanted
            logger.warning("could not delete recording file %s", name)


def recording_bitrix24_file(*, recording: CallRecording) -> tuple[str, bytes]:
    """The file name and content Bitrix24 gets (MP3/WAV), converting first when needed."""
    if recording.original_format in BITRIX24_FORMATS:
        with recording.original.open("rb") as handle:
            content = handle.read()
        return f"call-{recording.call_id}.{recording.original_format}", content
    recording_convert(recording_id=recording.pk, version=recording.version)
    recording.refresh_from_db()
    if not recording.converted:
        raise ConversionFailed(recording.conversion_error or "the recording was not converted")
    with recording.converted.open("rb") as handle:
        return f"call-{recording.call_id}.mp3", handle.read()


def recording_convert(*, recording_id: int, version: int) -> bool:
    """Makes the MP3 of a recording that is not MP3/WAV; idempotent, safe to run twice."""
    recording = CallRecording.objects.filter(pk=recording_id, version=version).first()
    if recording is None or recording.deleted_at is not None or recording.converted:
        return False
    if recording.original_format in BITRIX24_FORMATS or not recording.original:
        return False
    suffix = f".{recording.original_format}"
    with tempfile.NamedTemporaryFile(suffix=suffix) as local:
        # The original may live on S3: ffmpeg wants a local file.
        with recording.original.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1024 * 1024), b""):
                local.write(chunk)
        local.flush()
        try:
            mp3 = audio_convert_to_mp3(Path(local.name))
        except ConversionFailed as exc:
            CallRecording.objects.filter(pk=recording_id, version=version).update(
                conversion_error=str(exc)[:2000]
            )
            raise
    from django.core.files.storage import default_storage

    name = default_storage.save(
        recording.original.field.generate_filename(recording, f"v{version}.mp3"), ContentFile(mp3)
    )
    # A re-upload or a concurrent conversion may have won meanwhile: then this file is surplus.
    won = CallRecording.objects.filter(pk=recording_id, version=version, converted="").update(
        converted=name, converted_at=timezone.now(), conversion_error=""
    )
    if not won:
        _files_delete([name])
    return bool(won)


def recording_attached(*, recording: CallRecording, version: int, file_id: int | None) -> None:
    with transaction.atomic():
        CallRecording.objects.filter(pk=recording.pk).update(
            attached_version=version, attached_at=timezone.now(), b24_file_id=file_id
        )
        CallTransition.objects.create(
            call_id=recording.call_id,
            source=CallTransition.Source.BITRIX24,
            changes={"attached_version": [recording.attached_version, version]},
            description=f"Recording v{version} attached in Bitrix24 (file {file_id or '-'})",
        )


def recordings_expire(*, now: datetime | None = None) -> int:
    """Deletes the audio kept here once it is older than the tenant's retention (metadata stays)."""
    days = call_settings_get(fresh=True).retention_days
    if not days:
        return 0
    cutoff = (now or timezone.now()) - timedelta(days=days)
    expired = 0
    for recording in CallRecording.objects.filter(uploaded_at__lt=cutoff, deleted_at__isnull=True):
        names = [f.name for f in (recording.original, recording.converted) if f]
        with transaction.atomic():
            updated = CallRecording.objects.filter(pk=recording.pk, deleted_at__isnull=True).update(
                deleted_at=timezone.now(), original="", converted=""
            )
            if not updated:
                continue
            CallTransition.objects.create(
                call_id=recording.call_id,
                source=CallTransition.Source.RECORDING,
                changes={"recording_deleted": [False, True]},
                description=f"Recording audio deleted after {days} days (retention)",
            )
            transaction.on_commit(lambda names=names: _files_delete(names))
        expired += 1
    return expired


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
]


def support_group_ensure() -> None:
    """The view-only "Support" group exists with rights on every audit model."""
    from django.contrib.auth.models import Group, Permission
    from django.db.models import Q

    group, _ = Group.objects.get_or_create(name=SUPPORT_GROUP)
    wanted = Q(pk__in=[])
    for app_label, model in SUPPORT_VIEW_MODELS:
        wanted |= Q(content_type__app_label=app_label, codename=f"view_{model}")
    group.permissions.set(Permission.objects.filter(wanted))
