"""The handlers of the scenario actions (registered with the outbox when the app loads).

Each takes a claimed `ActionRun`, reloads what it needs, and calls crm's domain functions. A
handler may run again after a worker died mid-way, so creates use `run_intent_key(run)` (crm
keeps the outcome of a keyed request) and choices that must not change on a rerun (the
round-robin user) are written to the run before Bitrix24 is called.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from zoneinfo import ZoneInfo

from django.db import connection, transaction
from django.utils import timezone

from calls.intake import call_crm_set
from calls.lifecycle import RESOLVED
from calls.models import Call, CallNote, CallRecording
from calls.services import call_audit_note, call_notes_mark_synced
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
    crm_task_complete,
    crm_task_create,
    crm_timeline_comment_add,
)
from scenarios.choices import ActionType, InternalAction
from scenarios.models import ActionRun, ScenarioAction
from scenarios.outbox import ActionSkipped, action_handler, run_intent_key, run_plan
from scenarios.planning import CallFacts
from scenarios.selectors import Directory, action_reference_problems, call_reached_since, directory
from scenarios.services import Unresolvable, call_facts, responsible_resolve, scenario_on_call_event
from scenarios.validation import template_render
from scenarios.worktime import due_at, work_schedule
from sms.models import SmsMessage
from sms.services import sms_guard_problem, sms_send
from tenants.connection import tenant_connection
from tenants.context import tenant_timezone

logger = logging.getLogger(__name__)
Action = ScenarioAction
Status = ActionRun.Status


# A task without a configured deadline is due a day after it is created.
DEFAULT_DEADLINE_MINUTES = 24 * 60


# --- Shared pieces ------------------------------------------------------------------------------


def _call(run: ActionRun) -> Call:
    return Call.objects.select_related("device").get(pk=run.call_id)


def _config(run: ActionRun) -> dict[str, Any]:
    return run.params.get("action") or {}


def _facts(call: Call) -> CallFacts:
    return call_facts(call)


def _entity(call: Call) -> dict[str, Any] | None:
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


def _deal(call: Call) -> dict[str, Any] | None:
    deals = (call.crm or {}).get("deals") or []
    return deals[0] if deals else None


def _crm_ref(entity: dict[str, Any]) -> tuple[str, int]:
    return (entity["type"], int(entity["id"]))


def _check_references(config: dict[str, Any], known: Directory) -> None:
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


def _responsible(run: ActionRun, call: Call, known: Directory) -> int:
    """The run's user, chosen once: a rerun after a crash keeps the first choice."""
    if run.params.get("responsible_user_id"):
        return int(run.params["responsible_user_id"])
    with transaction.atomic():
        locked = ActionRun.objects.select_for_update().get(pk=run.pk)
        if not locked.params.get("responsible_user_id"):
            try:
                user, how = responsible_resolve(
                    config=_config(run), facts=_facts(call), known=known, peek=False
                )
            except Unresolvable as exc:
                raise ActionSkipped(f"No responsible user: {exc}.") from exc
            locked.params = {**locked.params, "responsible_user_id": user, "responsible": how}
            locked.save(update_fields=["params"])
    run.params = locked.params
    return int(locked.params["responsible_user_id"])


# --- Lookup and the unknown number --------------------------------------------------------------


@action_handler(InternalAction.LOOKUP_CALLER)
def lookup_caller(run: ActionRun) -> dict[str, Any]:
    """Looks the caller up without a budget, stores it on the call, and plans what follows."""

    call = _call(run)
    facts = None
    if call.crm_status not in RESOLVED:
        lookup = crm_find_by_phone(phone=call.phone_number, budget_s=math.inf, use_cache=False)
        if lookup.status not in RESOLVED:
            raise Bitrix24TransientError(lookup.error or f"caller lookup {lookup.status}")
        crm = lookup.as_api()
        facts = routing_facts(lookup)
    else:
        crm = call.crm
    with transaction.atomic():
        locked = Call.objects.select_for_update().select_related("device").get(pk=call.pk)
        # Routes the call too, if it was routed only provisionally (not known in time).
        call_crm_set(call=locked, crm=crm, facts=facts)
        scenario_on_call_event(call=locked, event_type="crm.lookup")
    return {"status": crm["status"]}


@contextmanager
def _advisory_lock(name: str) -> Iterator[None]:
    """A PostgreSQL session lock: held across Bitrix24 requests without a long transaction
    (crm's intent rows must commit as they go), released even if the worker dies."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(hashtext(%s))", [name])
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(hashtext(%s))", [name])


def _create_entity(run: ActionRun, create: Any) -> dict[str, Any]:
    """Creates the unknown caller's lead/deal once, and binds the call to it.

    Two calls from the same new number may run this at the same time: a per-number lock and a
    fresh lookup make the second one find the first one's lead instead of making another.
    """

    call = _call(run)
    known = directory()
    _check_references(_config(run), known)
    with _advisory_lock(f"{tenant_connection.schema_name}:unknown-caller:{call.phone_number}"):
        lookup = crm_find_by_phone(phone=call.phone_number, budget_s=math.inf, use_cache=False)
        if lookup.status not in RESOLVED:
            raise Bitrix24TransientError(lookup.error or f"caller lookup {lookup.status}")
        if lookup.status == "found":
            crm = lookup.as_api()
            result: dict[str, Any] = {"entity": crm["entity"], "created": False}
        else:
            responsible = _responsible(run, call, known)
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
            locked = Call.objects.select_for_update().select_related("device").get(pk=call.pk)
            call_crm_set(call=locked, crm=crm)
    return result


def _entity_url(entity_type: str, entity_id: int) -> str:
    connection_row = Bitrix24Connection.objects.filter(singleton=1).first()
    portal = connection_row.portal_url if connection_row else ""
    return entity_url(portal, entity_type, entity_id) if portal else ""


@action_handler(ActionType.CREATE_LEAD)
def create_lead(run: ActionRun) -> dict[str, Any]:
    config = _config(run)

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

    return _create_entity(run, create)


@action_handler(ActionType.CREATE_DEAL)
def create_deal(run: ActionRun) -> dict[str, Any]:
    config = _config(run)

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

    return _create_entity(run, create)


# --- The outcome's actions ------------------------------------------------------------------


@action_handler(ActionType.NOTIFY)
def notify(run: ActionRun) -> dict[str, Any]:
    call = _call(run)
    config = _config(run)
    known = directory()
    _check_references(config, known)
    recipients: list[int] = []
    if Action.Recipient.RESPONSIBLE in config.get("recipients", []):
        recipients.append(_responsible(run, call, known))
    if Action.Recipient.AGENT in config.get("recipients", []):
        recipients.append(call.device.bitrix24_user_id)
    recipients += config.get("users") or []
    # The responsible or the agent may have left since; the configured users were checked above.
    recipients = [user for user in dict.fromkeys(recipients) if not known.user_problem(user)]
    if not recipients:
        raise ActionSkipped("No active recipient for the notification.")
    message = template_render(config["text_template"], message_values(call, _entity(call)))
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


def _reached_reason(call: Call) -> str | None:
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


@action_handler(ActionType.CALLBACK_TASK)
def callback_task(run: ActionRun) -> dict[str, Any]:
    call = _call(run)
    config = _config(run)
    if config.get("skip_if_reached", True):
        reason = _reached_reason(call)
        if reason:
            raise ActionSkipped(reason)
    known = directory()
    _check_references(config, known)
    responsible = _responsible(run, call, known)
    entity = _entity(call)
    values = message_values(call, entity)
    deadline = due_at(
        work_schedule(),
        base=timezone.now(),
        delay_seconds=(config.get("deadline_minutes") or DEFAULT_DEADLINE_MINUTES) * 60,
        working_time=bool(config.get("deadline_in_working_time")),
    ).astimezone(ZoneInfo(tenant_timezone()))
    bindings = [_crm_ref(entity)] if entity else []
    deal = _deal(call)
    if deal:
        bindings.append(("deal", int(deal["id"])))
    task_id = crm_task_create(
        intent_key=run_intent_key(run),
        title=template_render(config["title_template"], values),
        description=template_render(config.get("text_template") or "", values),
        responsible_id=responsible,
        deadline=deadline,
        bindings=bindings,
    )
    result: dict[str, Any] = {"task_id": task_id, "responsible_id": responsible}
    if config.get("skip_if_reached", True) and _reached_reason(call):
        # Reached while the task was being created: it is already done.
        crm_task_complete(task_id=task_id)
        result["completed"] = True
    return result


@action_handler(InternalAction.COMPLETE_CALLBACK_TASK)
def complete_callback_task(run: ActionRun) -> dict[str, Any]:
    task_run = ActionRun.objects.filter(pk=run.params["task_run_id"]).first()
    if task_run is None or task_run.result.get("completed"):
        raise ActionSkipped("The callback task is already completed.")
    crm_task_complete(task_id=int(run.params["task_id"]))
    with transaction.atomic():
        locked = ActionRun.objects.select_for_update().get(pk=task_run.pk)
        locked.result = {**locked.result, "completed": True, "completed_by_call": run.call_id}
        locked.save(update_fields=["result"])
    return {"task_id": run.params["task_id"]}


@action_handler(ActionType.TRIGGER_AUTOMATION)
def trigger_automation(run: ActionRun) -> dict[str, Any]:
    call = _call(run)
    config = _config(run)
    if config.get("automation_target") == Action.AutomationTarget.DEAL:
        deal = _deal(call)
        if deal is None:
            raise ActionSkipped("The caller has no open deal.")
        target = ("deal", int(deal["id"]))
    else:
        entity = _entity(call)
        if entity is None:
            raise ActionSkipped("The caller is not in the CRM.")
        target = _crm_ref(entity)
    crm_automation_trigger(entity=target, code=config["automation_code"])
    return {"target": list(target), "code": config["automation_code"]}


@action_handler(ActionType.TIMELINE_COMMENT)
def timeline_comment(run: ActionRun) -> dict[str, Any]:
    call = _call(run)
    entity = _entity(call)
    if entity is None:
        raise ActionSkipped("The caller is not in the CRM.")
    text = template_render(_config(run)["text_template"], message_values(call, entity))
    comment_id = crm_timeline_comment_add(entity=_crm_ref(entity), text=text)
    return {"comment_id": comment_id}


@action_handler(ActionType.SEND_SMS)
def send_sms(run: ActionRun) -> dict[str, Any]:
    """Texts the caller from the phone that took (or missed) the call, unless a guard says no;
    the text reaches the entity's timeline once the phone has sent it (sms.sync)."""
    call = _call(run)
    problem = sms_guard_problem(phone_number=call.phone_number, intent_key=run_intent_key(run))
    if problem:
        raise ActionSkipped(problem)
    entity = _entity(call)
    text = template_render(_config(run)["text_template"], message_values(call, entity))
    if not text.strip():
        raise ActionSkipped("The text is empty once its placeholders are filled in.")
    sms = sms_send(
        device=call.device,
        phone_number=call.phone_number,
        text=text,
        source=SmsMessage.Source.SCENARIO,
        intent_key=run_intent_key(run),
        b24_user_id=call.device.bitrix24_user_id,
        entity=_crm_ref(entity) if entity else None,
        call_id=call.pk,
    )
    return {"sms": sms.sms_id, "status": sms.status, "from": call.device.name}


@action_handler(ActionType.POST_CALL_SYNC)
def post_call_sync(run: ActionRun) -> dict[str, Any]:
    """Carries the agent's notes into the call's activity and makes sure the recording is there."""

    call = _call(run)
    if call.b24_finished_at is None:
        raise ActionSkipped("The call is not logged in Bitrix24.")
    result: dict[str, Any] = {}
    notes = list(CallNote.objects.filter(call=call).order_by("created_at", "pk"))
    fresh = [note for note in notes if note.crm_synced_at is None]
    if fresh:
        text = "\n\n".join(note.text for note in notes)
        entity = _entity(call)
        if call.b24_activity_id:
            # The whole set every time: a rerun writes the same description, not a second copy.
            crm_activity_set_description(activity_id=call.b24_activity_id, text=text)
        elif entity:
            crm_timeline_comment_add(
                entity=_crm_ref(entity), text="\n\n".join(note.text for note in fresh)
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
    call = _call(run)
    if not call.b24_call_id:
        raise ActionSkipped("The call was not registered in Bitrix24.")
    register = ActionRun.objects.filter(call=call, action_type=InternalAction.REGISTER_CALL).first()
    users = (register.params.get("show_to") if register else None) or [call.device.bitrix24_user_id]
    crm_call_hide(b24_call_id=call.b24_call_id, user_ids=users)
    return {"hidden_for": users}


@action_handler(InternalAction.TRANSFER_RESPONSIBLE)
def transfer_responsible(run: ActionRun) -> dict[str, Any]:
    """The agent who answered becomes the lead's responsible (seed 004), in the audit trail."""

    call = _call(run)
    entity = _entity(call)
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
    lead = _crm_ref(entity)
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
