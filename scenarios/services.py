"""What a call causes in Bitrix24: the planning side of the scenario engine, and the writes of
its configuration (import, defaults, round-robin)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone
from django.utils.translation import gettext_noop

from calls.lifecycle import RESOLVED
from calls.models import Call
from calls.sql import RunRow
from common.sql import instance_insert
from scenarios.choices import CREATION_TYPES, ActionType, InternalAction, Trigger
from scenarios.models import (
    ActionRun,
    CallPlan,
    ScenarioAction,
)
from scenarios.outbox import FINISHED_OK, run_plan
from scenarios.planning import NOT_FOUND, CallFacts, Step, office_open_at, plan_end, plan_start
from scenarios.routing.selectors import (
    routing_settings_get,
)
from scenarios.routing.services import round_robin_pick, route_for_outcome
from scenarios.selectors import Directory, agents, callback_tasks_open, scenario_config
from scenarios.worktime import WorkSchedule, due_at, work_schedule

logger = logging.getLogger(__name__)


def call_facts(call: Call) -> CallFacts:
    return CallFacts(
        direction=call.direction,
        phone_number=call.phone_number,
        ended=call.status == Call.Status.ENDED,
        outcome=call.outcome,
        started_at=call.started_at,
        ended_at=call.ended_at,
        crm=call.crm or {},
        route=route_for_outcome(call),
        agent_id=call.device.bitrix24_user_id,
        device_id=call.device_id,
    )


def call_run_key(call_id: int, step_key: str) -> str:
    return f"call:{call_id}:{step_key}"


# When the lookup at call.started found Bitrix24 unavailable, the background lookup waits this
# long (then retries with the outbox's backoff).
LOOKUP_RETRY_AFTER = timedelta(seconds=5)


def _plannable(call: Call) -> bool:
    # Without a readable number there is nothing to look up, create or log in Bitrix24; without
    # the direction (a lone call.ended that did not say it) the outcome's scenario is unknown:
    # the call is planned when the event that tells arrives.
    return bool(call.phone_number and call.direction)


def _lookup_planned(call: Call, runs: list[RunRow] | None) -> bool:
    """The background lookup is among the call's runs as read (runs are never deleted)."""
    key = call_run_key(call.pk, InternalAction.LOOKUP_CALLER)
    return runs is not None and any(run["dedupe_key"] == key for run in runs)


def _wants_end(call: Call) -> bool:
    return call.status == Call.Status.ENDED and bool(call.outcome)


def _phases_planned(call: Call, planned: set[str]) -> bool:
    """Every phase the call can be planned for now is planned already."""
    return CallPlan.Phase.START in planned and (
        CallPlan.Phase.END in planned or not _wants_end(call)
    )


def scenario_planning_due(*, call: Call, runs: list[RunRow], planned: set[str]) -> bool:
    """Whether scenario_on_call_event would plan anything for the call as it now is, given its
    runs and planned phases as read (a pure check: the bridge opens a transaction only then)."""
    if not _plannable(call):
        return False
    if call_facts(call).crm_status not in RESOLVED:
        return not _lookup_planned(call, runs)
    return not _phases_planned(call, planned)


def scenario_on_call_event(
    *,
    call: Call,
    event_type: str,
    runs: list[RunRow] | None = None,
    planned: set[str] | None = None,
) -> bool:
    """Plans the work a call event causes; runs inside the transaction that recorded the event.

    Planning follows the call's state, not the event, so events in any order and any number of
    times plan the same runs: each phase is planned once (a `CallPlan` row) and each run has a
    dedupe key.

    `runs` are the call's runs already read in this transaction (their `dedupe_key` at least):
    a run among them is not planned again; `planned`, its planned phases when already read.
    Returns False when certainly nothing was written.
    """
    if not _plannable(call):
        return False
    now = timezone.now()
    facts = call_facts(call)
    if facts.crm_status not in RESOLVED:
        # The lookup at call.started ran out of time or Bitrix24 was down: look again in the
        # background; its handler calls back here once the caller is known.
        if _lookup_planned(call, runs):
            return False
        # Bitrix24 just refused or is down (or not connected): asking again at once would fail
        # the same way, for every ringing phone. Slow (pending) or not asked yet: at once.
        retry = facts.crm_status == "unavailable"
        run_plan(
            call_id=call.pk,
            action_type=InternalAction.LOOKUP_CALLER,
            dedupe_key=call_run_key(call.pk, InternalAction.LOOKUP_CALLER),
            due_at=now + LOOKUP_RETRY_AFTER if retry else now,
            label=gettext_noop("Look the caller up in Bitrix24"),
            ringing=call.status != Call.Status.ENDED,
        )
        return True
    if planned is None:
        planned = set(CallPlan.objects.filter(call=call).values_list("phase", flat=True))
    if _phases_planned(call, planned):
        return False
    want_end = _wants_end(call)
    config = scenario_config()
    schedule = work_schedule()
    office_open = office_open_at(schedule, facts, now)
    if CallPlan.Phase.START not in planned:
        unknown = facts.crm_status == NOT_FOUND
        # One statement (not get_or_create's four): the unique (call, phase) decides who plans.
        created = instance_insert(
            CallPlan(
                call=call,
                phase=CallPlan.Phase.START,
                office_open=office_open,
                trigger=Trigger.UNKNOWN_NUMBER if unknown else "",
            ),
            unique=("call", "phase"),
        )
        if created:
            steps, _ = plan_start(facts=facts, config=config, office_open=office_open, now=now)
            _steps_write(call=call, steps=steps, schedule=schedule, now=now)
    if want_end and CallPlan.Phase.END not in planned:
        plan = CallPlan(call=call, phase=CallPlan.Phase.END, office_open=office_open)
        if instance_insert(plan, unique=("call", "phase")):
            anchor = (
                ActionRun.objects.filter(
                    call=call,
                    action_type__in=CREATION_TYPES,
                    dedupe_key__startswith=call_run_key(call.pk, "unknown:"),
                )
                .values_list("dedupe_key", flat=True)
                .first()
            )
            registered = ActionRun.objects.filter(
                dedupe_key=call_run_key(call.pk, InternalAction.REGISTER_CALL)
            ).exists()
            trigger, steps = plan_end(
                facts=facts,
                config=config,
                office_open=office_open,
                now=now,
                anchor=anchor.split(":", 2)[2] if anchor else None,
                registered=InternalAction.REGISTER_CALL if registered else None,
            )
            plan.trigger = trigger or ""
            plan.save(update_fields=["trigger"])
            _steps_write(call=call, steps=steps, schedule=schedule, now=now)
            if call.outcome == Call.Outcome.ANSWERED:
                _callback_completions_plan(call=call, now=now)
                _responsible_transfer_plan(call=call, now=now, anchor=anchor)
    return True


def _steps_write(*, call: Call, steps: list[Step], schedule: WorkSchedule, now: datetime) -> None:
    runs: dict[str, ActionRun] = {}
    for step in steps:
        predecessor = None
        if step.after:
            predecessor = (
                runs.get(step.after)
                or ActionRun.objects.filter(dedupe_key=call_run_key(call.pk, step.after)).first()
            )
        if predecessor is None or predecessor.status in FINISHED_OK:
            due = due_at(
                schedule,
                base=step.base_at or now,
                delay_seconds=step.delay_seconds,
                working_time=step.working_time,
            )
            predecessor = None
        else:
            due = None
        runs[step.key] = run_plan(
            call_id=call.pk,
            action_type=step.action_type,
            dedupe_key=call_run_key(call.pk, step.key),
            due_at=due,
            params=step.params,
            after=predecessor,
            delay_seconds=step.delay_seconds,
            delay_in_working_time=step.working_time,
            label=step.label,
            ringing=call.status != Call.Status.ENDED,
        )


def _responsible_transfer_plan(*, call: Call, now: datetime, anchor: str | None) -> None:
    """Seed 004's automatic responsible update: an incoming call answered by an agent other
    than the lead's responsible makes that agent the lead's responsible (tenant setting).

    For a lead the lookup found, or one the unknown-number scenario is creating (then it waits
    for it); the handler checks again when it runs."""
    if call.direction != Call.Direction.INCOMING:
        return
    if not routing_settings_get().transfer_updates_responsible:
        return
    crm = call.crm or {}
    entity = crm.get("entity") or {}
    agent = call.device.bitrix24_user_id
    found_lead = (
        call.crm_status == "found"
        and entity.get("type") == "lead"
        and _user_id_of(crm.get("responsible")) != agent
    )
    creation = (
        ActionRun.objects.filter(dedupe_key=anchor, action_type=ActionType.CREATE_LEAD).first()
        if anchor
        else None
    )
    if not found_lead and creation is None:
        return
    waiting = creation is not None and creation.status not in FINISHED_OK
    run_plan(
        call_id=call.pk,
        action_type=InternalAction.TRANSFER_RESPONSIBLE,
        dedupe_key=call_run_key(call.pk, InternalAction.TRANSFER_RESPONSIBLE),
        due_at=None if waiting else now,
        after=creation if waiting else None,
        params={"user_id": agent},
        label=gettext_noop("Answered by another agent: make them the lead's responsible"),
    )


def _callback_completions_plan(*, call: Call, now: datetime) -> None:
    """The caller was reached: the call backs (tasks, to-dos) left by earlier calls are done in
    Bitrix24."""
    for task_run in callback_tasks_open(
        phone_number=call.phone_number, before=call.started_at or now
    ):
        run_plan(
            call_id=call.pk,
            action_type=InternalAction.COMPLETE_CALLBACK_TASK,
            # One completion per task, whichever call reached the caller first.
            dedupe_key=f"callback-done:{task_run.pk}",
            due_at=now,
            params={
                "task_run_id": task_run.pk,
                **{k: task_run.result[k] for k in ("task_id", "todo_id") if k in task_run.result},
            },
            label=gettext_noop("The caller was reached: complete the callback task"),
        )


# --- Round-robin ---------------------------------------------------------------------------------


def _routed_responsible(*, facts: CallFacts, known: Directory) -> tuple[int, str]:
    user = facts.routed_user_id
    problem = known.user_problem(user) if user else "the call has no route"
    if user and not problem:
        missed_by = _user_id_of(facts.route.get("missed_by"))
        if missed_by:
            return user, f"next in the queue (the routed user {missed_by} missed the call)"
        return user, gettext_noop("routed user")
    if not facts.agent_id:
        raise Unresolvable(f"{problem} and the device has no agent")
    return facts.agent_id, f"device's agent ({problem})"


def _user_id_of(value: Any) -> int | None:
    return value.get("id") if isinstance(value, dict) and isinstance(value.get("id"), int) else None


class Unresolvable(Exception):
    """No user can be found for the action (the reason is shown on the run)."""


def responsible_resolve(
    *, config: dict[str, Any], facts: CallFacts, known: Directory, peek: bool
) -> tuple[int, str]:
    """The user an action is for, by its strategy, and a note on how it was found.

    `peek` (the simulator) shows the next round-robin user without taking the turn.
    """
    # Unless the action says otherwise, the routed user is responsible for the call.
    strategy = config.get("responsible") or ScenarioAction.Responsible.ROUTED
    users = list(config.get("users") or [])
    if strategy == ScenarioAction.Responsible.CRM:
        user = facts.responsible_id
        problem = known.user_problem(user) if user else "the caller has no CRM responsible"
        if user and not problem:
            return user, gettext_noop("CRM responsible")
        if not facts.agent_id:
            raise Unresolvable(f"{problem} and the device has no agent")
        return facts.agent_id, f"device's agent ({problem})"
    if strategy == ScenarioAction.Responsible.AGENT:
        if not facts.agent_id:
            raise Unresolvable("the device has no agent")
        return facts.agent_id, gettext_noop("device's agent")
    if strategy == ScenarioAction.Responsible.ROUTED:
        return _routed_responsible(facts=facts, known=known)
    if strategy == ScenarioAction.Responsible.FIXED:
        if not users:
            raise Unresolvable("no fixed user is configured")
        problem = known.user_problem(users[0])
        if problem:
            raise Unresolvable(problem)
        return users[0], gettext_noop("fixed user")
    # Round-robin over the chosen users, or over every agent carrying a bridge device.
    candidates = users or agents()
    key = "users:" + ",".join(map(str, sorted(set(users)))) if users else "agents"
    if known.synced:
        candidates = [user for user in candidates if known.users.get(user)]
    chosen = round_robin_pick(key=key, candidates=candidates, peek=peek)
    if chosen is None:
        raise Unresolvable("no active user in the round-robin set")
    return chosen, gettext_noop("round-robin")


# --- Configuration -----------------------------------------------------------------------------


# --- Routing by CRM data -----------------------------------------------------------------------
