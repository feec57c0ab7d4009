"""The handlers of the scenario actions (registered with the outbox when the app loads), and
what they share. The call backs (a task, a to-do) are in scenarios.callbacks, the changes to the
caller's record in scenarios.crm_actions, the webhook in scenarios.webhooks.

Each takes a claimed `ActionRun`, reloads what it needs, and calls crm's domain functions. A
handler may run again after a worker died mid-way, so creates use `run_intent_key(run)` (crm
keeps the outcome of a keyed request) and choices that must not change on a rerun (the
round-robin user) are written to the run before Bitrix24 is called.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from django.db import connection, transaction
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from calls.intake import call_crm_set
from calls.lifecycle import RESOLVED
from calls.models import Call, CallNote, CallRecording
from calls.services import call_audit_note, call_notes_mark_synced
from calls.sql import call_get
from crm.domain import CallerLookup, CrmDeal
from crm.errors import Bitrix24TransientError
from crm.mapping import entity_url, routing_facts
from crm.models import Bitrix24Connection
from crm.services import (
    crm_activity_set_description,
    crm_automation_trigger,
    crm_batch,
    crm_call_hide,
    crm_deal_create_with_contact,
    crm_entity_set_responsible,
    crm_find_by_phone,
    crm_lead_create,
    crm_lookup_invalidate,
    crm_notify,
    crm_phone_known,
    crm_timeline_comment_add,
)
from scenarios.choices import ActionType, InternalAction
from scenarios.conditions import conditions_check, conditions_summary
from scenarios.models import ActionRun, ScenarioAction
from scenarios.outbox import (
    ActionDeferred,
    ActionSkipped,
    action_handler,
    run_intent_key,
    run_plan,
)
from scenarios.planning import CallFacts
from scenarios.selectors import Directory, action_reference_problems, call_reached_since, directory
from scenarios.services import Unresolvable, call_facts, responsible_resolve, scenario_on_call_event
from scenarios.validation import template_render
from scenarios.worktime import due_before, work_schedule
from sms.models import SmsMessage
from sms.services import sms_guard_problem, sms_send
from tenants.connection import tenant_connection
from tenants.context import tenant_timezone

logger = logging.getLogger(__name__)
Action = ScenarioAction
Status = ActionRun.Status


# --- Shared pieces ------------------------------------------------------------------------------


def run_call(run: ActionRun) -> Call:
    return call_get(pk=run.call_id)


def run_config(run: ActionRun) -> dict[str, Any]:
    return run.params.get("action") or {}


def _facts(call: Call) -> CallFacts:
    return call_facts(call)


def call_entity(call: Call) -> dict[str, Any] | None:
    """The caller's CRM entity: found by the lookup or created by the unknown-number scenario."""
    crm = call.crm or {}
    if crm.get("status") == "found" and crm.get("entity"):
        return crm["entity"]
    created = ActionRun.objects.filter(
        call=call,
        action_type__in=[ActionType.CREATE_LEAD, ActionType.CREATE_DEAL],
        status=Status.DONE,
    ).first()
    return created.result.get("entity") if created else None


def call_deal(call: Call) -> dict[str, Any] | None:
    deals = (call.crm or {}).get("deals") or []
    return deals[0] if deals else None


def crm_ref(entity: dict[str, Any]) -> tuple[str, int]:
    return (entity["type"], int(entity["id"]))


def references_check(config: dict[str, Any], known: Directory) -> None:
    problems = action_reference_problems(config, known=known, for_execution=True)
    if problems:
        raise ActionSkipped(
            "The configuration refers to what Bitrix24 no longer has: " + "; ".join(problems)
        )


def message_values(call: Call, entity: dict[str, Any] | None) -> dict[str, str]:
    """What the placeholders of message templates stand for, for this call."""
    tz = ZoneInfo(tenant_timezone())
    moment = call.started_at or call.ended_at
    duration = call.duration_seconds or 0
    outcome = (call.outcome or "").replace("_", " ")
    direction = call.direction or ""
    return {
        "caller": (entity or {}).get("name") or call.phone_number or call.phone_raw,
        "number": call.phone_number or call.phone_raw,
        "time": moment.astimezone(tz).strftime("%Y-%m-%d %H:%M") if moment else "",
        "outcome": outcome,
        "direction": direction,
        "call_kind": f"{direction.title()} call" if direction else "Call",
        "duration": f"{duration // 60}:{duration % 60:02d}",
        "link": (entity or {}).get("url") or "",
        "agent": call.device.name,
        "line": call.device.phone_number,
    }


def run_responsible(run: ActionRun, call: Call, known: Directory) -> int:
    """The run's user, chosen once: a rerun after a crash keeps the first choice."""
    if run.params.get("responsible_user_id"):
        return int(run.params["responsible_user_id"])
    with transaction.atomic():
        locked = ActionRun.objects.select_for_update().get(pk=run.pk)
        if not locked.params.get("responsible_user_id"):
            try:
                user, how = responsible_resolve(
                    config=run_config(run), facts=_facts(call), known=known, peek=False
                )
            except Unresolvable as exc:
                raise ActionSkipped(f"No responsible user: {exc}.") from exc
            locked.params = {**locked.params, "responsible_user_id": user, "responsible": how}
            locked.save(update_fields=["params"])
    run.params = locked.params
    return int(locked.params["responsible_user_id"])


# --- A configured action as it starts: "before a date", its conditions ------------------------


class Situation:
    """A configured action's run as it starts: the call, its settings, and the caller's CRM data
    as Bitrix24 has it now (read once, and only when the action needs it: conditions, "before
    a date", a status change), with the open deal its conditions matched."""

    def __init__(self, run: ActionRun, call: Call) -> None:
        self.run = run
        self.call = call
        self.config = run_config(run)
        self.matched_deal_id: int | None = None
        self._lookup: CallerLookup | None = None
        self._entity: tuple[dict[str, Any] | None] | None = None

    def entity(self) -> dict[str, Any] | None:
        """The call's CRM entity (`call_entity`), read once for the run."""
        if self._entity is None:
            self._entity = (call_entity(self.call),)
        return self._entity[0]

    def lookup(self) -> CallerLookup:
        if self._lookup is None:
            # The lookup cache serves it when it is fresh (a few minutes, the tenant's setting).
            lookup = crm_find_by_phone(phone=self.call.phone_number, budget_s=math.inf)
            if lookup.status not in RESOLVED:
                raise Bitrix24TransientError(lookup.error or f"caller lookup {lookup.status}")
            self._lookup = lookup
        return self._lookup

    def deal_id(self) -> int | None:
        """The open deal an action on "the deal" works on: the one its conditions matched, else
        the caller's most recent open deal as the call stored it."""
        if self.matched_deal_id:
            return self.matched_deal_id
        deal = call_deal(self.call)
        return int(deal["id"]) if deal else None

    def deal_now(self) -> CrmDeal | None:
        """The open deal as Bitrix24 has it now (pipeline, stage, fields): the one the
        conditions matched, else the caller's most recent open deal (None: none is open)."""
        deals = self.lookup().deals
        if self.matched_deal_id:
            return next((deal for deal in deals if deal.id == self.matched_deal_id), None)
        return deals[0] if deals else None


ScenarioHandler = Callable[[ActionRun, Situation], dict[str, Any] | None]


def scenario_action(action_type: str) -> Callable[[ScenarioHandler], ScenarioHandler]:
    """Registers the handler of a configured action type with the outbox: a timing "before a
    date" and the action's conditions apply first, and what they found is in the run's result
    (also when they skip it)."""

    def register(handler: ScenarioHandler) -> ScenarioHandler:
        def run_action(run: ActionRun) -> dict[str, Any]:
            situation = Situation(run, run_call(run))
            audit: dict[str, Any] = {}
            if situation.config.get("timing") == Action.Timing.BEFORE_DATE:
                audit["before_date"] = _before_date_wait(situation)
            if situation.config.get("conditions"):
                audit["conditions"] = _conditions_apply(situation, audit)
            return {**audit, **(handler(run, situation) or {})}

        action_handler(action_type)(run_action)
        return handler

    return register


def _conditions_apply(situation: Situation, audit: dict[str, Any]) -> list[dict[str, Any]]:
    outcome = conditions_check(situation.config["conditions"], routing_facts(situation.lookup()))
    if not outcome.holds:
        raise ActionSkipped(
            "Conditions not met: " + conditions_summary(outcome.rows),
            result={**audit, "conditions": outcome.rows},
        )
    situation.matched_deal_id = outcome.deal_id
    return outcome.rows


def _date_value(value: Any) -> datetime | None:
    """A Bitrix24 date or datetime value; a date alone is its midnight on the tenant's clock."""
    if not value or not isinstance(value, str):
        return None
    moment = parse_datetime(value)
    if moment is None:
        day = parse_date(value)
        if day is None:
            return None
        moment = datetime.combine(day, time(0, 0))
    if timezone.is_naive(moment):
        moment = moment.replace(tzinfo=ZoneInfo(tenant_timezone()))
    return moment


def _before_date_wait(situation: Situation) -> dict[str, Any]:
    """A timing "N minutes before a date": read the date when the run is first picked up (just
    after the call) and wait for its moment; runs as planned then, even if the date changed."""
    run, config = situation.run, situation.config
    if run.params.get("before_date"):
        return dict(run.params["before_date"])
    name, whose = config["date_field"], config["date_of"]
    info: dict[str, Any] = {"field": f"{whose}.{name}"}
    if whose == Action.AutomationTarget.DEAL:
        deal = situation.deal_now()
        if deal is None:
            raise ActionSkipped("The caller has no open deal: no date to count back from.")
        raw, info["deal"] = deal.fields.get(name), deal.id
    else:
        lookup = situation.lookup()
        if lookup.entity is None:
            raise ActionSkipped("The caller is not in the CRM: no date to count back from.")
        raw = lookup.entity_fields.get(name)
    moment = _date_value(raw)
    if moment is None:
        raise ActionSkipped(f"No date in {info['field']}: nothing to count back from.")
    info["date"] = moment.isoformat()
    now = timezone.now()
    if moment <= now:
        shown = moment.astimezone(ZoneInfo(tenant_timezone()))
        raise ActionSkipped(
            f"The date in {info['field']} ({shown:%Y-%m-%d %H:%M}) is past.",
            result={"before_date": info},
        )
    due = due_before(
        work_schedule(),
        moment=moment,
        delay_seconds=int(config.get("delay_minutes") or 0) * 60,
        working_time=bool(config.get("delay_in_working_time")),
    )
    info["due"] = due.isoformat()
    if due <= now:
        info["note"] = "less time was left before the date: run at once"
    with transaction.atomic():
        locked = ActionRun.objects.select_for_update().get(pk=run.pk)
        locked.params = {**locked.params, "before_date": info}
        locked.save(update_fields=["params"])
    run.params = locked.params
    if due > now:
        raise ActionDeferred(due)
    return info


# --- Lookup and the unknown number --------------------------------------------------------------


@action_handler(InternalAction.LOOKUP_CALLER)
def lookup_caller(run: ActionRun) -> dict[str, Any]:
    """Looks the caller up without a budget, stores it on the call, and plans what follows."""

    call = run_call(run)
    facts = None
    if call.crm_status not in RESOLVED:
        # As fresh as a ringing call's lookup: the cache is dropped with every change SIMtrix
        # makes and every change Bitrix24 tells of (a queue of calls from one number asks once).
        lookup = crm_find_by_phone(phone=call.phone_number, budget_s=math.inf)
        if lookup.status not in RESOLVED:
            raise Bitrix24TransientError(lookup.error or f"caller lookup {lookup.status}")
        crm = lookup.as_api()
        facts = routing_facts(lookup)
    else:
        crm = call.crm
    with transaction.atomic():
        locked = call_get(pk=call.pk, lock=True)
        # Routes the call too, if it was routed only provisionally (not known in time).
        call_crm_set(call=locked, crm=crm, facts=facts)
        scenario_on_call_event(call=locked, event_type="crm.lookup")
    return {"status": crm["status"]}


@contextmanager
def advisory_lock(name: str) -> Iterator[None]:
    """A PostgreSQL session lock: held across Bitrix24 requests without a long transaction
    (crm's intent rows must commit as they go), released even if the worker dies."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(hashtext(%s))", [name])
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(hashtext(%s))", [name])


def _create_entity(situation: Situation, create: Any) -> dict[str, Any]:
    """Creates the unknown caller's lead/deal once, and binds the call to it.

    Two calls from the same new number may run this at the same time: a per-number lock and a
    fresh look at Bitrix24 make the second one find the first one's lead instead of making
    another. The look is one command (is the number anyone's?); only a number that is now
    someone's is looked up whole.
    """

    run, call = situation.run, situation.call
    known = directory()
    references_check(situation.config, known)
    with advisory_lock(f"{tenant_connection.schema_name}:unknown-caller:{call.phone_number}"):
        lookup = None
        if crm_phone_known(phone=call.phone_number):
            lookup = crm_find_by_phone(phone=call.phone_number, budget_s=math.inf, use_cache=False)
            if lookup.status not in RESOLVED:
                raise Bitrix24TransientError(lookup.error or f"caller lookup {lookup.status}")
        if lookup is not None and lookup.status == "found":
            crm = lookup.as_api()
            result: dict[str, Any] = {"entity": crm["entity"], "created": False}
        else:
            responsible = run_responsible(run, call, known)
            entity = create(call=call, responsible=responsible, known=known)
            crm_lookup_invalidate(phone=call.phone_number)
            deal = entity.pop("deal", None)
            crm = {
                "status": "found",
                "entity": entity,
                "responsible": {"id": responsible, "name": known.user_name(responsible)},
                "deals": [{**deal, "pipeline": "", "stage": ""}] if deal else [],
            }
            result = {"entity": entity, "created": True, "responsible_id": responsible}
        with transaction.atomic():
            locked = call_get(pk=call.pk, lock=True)
            call_crm_set(call=locked, crm=crm)
    return result


def _entity_url(entity_type: str, entity_id: int) -> str:
    connection_row = Bitrix24Connection.objects.filter(singleton=1).first()
    portal = connection_row.portal_url if connection_row else ""
    return entity_url(portal, entity_type, entity_id) if portal else ""


@scenario_action(ActionType.CREATE_LEAD)
def create_lead(run: ActionRun, situation: Situation) -> dict[str, Any]:
    config = situation.config

    def create(*, call: Call, responsible: int, known: Directory) -> dict[str, Any]:
        values = message_values(call, None)
        title = template_render(config["title_template"], values)
        lead_id = crm_lead_create(
            intent_key=run_intent_key(run),
            phone=call.phone_number,
            title=title,
            # "The first lead status" when none is chosen, as the portal orders them.
            status_id=config.get("lead_status_id")
            or (known.lead_statuses[0] if known.lead_statuses else "NEW"),
            source_id=config.get("lead_source_id") or "CALL",
            responsible_id=responsible,
            comments=template_render(config.get("text_template") or "", values),
        )
        return {"type": "lead", "id": lead_id, "name": title, "url": _entity_url("lead", lead_id)}

    return _create_entity(situation, create)


@scenario_action(ActionType.CREATE_DEAL)
def create_deal(run: ActionRun, situation: Situation) -> dict[str, Any]:
    config = situation.config

    def create(*, call: Call, responsible: int, known: Directory) -> dict[str, Any]:
        pipeline = config.get("pipeline_id") or 0
        stages = known.stages.get(pipeline) or ()
        default_stage = stages[0] if stages else ("NEW" if not pipeline else f"C{pipeline}:NEW")
        title = template_render(config["title_template"], message_values(call, None))
        deal_id, contact_id = crm_deal_create_with_contact(
            intent_key=run_intent_key(run),
            phone=call.phone_number,
            title=title,
            category_id=pipeline,
            stage_id=config.get("stage_id") or default_stage,
            responsible_id=responsible,
        )
        return {
            "type": "contact",
            "id": contact_id,
            "name": call.phone_number,
            "url": _entity_url("contact", contact_id),
            "deal": {"id": deal_id, "title": title},
        }

    return _create_entity(situation, create)


# --- The outcome's actions ------------------------------------------------------------------


@scenario_action(ActionType.NOTIFY)
def notify(run: ActionRun, situation: Situation) -> dict[str, Any]:
    call = situation.call
    config = situation.config
    known = directory()
    references_check(config, known)
    recipients: list[int] = []
    if Action.Recipient.RESPONSIBLE in config.get("recipients", []):
        recipients.append(run_responsible(run, call, known))
    if Action.Recipient.AGENT in config.get("recipients", []):
        recipients.append(call.device.bitrix24_user_id)
    recipients += config.get("users") or []
    # The responsible or the agent may have left since; the configured users were checked above.
    recipients = [user for user in dict.fromkeys(recipients) if not known.user_problem(user)]
    if not recipients:
        raise ActionSkipped("No active recipient for the notification.")
    message = template_render(config["text_template"], message_values(call, call_entity(call)))
    # Tagged by run and user: a rerun after a crash replaces the notification, not repeats it.
    if len(recipients) == 1:
        crm_notify(user_id=recipients[0], message=message, intent_key=run_intent_key(run))
    else:
        with crm_batch() as batch:
            sent = [
                batch.add(
                    crm_notify,
                    user_id=user,
                    message=message,
                    intent_key=run_intent_key(run, str(user)),
                )
                for user in recipients
            ]
        for deferred in sent:
            deferred.result()  # raises the first command's error, if one failed
    return {"notified": recipients}


def reached_reason(call: Call) -> str | None:
    since = call.started_at or call.ended_at or call.created_at
    reached = call_reached_since(
        phone_number=call.phone_number, since=since, exclude_call_id=call.pk
    )
    if reached is None:
        return None
    answered = reached.answered_at or reached.started_at
    assert answered is not None  # call_reached_since reads calls that started after `since`
    when = answered.astimezone(ZoneInfo(tenant_timezone()))
    return f"The caller was reached meanwhile ({reached.direction} call answered at {when:%H:%M})."


@scenario_action(ActionType.TRIGGER_AUTOMATION)
def trigger_automation(run: ActionRun, situation: Situation) -> dict[str, Any]:
    call = situation.call
    config = situation.config
    if config.get("automation_target") == Action.AutomationTarget.DEAL:
        deal_id = situation.deal_id()
        if deal_id is None:
            raise ActionSkipped("The caller has no open deal.")
        target = ("deal", deal_id)
    else:
        entity = call_entity(call)
        if entity is None:
            raise ActionSkipped("The caller is not in the CRM.")
        target = crm_ref(entity)
    crm_automation_trigger(entity=target, code=config["automation_code"])
    return {"target": list(target), "code": config["automation_code"]}


@scenario_action(ActionType.TIMELINE_COMMENT)
def timeline_comment(run: ActionRun, situation: Situation) -> dict[str, Any]:
    call = situation.call
    entity = call_entity(call)
    if entity is None:
        raise ActionSkipped("The caller is not in the CRM.")
    text = template_render(situation.config["text_template"], message_values(call, entity))
    comment_id = crm_timeline_comment_add(entity=crm_ref(entity), text=text)
    return {"comment_id": comment_id}


@scenario_action(ActionType.SEND_SMS)
def send_sms(run: ActionRun, situation: Situation) -> dict[str, Any]:
    """Texts the caller from the phone that took (or missed) the call, unless a guard says no;
    the text reaches the entity's timeline once the phone has sent it (sms.sync)."""
    call = situation.call
    problem = sms_guard_problem(phone_number=call.phone_number, intent_key=run_intent_key(run))
    if problem:
        raise ActionSkipped(problem)
    entity = call_entity(call)
    text = template_render(situation.config["text_template"], message_values(call, entity))
    if not text.strip():
        raise ActionSkipped("The text is empty once its placeholders are filled in.")
    sms = sms_send(
        device=call.device,
        phone_number=call.phone_number,
        text=text,
        source=SmsMessage.Source.SCENARIO,
        intent_key=run_intent_key(run),
        b24_user_id=call.device.bitrix24_user_id,
        entity=crm_ref(entity) if entity else None,
        call_id=call.pk,
    )
    return {"sms": sms.sms_id, "status": sms.status, "from": call.device.name}


@scenario_action(ActionType.POST_CALL_SYNC)
def post_call_sync(run: ActionRun, situation: Situation) -> dict[str, Any]:
    """Carries the agent's notes into the call's activity and makes sure the recording is there."""

    call = situation.call
    if call.b24_finished_at is None:
        raise ActionSkipped("The call is not logged in Bitrix24.")
    result: dict[str, Any] = {}
    notes = list(CallNote.objects.filter(call=call).order_by("created_at", "pk"))
    fresh = [note for note in notes if note.crm_synced_at is None]
    if fresh:
        text = "\n\n".join(note.text for note in notes)
        entity = call_entity(call)
        if call.b24_activity_id:
            # The whole set every time: a rerun writes the same description, not a second copy.
            crm_activity_set_description(activity_id=call.b24_activity_id, text=text)
        elif entity:
            crm_timeline_comment_add(
                entity=crm_ref(entity), text="\n\n".join(note.text for note in fresh)
            )
        else:
            raise ActionSkipped("The call has no activity or CRM entity to carry notes to.")
        call_notes_mark_synced(note_ids=[note.pk for note in fresh])
    result["notes"] = len(fresh)
    recording = CallRecording.objects.filter(call=call, deleted_at__isnull=True).first()
    if recording is None:
        result["recording"] = "none"
    elif recording.attached_version == recording.version:
        result["recording"] = "attached"
    else:
        # Same key as the upload's own plan: if that one exists this is a no-op.
        attach = run_plan(
            call_id=call.pk,
            action_type=InternalAction.ATTACH_RECORDING,
            dedupe_key=f"call:{call.pk}:attach_recording:v{recording.version}",
            due_at=timezone.now(),
            params={"version": recording.version},
        )
        result["recording"] = f"attach {attach.status}"
    return result


@action_handler(InternalAction.HIDE_CARD)
def hide_card(run: ActionRun) -> dict[str, Any]:
    call = run_call(run)
    if not call.b24_call_id:
        raise ActionSkipped("The call was not registered in Bitrix24.")
    register = ActionRun.objects.filter(call=call, action_type=InternalAction.REGISTER_CALL).first()
    users = (register.params.get("show_to") if register else None) or [call.device.bitrix24_user_id]
    crm_call_hide(b24_call_id=call.b24_call_id, user_ids=users)
    return {"hidden_for": users}


@action_handler(InternalAction.TRANSFER_RESPONSIBLE)
def transfer_responsible(run: ActionRun) -> dict[str, Any]:
    """The agent who answered becomes the lead's responsible (seed 004), in the audit trail."""

    call = run_call(run)
    entity = call_entity(call)
    if not entity or entity.get("type") != "lead":
        raise ActionSkipped("The caller is not a lead: only a lead's responsible is updated.")
    agent = int(run.params["user_id"])
    responsible = ((call.crm or {}).get("responsible") or {}).get("id")
    if responsible == agent:
        raise ActionSkipped("The agent who answered is already the lead's responsible.")
    known = directory()
    problem = known.user_problem(agent)
    if problem:
        raise ActionSkipped(f"The agent cannot be made responsible: {problem}.")
    lead = crm_ref(entity)
    crm_entity_set_responsible(entity=lead, user_id=agent)
    before = (
        f"{known.user_name(responsible) or 'user'} ({responsible})" if responsible else "nobody"
    )
    call_audit_note(
        call=call,
        description=f"Lead {lead[1]}: responsible changed from {before} to "
        f"{known.user_name(agent) or 'user'} ({agent}), who answered the call (transfer)",
        changes={"lead_responsible": [responsible, agent]},
    )
    return {"lead": lead[1], "from": responsible, "to": agent}
