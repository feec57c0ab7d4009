"""A bridge event applied to its call, and a later CRM lookup applied to a call.

The way in of everything the phone reports: the event is recorded (idempotent by event_id,
order-independent per call), the call's state folded from its events, the caller looked up, the
call routed and the scenario planned, in as few statements as the hot path allows (calls/sql.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils.translation import gettext

from calls.lifecycle import STARTED, CallState, EventFacts, call_state_from
from calls.models import Call, CallTransition, Device
from calls.selectors import (
    call_resource,
    caller_lookup_with_facts,
    route_public,
    routing_facts_from_crm,
)
from calls.sql import (
    CallSnapshot,
    RunRow,
    call_insert,
    call_lock,
    call_new,
    call_read,
    event_record,
    event_stored,
)
from common.logcontext import bridge_call_logged
from common.metrics import bridge_event_observed
from common.phones import InvalidPhoneNumber, phone_to_e164
from crm.domain import CrmObject, RoutingFacts
from scenarios.routing.rules import Route, RoutePerson
from scenarios.routing.services import route_decide_call, route_rule_explanation
from scenarios.services import scenario_on_call_event, scenario_planning_due
from tenants.context import tenant_country

logger = logging.getLogger(__name__)


class EventConflict(Exception):
    """The event_id was already used for a different event."""


@dataclass(frozen=True)
class EventReceipt:
    status: str  # "accepted" | "duplicate"
    http_status: int
    body: dict[str, Any]


def _body_hash(body: dict[str, Any]) -> str:
    # Key order and whitespace are the JSON encoder's, not the event's: hash a canonical form.
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def event_body(*, event: EventFacts, call_id: str) -> dict[str, Any]:
    """What is stored of an event: the contract's fields, as validated; nothing else.

    Unknown fields are ignored, not refused: a newer bridge app may send more, and an older
    server must still take its events. They are not stored either, so an event costs a few
    hundred bytes whatever the phone adds (the 512 KB body limit once all went into the row),
    and they are not part of the idempotency key: the same event_id with the same contract
    fields is a resend, whatever else came with it. Values are the validated ones (the UUID in
    its canonical spelling, a trimmed number, a duration sent as "95" as 95): the call's state is
    recomputed from these bodies when its next event arrives.
    """
    body: dict[str, Any] = {
        "event_id": event.event_id,
        "type": event.type,
        "call_id": call_id,
        "occurred_at": event.occurred_at.isoformat(),
    }
    optional = {
        "direction": event.direction,
        "phone_number": event.phone_number,
        "outcome": event.outcome,
        "duration_seconds": event.duration_seconds,
    }
    # Absent stays absent ("" and None are what EventFacts holds for a field not sent).
    body.update({name: value for name, value in optional.items() if value not in ("", None)})
    return body


def _replay(
    *, device: Device, event_id: str, digest: str, raw: dict[str, Any]
) -> EventReceipt | None:
    stored = event_stored(event_id=event_id)
    if stored is None:
        return None
    device_id, body_hash, response_status, response_body = stored
    # An event stored before unknown fields were dropped (event_body) was hashed over the whole
    # body as sent: hashed again only then, not for every event.
    if device_id != device.pk or (body_hash != digest and body_hash != _body_hash(raw)):
        # The bridge gets this message (409, or the batch's `invalid`): in its language.
        raise EventConflict(gettext("This event_id was already used for a different event."))
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
            duration_seconds=_int_or_none(event["body"].get("duration_seconds")),
        )
        for event in events
    ]


def _int_or_none(value: Any) -> int | None:
    # Bodies stored before they held validated values may have the duration as sent ("95",
    # "95.0": DRF's IntegerField takes both).
    return None if value is None else int(float(value))


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


def _route_refresh(call: Call, *, facts: RoutingFacts | None) -> bool:
    """Decides the call's route if it has none yet or only a provisional one (in the caller's
    transaction: a round-robin turn is taken only if the call is recorded)."""

    if not _route_wanted(call):
        return False
    if facts is None and call.phone_number:
        # A call not looked up yet stores {}: no status, so no facts.
        facts = routing_facts_from_crm(cast(CrmObject, call.crm or {}))
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


@bridge_event_observed(conflict=EventConflict)
@bridge_call_logged
def call_event_receive(
    *, device: Device, event: EventFacts, call_id: str, raw: dict[str, Any], lookup: bool = False
) -> EventReceipt:
    """Records one validated bridge event: idempotent by event_id, order-independent per call.

    `raw` is the body as received; only its hash is used: events stored before unknown fields
    were dropped (event_body) were hashed over the whole body, and their resends are still
    duplicates. With `lookup`, a new call.started asks the CRM who is calling (within the
    tenant's lookup budget) before anything is written, so no lock is held while Bitrix24
    answers.
    """
    body = event_body(event=event, call_id=call_id)
    digest = _body_hash(body)
    crm = caller = None
    if lookup and event.type == STARTED:
        # Don't ask Bitrix24 again for a resent call.started: check for a replay first.
        receipt = _replay(device=device, event_id=event.event_id, digest=digest, raw=raw)
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
            stored_body=body,
            digest=digest,
            crm=crm,
            caller=caller,
        )
    except IntegrityError:
        # The event_id is taken (a resend, or a concurrent twin that committed first): the
        # unique constraint, not a check before the insert, decides; nothing of this attempt
        # was kept, and the stored event answers.
        receipt = _replay(device=device, event_id=event.event_id, digest=digest, raw=raw)
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
    stored_body: dict[str, Any],
    digest: str,
    crm: CrmObject | None,
    caller: RoutingFacts | None = None,
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
    snapshot: CallSnapshot | None
    for _ in range(_EVENT_ATTEMPTS):
        if likely_new:
            snapshot = CallSnapshot(
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
                    snapshot, device=device, event=event, stored_body=stored_body, digest=digest,
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
    stored_body: dict[str, Any],
    digest: str,
    crm: CrmObject | None,
    caller: RoutingFacts | None,
) -> EventReceipt:
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
        runs: list[RunRow] | None = read.runs
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
                "body": stored_body,
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
    route = cast(Route, call.route or {})
    user: RoutePerson | dict[str, Any] = route.get("user") or {}
    if (before["routed_to"], before["route_rule"]) != (user.get("id"), route.get("rule")):
        head = f"{head}; {route_rule_explanation(route)}"
    return head[:300]


def call_crm_set(*, call: Call, crm: CrmObject, facts: RoutingFacts | None = None) -> None:
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


def call_route_preview(
    *, device: Device, facts: RoutingFacts | None, crm: CrmObject
) -> Route | None:
    """The route an incoming call from this caller would take now, without taking a turn
    (the bridge's lookup: nothing is called, so nothing is assigned)."""

    return route_public(
        route_decide_call(
            facts=facts,
            crm_status=crm.get("status", ""),
            direction=Call.Direction.INCOMING,
            agent_id=device.bitrix24_user_id,
            peek=True,
        )
    )
