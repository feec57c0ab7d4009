"""Call backs the caller is owed: the callback task (``tasks.task.add``) and the "schedule a
call" to-do (``crm.activity.todo.add``), one open per caller, completed once they are reached.

One open per caller: while a call back made for the number (by either action) is open, a new
one adds to it instead of making another: a comment with the call's time (on a task, a comment;
on a to-do, a line of its description) and the deadline brought forward when the new call's is
earlier. Whether it is still open is asked of Bitrix24 first (someone may have closed it there).
A per-number lock makes two calls at the same moment find each other's.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext

from calls.models import Call
from crm.domain import FollowUpState
from crm.errors import Bitrix24Error
from crm.services import (
    crm_task_comment_add,
    crm_task_complete,
    crm_task_create,
    crm_task_set_deadline,
    crm_task_state,
    crm_todo_complete,
    crm_todo_create,
    crm_todo_set_deadline,
    crm_todo_set_description,
    crm_todo_state,
)
from scenarios.choices import ActionType, InternalAction
from scenarios.handlers import (
    Situation,
    advisory_lock,
    call_deal,
    call_entity,
    crm_ref,
    message_values,
    reached_reason,
    references_check,
    run_responsible,
    scenario_action,
)
from scenarios.models import ActionRun
from scenarios.outbox import ActionSkipped, action_handler, run_intent_key
from scenarios.selectors import callback_open, directory
from scenarios.validation import template_render
from scenarios.worktime import due_at, work_schedule
from tenants.connection import tenant_connection
from tenants.context import tenant_timezone

# A call back without a configured deadline is due a day after it is made.
DEFAULT_DEADLINE_MINUTES = 24 * 60


def _deadline(config: dict[str, Any]) -> datetime:
    return due_at(
        work_schedule(),
        base=timezone.now(),
        delay_seconds=(config.get("deadline_minutes") or DEFAULT_DEADLINE_MINUTES) * 60,
        working_time=bool(config.get("deadline_in_working_time")),
    ).astimezone(ZoneInfo(tenant_timezone()))


@scenario_action(ActionType.CALLBACK_TASK)
def callback_task(run: ActionRun, situation: Situation) -> dict[str, Any]:
    return _call_back(run, situation)


@scenario_action(ActionType.SCHEDULE_CALL)
def schedule_call(run: ActionRun, situation: Situation) -> dict[str, Any]:
    return _call_back(run, situation)


def _call_back(run: ActionRun, situation: Situation) -> dict[str, Any]:
    call, config = situation.call, situation.config
    todo = run.action_type == ActionType.SCHEDULE_CALL
    if config.get("skip_if_reached", True):
        reason = reached_reason(call)
        if reason:
            raise ActionSkipped(reason)
    known = directory()
    references_check(config, known)
    entity = call_entity(call)
    if todo and entity is None:
        raise ActionSkipped("The caller is not in the CRM: a to-do needs a record's timeline.")
    responsible = run_responsible(run, call, known)
    deadline = _deadline(config)
    with advisory_lock(f"{tenant_connection.schema_name}:call-back:{call.phone_number}"):
        earlier = callback_open(phone_number=call.phone_number, exclude_run_id=run.pk)
        added = _add_to(earlier, call=call, deadline=deadline) if earlier else None
        if added is not None:
            return added
        values = message_values(call, entity)
        title = template_render(config["title_template"], values)
        description = template_render(config.get("text_template") or "", values)
        result: dict[str, Any] = {"responsible_id": responsible, "deadline": deadline.isoformat()}
        if todo:
            assert entity is not None  # skipped above
            result["todo_id"] = crm_todo_create(
                intent_key=run_intent_key(run),
                entity=crm_ref(entity),
                title=title,
                description=description,
                responsible_id=responsible,
                deadline=deadline,
            )
            result["entity"] = list(crm_ref(entity))
        else:
            bindings = [crm_ref(entity)] if entity else []
            deal = call_deal(call)
            if deal:
                bindings.append(("deal", int(deal["id"])))
            result["task_id"] = crm_task_create(
                intent_key=run_intent_key(run),
                title=title,
                description=description,
                responsible_id=responsible,
                deadline=deadline,
                bindings=bindings,
            )
        # Recorded before the number's lock is let go: a call back planned by a call at the
        # same moment finds this one (callback_open reads running runs too).
        ActionRun.objects.filter(pk=run.pk).update(result=result)
    if config.get("skip_if_reached", True) and reached_reason(call):
        # Reached while it was being made: it is already done.
        _complete(result)
        result["completed"] = True
    return result


def _state(result: dict[str, Any]) -> FollowUpState:
    if "todo_id" in result:
        return crm_todo_state(activity_id=int(result["todo_id"]))
    return crm_task_state(task_id=int(result["task_id"]))


def _complete(result: dict[str, Any]) -> None:
    if "todo_id" in result:
        crm_todo_complete(activity_id=int(result["todo_id"]))
    else:
        crm_task_complete(task_id=int(result["task_id"]))


def _result_update(run_id: int, **changes: Any) -> dict[str, Any]:
    with transaction.atomic():
        locked = ActionRun.objects.select_for_update().get(pk=run_id)
        locked.result = {**locked.result, **changes}
        locked.save(update_fields=["result"])
    return locked.result


def _add_to(earlier: ActionRun, *, call: Call, deadline: datetime) -> dict[str, Any] | None:
    """Adds this call to an open call back; None when Bitrix24 says it is done after all (it
    is marked so, and a new one is made)."""
    made = dict(earlier.result)
    try:
        state = _state(made)
    except Bitrix24Error as exc:
        if exc.transient:
            raise
        # Refused for good: deleted in Bitrix24 (or no longer ours to see), so not open.
        state = FollowUpState(open=False, deadline=None)
    if not state.open:
        _result_update(earlier.pk, completed=True, closed_in_bitrix24=True)
        return None
    tz = ZoneInfo(tenant_timezone())
    moment = (call.started_at or call.ended_at or timezone.now()).astimezone(tz)
    # Written into Bitrix24: in the tenant's language, which the worker speaks.
    line = gettext("Called again: %(number)s at %(time)s.") % {
        "number": call.phone_number,
        "time": f"{moment:%Y-%m-%d %H:%M}",
    }
    forward = state.deadline is None or deadline < state.deadline
    added: dict[str, Any] = {"added_to_run": earlier.pk, "call_id": earlier.call_id}
    if "todo_id" in made:
        entity = (str(made["entity"][0]), int(made["entity"][1]))
        todo_id = int(made["todo_id"])
        text = f"{state.description}\n{line}" if state.description else line
        crm_todo_set_description(activity_id=todo_id, entity=entity, text=text)
        if forward:
            crm_todo_set_deadline(activity_id=todo_id, entity=entity, deadline=deadline)
        added["todo_id"] = todo_id
    else:
        task_id = int(made["task_id"])
        added["comment_id"] = crm_task_comment_add(task_id=task_id, text=line)
        if forward:
            crm_task_set_deadline(task_id=task_id, deadline=deadline)
        added["task_id"] = task_id
    due = deadline if forward or state.deadline is None else state.deadline
    added["deadline"] = "brought forward" if forward else "kept"
    added["deadline_at"] = due.isoformat()
    calls = [*made.get("calls_added", []), call.pk]
    _result_update(earlier.pk, calls_added=calls, deadline=added["deadline_at"])
    return {"added_to": added}


@action_handler(InternalAction.COMPLETE_CALLBACK_TASK)
def complete_callback_task(run: ActionRun) -> dict[str, Any]:
    made = ActionRun.objects.filter(pk=run.params["task_run_id"]).first()
    if made is None or made.result.get("completed"):
        raise ActionSkipped("The call back is already completed.")
    _complete(made.result)
    _result_update(made.pk, completed=True, completed_by_call=run.call_id)
    return {key: made.result[key] for key in ("task_id", "todo_id") if key in made.result}
