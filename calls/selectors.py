from __future__ import annotations

import contextlib
import re
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext

from calls.models import Call, CallRecording, CallSettings, Device
from calls.sql import RunRow, call_runs_read
from calls.tokens import TOKEN_PREFIX, token_hash
from common.metrics import lookup_observed
from common.phones import InvalidPhoneNumber, phone_to_e164
from crm.domain import CrmObject, RoutingFacts
from crm.errors import Bitrix24Error
from crm.mapping import routing_facts
from crm.models import Bitrix24User
from crm.selectors import crm_find_by_phone
from scenarios.routing.rules import Route, RoutePerson
from tenants.context import tenant_country
from tenants.memo import tenant_memo, tenant_memo_forget


def device_for_token(*, token: str) -> Device | None:
    """The active device of the current tenant schema that owns this token, if any."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    return Device.objects.filter(token_hash=token_hash(token), revoked_at__isnull=True).first()


CALL_SETTINGS_MEMO = "calls.settings"


def call_settings_get(*, fresh: bool = False) -> CallSettings:
    """The tenant's call settings; memoised per process for a few seconds (read per request)."""
    return tenant_memo(
        CALL_SETTINGS_MEMO,
        lambda: CallSettings.objects.filter(singleton=1).first() or CallSettings(),
        fresh=fresh,
    )


def call_settings_forget() -> None:
    tenant_memo_forget(CALL_SETTINGS_MEMO)


def devices_silent(*, now: datetime | None = None) -> QuerySet[Device]:
    """Active devices without a sign of life for longer than the tenant's threshold."""
    now = now or timezone.now()
    threshold = now - timedelta(minutes=call_settings_get().silent_after_minutes)
    return Device.objects.filter(revoked_at__isnull=True).filter(
        Q(last_seen_at__lt=threshold) | Q(last_seen_at__isnull=True)
    )


def device_is_silent(*, device: Device, now: datetime | None = None) -> bool:
    now = now or timezone.now()
    threshold = now - timedelta(minutes=call_settings_get().silent_after_minutes)
    return device.is_active and (device.last_seen_at is None or device.last_seen_at < threshold)


# --- CRM data for the bridge -------------------------------------------------------------


@lookup_observed
def caller_lookup_with_facts(
    *, phone_number: str, budget_s: float | None
) -> tuple[CrmObject, RoutingFacts | None]:
    """The bridge contract's `crm` object for a number (E.164), and the caller's routing facts
    (crm.mapping.routing_facts; None unless the lookup found or ruled out the caller).

    `budget_s=None` is the tenant's lookup budget (answering the bridge); `math.inf` waits for
    Bitrix24 (background work)."""

    if not phone_number:
        return {"status": "not_found"}, _NO_CALLER
    try:
        lookup = crm_find_by_phone(phone=phone_number, budget_s=budget_s)
    except Bitrix24Error:
        # Not connected or refused: the bridge still gets its answer; the background retries.
        return {"status": "unavailable", "entity": None, "responsible": None, "deals": []}, None
    facts = routing_facts(lookup) if lookup.status in ("found", "not_found") else None
    return lookup.as_api(), facts


# What routing knows of a caller without a readable number.
_NO_CALLER: RoutingFacts = {"entity_type": "", "entity": {}, "responsible_id": None, "deals": []}


def caller_lookup(*, phone_number: str, budget_s: float | None) -> CrmObject:
    """The bridge contract's `crm` object for a number (see caller_lookup_with_facts)."""
    return caller_lookup_with_facts(phone_number=phone_number, budget_s=budget_s)[0]


def routing_facts_from_crm(crm: CrmObject) -> RoutingFacts | None:
    """What routing can still read from a stored `crm` object when the lookup itself is gone
    (the type, the responsible and the deals' ids, not their fields)."""
    if crm.get("status") not in ("found", "not_found"):
        return None
    entity = crm.get("entity") or {}
    responsible = (crm.get("responsible") or {}).get("id")
    return {
        "entity_type": entity.get("type") or "",
        "entity": {"responsible": str(responsible) if responsible else None},
        "responsible_id": responsible,
        "deals": [{"id": deal.get("id")} for deal in crm.get("deals") or []],
    }


def agent_names(*, user_ids: list[int]) -> dict[int, str]:
    """Bitrix24 users' names from the directory crm syncs; missing ones are simply absent."""

    return dict(Bitrix24User.objects.filter(pk__in=user_ids).values_list("pk", "name"))


def agent_label(user_id: int, names: dict[int, str]) -> str:
    """ "Marta Nowak (#5)" (names from agent_names), or "User #5" when the directory has no
    such user."""
    name = names.get(user_id)
    return f"{name} (#{user_id})" if name else gettext("User #%(id)s") % {"id": user_id}


def route_public(route: Route | None) -> Route | None:
    """The bridge contract's `route` object: whom the call should go to and the rule's name.

    The call's stored route also holds the audit trail of the decision (explanation, the next
    member of the queue, who was unavailable), which the bridge does not need."""
    user = route.get("user") if route else None
    if not route or not user:
        return None
    if not user.get("name"):
        # A user the directory does not know yet (a sync is on its way): named as Bitrix24
        # names a user without a name, never an empty string on the phone's screen.
        user = RoutePerson(id=user["id"], name=f"User #{user['id']}")
    return {"user": user, "rule": route.get("rule")}


# --- The call resource ------------------------------------------------------------------------


def call_for_device(*, device: Device, call_id: str) -> Call | None:
    return Call.objects.filter(device=device, call_id=call_id).first()


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def call_actions(*, call: Call, runs: list[RunRow] | None = None) -> list[dict[str, Any]]:
    """The call resource's `actions`; from `runs` (call_runs_read) when already read."""
    actions = []
    for run in call_runs_read(call_id=call.pk) if runs is None else runs:
        action: dict[str, Any] = {
            "type": run["action_type"],
            "status": run["status"],
            "due_at": _iso(run["due_at"]),
            "done_at": _iso(run["done_at"]),
        }
        if run["result"]:
            action["result"] = run["result"]
        actions.append(action)
    return actions


def call_resource(*, call: Call, runs: list[RunRow] | None = None) -> dict[str, Any]:
    """The call as the bridge contract describes it (GET /calls/{call_id}/)."""
    try:
        recording: CallRecording | None = call.recording
    except CallRecording.DoesNotExist:
        recording = None
    return {
        "call_id": call.call_id,
        "direction": call.direction or None,
        "phone_number": call.phone_number or call.phone_raw or None,
        "status": call.status,
        "outcome": call.outcome or None,
        "started_at": _iso(call.started_at),
        "answered_at": _iso(call.answered_at),
        "ended_at": _iso(call.ended_at),
        "duration_seconds": call.duration_seconds,
        "crm": call.crm or {"status": "pending"},
        "route": route_public(call.route),
        "recording": (
            {"uploaded_at": _iso(recording.uploaded_at), "format": recording.original_format}
            if recording is not None
            else None
        ),
        "actions": call_actions(call=call, runs=runs),
    }


# --- The call log (admin) -----------------------------------------------------------------


def calls_matching_number(*, queryset: QuerySet[Call], text: str) -> QuerySet[Call]:
    """Calls whose number matches what support typed, in any format ("0048 600-111 222")."""
    text = text.strip()
    if not text:
        return queryset
    conditions = Q(phone_raw__icontains=text)
    digits = re.sub(r"\D", "", text)
    if digits:
        conditions |= Q(phone_number__contains=digits)
    with contextlib.suppress(InvalidPhoneNumber):
        conditions |= Q(phone_number=phone_to_e164(text, country=tenant_country()))
    return queryset.filter(conditions)
