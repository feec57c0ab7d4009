"""What a call causes in Bitrix24: the planning side of the scenario engine, and the writes of
its configuration (import, defaults, round-robin)."""

from __future__ import annotations

import logging
import math
from datetime import datetime, time, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from calls.models import Call
from scenarios.configuration import (
    ACTION_DEFAULTS,
    CREATION_TYPES,
    DEFAULT_CONFIGURATION,
    WEEKDAYS,
    ConfigError,
    config_errors,
)
from scenarios.models import (
    ActionRun,
    ActionType,
    CallPlan,
    Holiday,
    OfficeHours,
    RoundRobinCursor,
    RoutingCondition,
    RoutingRule,
    RoutingSettings,
    Scenario,
    ScenarioAction,
    Trigger,
)
from scenarios.outbox import FINISHED_OK, run_plan
from scenarios.planning import (
    NOT_FOUND,
    RESOLVED,
    CallFacts,
    Step,
    office_open_at,
    plan_end,
    plan_start,
)
from scenarios.routing import OTHERS_RULE, Rule, route_decide
from scenarios.selectors import (
    ROUTING_SETTINGS_MEMO,
    Directory,
    agents,
    callback_tasks_open,
    routing_directory,
    routing_rule_problems,
    routing_rules,
    routing_settings_get,
    scenario_config,
    user_unavailable_reason,
    work_schedule,
)
from scenarios.worktime import WorkSchedule, due_at
from tenants.memo import tenant_memo_forget

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
    )


def route_for_outcome(call: Call) -> dict[str, Any]:
    """The route the call's actions follow (see route_effective)."""
    return route_effective(
        route=call.route or {},
        direction=call.direction,
        ended=call.status == Call.Status.ENDED,
        outcome=call.outcome,
    )


def route_effective(
    *, route: dict[str, Any], direction: str, ended: bool, outcome: str
) -> dict[str, Any]:
    """For a missed incoming call, per the tenant's setting, the next member of the queue takes
    the routed user's place (they did not answer); otherwise the route as decided."""
    route = dict(route)
    unanswered = ended and outcome not in ("", Call.Outcome.ANSWERED, Call.Outcome.REJECTED)
    following = route.get("next")
    if (
        direction == Call.Direction.INCOMING
        and unanswered
        and following
        and routing_settings_get().missed_to == RoutingSettings.MissedTo.NEXT
    ):
        route.update(user=following["user"], rule=following["rule"], missed_by=route.get("user"))
    return route


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


def _lookup_planned(call: Call, runs: list[dict[str, Any]] | None) -> bool:
    """The background lookup is among the call's runs as read (runs are never deleted)."""
    key = call_run_key(call.pk, "lookup_caller")
    return runs is not None and any(run["dedupe_key"] == key for run in runs)


def _wants_end(call: Call) -> bool:
    return call.status == Call.Status.ENDED and bool(call.outcome)


def _phases_planned(call: Call, planned: set[str]) -> bool:
    """Every phase the call can be planned for now is planned already."""
    return CallPlan.Phase.START in planned and (
        CallPlan.Phase.END in planned or not _wants_end(call)
    )


def scenario_planning_due(*, call: Call, runs: list[dict[str, Any]], planned: set[str]) -> bool:
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
    runs: list[dict[str, Any]] | None = None,
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
            action_type="lookup_caller",
            dedupe_key=call_run_key(call.pk, "lookup_caller"),
            due_at=now + LOOKUP_RETRY_AFTER if retry else now,
            label="Look the caller up in Bitrix24",
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
        _, created = CallPlan.objects.get_or_create(
            call=call,
            phase=CallPlan.Phase.START,
            defaults={
                "office_open": office_open,
                "trigger": Trigger.UNKNOWN_NUMBER if unknown else "",
            },
        )
        if created:
            steps, _ = plan_start(facts=facts, config=config, office_open=office_open, now=now)
            _steps_write(call=call, steps=steps, schedule=schedule, now=now)
    if want_end and CallPlan.Phase.END not in planned:
        plan, created = CallPlan.objects.get_or_create(
            call=call, phase=CallPlan.Phase.END, defaults={"office_open": office_open}
        )
        if created:
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
                dedupe_key=call_run_key(call.pk, "register_call")
            ).exists()
            trigger, steps = plan_end(
                facts=facts,
                config=config,
                office_open=office_open,
                now=now,
                anchor=anchor.split(":", 2)[2] if anchor else None,
                registered="register_call" if registered else None,
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
        action_type="transfer_responsible",
        dedupe_key=call_run_key(call.pk, "transfer_responsible"),
        due_at=None if waiting else now,
        after=creation if waiting else None,
        params={"user_id": agent},
        label="Answered by another agent: make them the lead's responsible",
    )


def _callback_completions_plan(*, call: Call, now: datetime) -> None:
    """The caller was reached: the callback tasks left by earlier calls are done in Bitrix24."""
    for task_run in callback_tasks_open(
        phone_number=call.phone_number, before=call.started_at or now
    ):
        run_plan(
            call_id=call.pk,
            action_type="complete_callback_task",
            # One completion per task, whichever call reached the caller first.
            dedupe_key=f"callback-done:{task_run.pk}",
            due_at=now,
            params={"task_run_id": task_run.pk, "task_id": task_run.result["task_id"]},
            label="The caller was reached: complete the callback task",
        )


# --- Round-robin ---------------------------------------------------------------------------------


def round_robin_pick(*, key: str, candidates: list[int], peek: bool = False) -> int | None:
    """The next user of the set after the one who got the last assignment.

    The cursor row is locked while choosing, so concurrent calls take turns instead of getting
    the same user; inactive users must already be filtered out of `candidates`.
    """
    ordered = sorted(set(candidates))
    if not ordered:
        return None
    if peek:
        cursor = RoundRobinCursor.objects.filter(key=key).first()
        last = cursor.last_user_id if cursor else None
        return next((user for user in ordered if last is not None and user > last), ordered[0])
    with transaction.atomic():
        RoundRobinCursor.objects.get_or_create(key=key)
        cursor = RoundRobinCursor.objects.select_for_update().get(key=key)
        last = cursor.last_user_id
        chosen = next((user for user in ordered if last is not None and user > last), ordered[0])
        cursor.last_user_id = chosen
        cursor.assignments += 1
        cursor.save(update_fields=["last_user_id", "assignments", "updated_at"])
    return chosen


def _routed_responsible(*, facts: CallFacts, known: Directory) -> tuple[int, str]:
    user = facts.routed_user_id
    problem = known.user_problem(user) if user else "the call has no route"
    if user and not problem:
        missed_by = _user_id_of(facts.route.get("missed_by"))
        if missed_by:
            return user, f"next in the queue (the routed user {missed_by} missed the call)"
        return user, "routed user"
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
            return user, "CRM responsible"
        if not facts.agent_id:
            raise Unresolvable(f"{problem} and the device has no agent")
        return facts.agent_id, f"device's agent ({problem})"
    if strategy == ScenarioAction.Responsible.AGENT:
        if not facts.agent_id:
            raise Unresolvable("the device has no agent")
        return facts.agent_id, "device's agent"
    if strategy == ScenarioAction.Responsible.ROUTED:
        return _routed_responsible(facts=facts, known=known)
    if strategy == ScenarioAction.Responsible.FIXED:
        if not users:
            raise Unresolvable("no fixed user is configured")
        problem = known.user_problem(users[0])
        if problem:
            raise Unresolvable(problem)
        return users[0], "fixed user"
    # Round-robin over the chosen users, or over every agent carrying a bridge device.
    candidates = users or agents()
    key = "users:" + ",".join(map(str, sorted(set(users)))) if users else "agents"
    if known.synced:
        candidates = [user for user in candidates if known.users.get(user)]
    chosen = round_robin_pick(key=key, candidates=candidates, peek=peek)
    if chosen is None:
        raise Unresolvable("no active user in the round-robin set")
    return chosen, "round-robin"


# --- Configuration -----------------------------------------------------------------------------


def scenario_config_import(*, data: Any) -> dict[str, int]:
    """Replaces the scenarios, office hours and holidays; invalid input changes nothing.

    The scenario part of a configuration document: `configuration.config_import` imports the
    whole document (routing included) and is what the admin and the commands call.
    """
    errors = config_errors(data)
    if errors:
        raise ConfigError(errors)
    hours = data.get("office_hours", {})
    with transaction.atomic():
        Scenario.objects.all().delete()
        OfficeHours.objects.all().delete()
        Holiday.objects.all().delete()
        OfficeHours.objects.bulk_create(
            OfficeHours(
                weekday=WEEKDAYS.index(period["weekday"]),
                opens_at=time.fromisoformat(period["opens_at"]),
                closes_at=time.fromisoformat(period["closes_at"]),
            )
            for period in hours.get("weekly", [])
        )
        Holiday.objects.bulk_create(
            Holiday(
                date=holiday["date"],
                name=holiday.get("name", ""),
                every_year=holiday.get("every_year", False),
            )
            for holiday in hours.get("holidays", [])
        )
        actions = 0
        for item in data.get("scenarios", []):
            scenario = Scenario.objects.create(
                trigger=item["trigger"],
                name=item["name"].strip(),
                is_active=item.get("is_active", True),
                description=item.get("description", ""),
            )
            ScenarioAction.objects.bulk_create(
                ScenarioAction(
                    scenario=scenario, position=(index + 1) * 10, **{**ACTION_DEFAULTS, **action}
                )
                for index, action in enumerate(item.get("actions", []))
            )
            actions += len(item.get("actions", []))
    return {
        "scenarios": len(data.get("scenarios", [])),
        "actions": actions,
        "office_hours": len(hours.get("weekly", [])),
        "holidays": len(hours.get("holidays", [])),
    }


def scenarios_install_defaults() -> bool:
    """The default scenarios of operations.md, for a tenant that has none yet."""
    if Scenario.objects.exists():
        return False
    scenario_config_import(data=DEFAULT_CONFIGURATION)
    return True


# --- Routing by CRM data -----------------------------------------------------------------------

OUTGOING_RULE = None  # an outgoing call is not routed: the agent who dials it takes it


def route_decide_call(
    *,
    facts: dict[str, Any] | None,
    crm_status: str,
    direction: str,
    agent_id: int,
    peek: bool = False,
) -> dict[str, Any]:
    """Who should take a call, and why: the route stored on the call.

    `facts` are the caller's routing facts (crm.mapping.routing_facts). Without them in time
    (the lookup is pending or Bitrix24 is unavailable) the call goes to "Others" and the route
    is provisional: it is decided again once the background lookup knows the caller. `peek`
    (the bridge's lookup, the admin's test box) shows the decision without taking a
    round-robin turn. The bridge sees `user` and `rule` (calls.selectors.route_public); the
    rest is the audit trail: `explanation` (every step and condition), `next` (the user the
    call would go to if the routed user cannot take it), `unavailable` (who was passed over).
    """
    known = routing_directory(with_fields=False)
    settings = routing_settings_get()
    unavailable: dict[str, str] = {}

    def available(user_id: int) -> bool:
        reason = user_unavailable_reason(user_id, known=known, settings=settings)
        if reason:
            unavailable[str(user_id)] = reason
        return reason is None

    def person(user_id: int) -> dict[str, Any]:
        return {"id": user_id, "name": known.user_name(user_id)}

    others, others_note = _others_user(settings=settings, agent_id=agent_id, available=available)
    route: dict[str, Any] = {
        "crm_status": crm_status,
        "decided_at": timezone.now().isoformat(),
        "provisional": False,
    }
    if direction != Call.Direction.INCOMING:
        return {
            **route,
            "user": person(agent_id),
            "rule": OUTGOING_RULE,
            "provisional": not direction,
            "explanation": [
                {"step": "Not routed", "detail": f"{direction or 'unknown'} direction: the agent"}
            ],
        }
    if facts is None or crm_status not in RESOLVED:
        return {
            **route,
            "user": person(others),
            "rule": OTHERS_RULE,
            "provisional": True,
            "next": None,
            "explanation": [
                {
                    "step": "CRM data",
                    "detail": f"not known in time ({crm_status or 'no lookup'}): "
                    "routed to Others, decided again once the caller is known",
                },
                {"step": OTHERS_RULE, "user_id": others, **others_note},
            ],
        }
    rules = routing_rules()

    def pick(peeking: bool) -> Any:
        def choose(rule: Rule, users: list[int]) -> int | None:
            return round_robin_pick(key=f"route:{rule.id}", candidates=users, peek=peeking)

        return choose

    decision = route_decide(
        facts=facts,
        rules=rules,
        others_user_id=others,
        responsible_first=settings.responsible_first,
        is_available=available,
        round_robin_pick=pick(peek),
    )
    if decision.rule == OTHERS_RULE and others_note:
        decision.explanation[-1].update(others_note)
    # Who takes it when the routed user cannot: the same decision without them.
    chosen = decision.user_id
    fallback = route_decide(
        facts=facts,
        rules=rules,
        others_user_id=others,
        responsible_first=settings.responsible_first,
        is_available=lambda user: user != chosen and available(user),
        round_robin_pick=pick(True),
    )
    next_user = fallback.user_id if fallback.user_id not in (None, chosen) else None
    return {
        **route,
        "user": person(chosen or agent_id),
        "rule": decision.rule,
        "rule_id": decision.rule_id,
        "next": (
            {"user": person(next_user), "rule": fallback.rule} if next_user is not None else None
        ),
        "unavailable": unavailable,
        "explanation": decision.explanation,
    }


def _others_user(
    *, settings: RoutingSettings, agent_id: int, available: Any
) -> tuple[int, dict[str, Any]]:
    """The "Others" user: the device's agent, or the tenant's fixed user when available."""
    fixed = settings.others_user_id
    if settings.others_target == RoutingSettings.OthersTarget.USER and fixed:
        if available(fixed):
            return fixed, {}
        return agent_id, {"detail": f"the Others user {fixed} is unavailable: the device's agent"}
    return agent_id, {}


def route_rule_explanation(route: dict[str, Any]) -> str:
    """One line for the audit trail: who, by which rule."""
    user = route.get("user") or {}
    who = f"{user.get('name') or 'user'} ({user.get('id')})"
    rule = route.get("rule") or "not routed"
    return f"Routed to {who} by {rule!r}" + (" (provisional)" if route.get("provisional") else "")


def routing_rules_check(*, rule_ids: list[int] | None = None) -> int:
    """Marks rules and conditions broken (or fixed) against the synced Bitrix24 directory.

    Runs after every directory sync (crm.signals.directory_synced) and when a rule is saved.
    A broken rule is skipped by routing until what it names exists again. Returns how many of
    the checked rules are broken.
    """
    known = routing_directory()
    now = timezone.now()
    rules = RoutingRule.objects.prefetch_related("conditions")
    if rule_ids is not None:
        rules = rules.filter(pk__in=rule_ids)
    broken = 0
    with transaction.atomic():
        for rule in rules:
            by_condition, target = routing_rule_problems(rule, known=known)
            reasons = []
            for condition in rule.conditions.all():
                reason = by_condition.get(condition.pk, "")
                if condition.broken_reason != reason:
                    RoutingCondition.objects.filter(pk=condition.pk).update(broken_reason=reason)
                if reason:
                    reasons.append(f"condition '{condition}': {reason}")
            reasons += [f"target: {problem}" for problem in target]
            RoutingRule.objects.filter(pk=rule.pk).update(
                broken_reason="; ".join(reasons), checked_at=now
            )
            broken += bool(reasons)
    return broken


def routing_on_directory_synced(**kwargs: Any) -> None:
    routing_rules_check()


def routing_settings_forget(**kwargs: Any) -> None:
    """The routing settings changed: this process reads them again (others within seconds)."""
    tenant_memo_forget(ROUTING_SETTINGS_MEMO)


def routing_rule_move(*, rule_id: int, step: int) -> bool:
    """Moves a rule `step` places (-1 up, +1 down); positions are renumbered 10, 20, ..."""
    with transaction.atomic():
        rules = list(RoutingRule.objects.select_for_update().order_by("position", "pk"))
        index = next((i for i, rule in enumerate(rules) if rule.pk == rule_id), None)
        if index is None or not 0 <= index + step < len(rules):
            return False
        rules.insert(index + step, rules.pop(index))
        for position, rule in enumerate(rules, start=1):
            if rule.position != position * 10:
                RoutingRule.objects.filter(pk=rule.pk).update(position=position * 10)
    return True


def routing_settings_ensure() -> RoutingSettings:
    settings, _ = RoutingSettings.objects.get_or_create(singleton=1)
    return settings


def routing_availability_refresh() -> int:
    """Refreshes users' work-day status (TIMEMAN_STATUS) when the tenant routes by it.

    Every minute (beat); one request per 50 active users. A portal that refuses (no timeman
    scope, not connected) leaves statuses unknown, which routing treats as available.
    """
    from crm.errors import Bitrix24Error
    from crm.services import directory_timeman_refresh

    if not routing_settings_get().use_timeman:
        return 0
    try:
        return len(directory_timeman_refresh())
    except Bitrix24Error as exc:
        logger.info("Work-day statuses not refreshed: %s", exc)
        return 0


def route_preview(*, phone: str, agent_id: int) -> dict[str, Any]:
    """What routing would do for an incoming call from `phone` now (the admin's test box).

    A fresh lookup (no budget, not from the cache) and a decision that takes no round-robin
    turn: nothing is created or assigned. Raises crm's InvalidPhoneNumber for non-numbers.
    """
    from crm.errors import Bitrix24Error
    from crm.mapping import routing_facts
    from crm.selectors import crm_find_by_phone

    try:
        lookup = crm_find_by_phone(phone=phone, budget_s=math.inf, use_cache=False)
    except Bitrix24Error as exc:  # refused (e.g. scopes): shown, and routed as the bridge would
        crm, status, error, facts = {"status": "unavailable"}, "unavailable", str(exc), None
    else:
        crm, status, error = lookup.as_api(), lookup.status, lookup.error
        phone = lookup.phone_e164
        facts = routing_facts(lookup) if lookup.status in RESOLVED else None
    route = route_decide_call(
        facts=facts,
        crm_status=status,
        direction=Call.Direction.INCOMING,
        agent_id=agent_id,
        peek=True,
    )
    return {"phone": phone, "crm": crm, "error": error, "facts": facts, "route": route}
