"""Reads of the scenario engine: configuration, office hours, runs, directory checks."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import Count, Min, Q, QuerySet
from django.utils import timezone

from calls.models import Call, Device
from scenarios.configuration import (
    FORMAT_NAME,
    FORMAT_VERSION,
    WEEKDAYS,
    action_to_data,
)
from scenarios.models import (
    ActionRun,
    ActionType,
    Holiday,
    OfficeHours,
    RoutingRule,
    RoutingSettings,
    Scenario,
    ScenarioAction,
)
from scenarios.outbox import late_filter
from scenarios.planning import ScenarioConfig
from scenarios.routing import (
    CALLER_TYPES,
    DEAL_FIELDS,
    ENTITY_FIELDS,
    SOURCE_DEAL,
    SOURCE_ENTITY,
    SOURCE_ENTITY_TYPE,
    VALUELESS,
    Condition,
    Rule,
)
from scenarios.worktime import WorkSchedule
from tenants.memo import tenant_memo

Action = ScenarioAction


def tenant_timezone() -> str:
    """The current tenant's timezone, also where `schema_context` left only a schema name."""
    named = getattr(getattr(connection, "tenant", None), "timezone", None)
    if named:
        return named
    from tenants.models import Tenant

    def load() -> str:
        schema = connection.schema_name
        found = Tenant.objects.filter(schema_name=schema).values_list("timezone", flat=True)
        return found.first() or "UTC"

    return tenant_memo("tenants.timezone", load, seconds=60)


def work_schedule() -> WorkSchedule:
    """The current tenant's office hours and holidays."""
    weekly: dict[int, list[tuple[Any, Any]]] = {}
    for period in OfficeHours.objects.order_by("weekday", "opens_at"):
        weekly.setdefault(period.weekday, []).append((period.opens_at, period.closes_at))
    holidays = list(Holiday.objects.values_list("date", "every_year"))
    return WorkSchedule(
        timezone=tenant_timezone(),
        weekly={day: tuple(periods) for day, periods in weekly.items()},
        holidays=frozenset(day for day, every_year in holidays if not every_year),
        yearly_holidays=frozenset(
            (day.month, day.day) for day, every_year in holidays if every_year
        ),
    )


def scenario_config() -> ScenarioConfig:
    """The active scenarios with their active actions, as planning reads them."""
    scenarios: dict[str, tuple[str, tuple[dict[str, Any], ...]]] = {}
    for scenario in Scenario.objects.filter(is_active=True).prefetch_related("actions"):
        actions = tuple(
            {**action.as_config(), "id": action.pk, "position": action.position}
            for action in scenario.actions.all()
            if action.is_active
        )
        scenarios[scenario.trigger] = (scenario.name, actions)
    return ScenarioConfig(scenarios=scenarios)


def scenario_config_export() -> dict[str, Any]:
    """Scenarios, office hours and holidays in the documented JSON format (routing excluded:
    `configuration.config_export` gives the whole document)."""
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "exported_at": timezone.now().isoformat(timespec="seconds"),
        "office_hours": {
            "weekly": [
                {
                    "weekday": WEEKDAYS[period.weekday],
                    "opens_at": f"{period.opens_at:%H:%M}",
                    "closes_at": f"{period.closes_at:%H:%M}",
                }
                for period in OfficeHours.objects.order_by("weekday", "opens_at")
            ],
            "holidays": [
                {"date": holiday.date.isoformat(), "name": holiday.name, "every_year": True}
                if holiday.every_year
                else {"date": holiday.date.isoformat(), "name": holiday.name}
                for holiday in Holiday.objects.order_by("date")
            ],
        },
        "scenarios": [
            {
                "trigger": scenario.trigger,
                "name": scenario.name,
                "is_active": scenario.is_active,
                "description": scenario.description,
                "actions": [
                    action_to_data(action.as_config()) for action in scenario.actions.all()
                ],
            }
            for scenario in Scenario.objects.prefetch_related("actions").order_by("trigger")
        ],
    }


# --- Runs ---------------------------------------------------------------------------------------


def agents() -> list[int]:
    """The Bitrix24 users who carry an active bridge device ("the tenant's agents")."""
    return sorted(
        set(
            Device.objects.filter(revoked_at__isnull=True).values_list(
                "bitrix24_user_id", flat=True
            )
        )
    )


def call_reached_since(*, phone_number: str, since: datetime, exclude_call_id: int) -> Call | None:
    """An answered call with this number, in either direction, that started after `since`
    (one still in progress counts: the caller is on the line)."""
    if not phone_number:
        return None
    return (
        Call.objects.filter(phone_number=phone_number, started_at__gt=since)
        .filter(Q(outcome=Call.Outcome.ANSWERED) | Q(answered_at__isnull=False))
        .exclude(pk=exclude_call_id)
        .order_by("started_at")
        .first()
    )


def callback_tasks_open(*, phone_number: str, before: datetime) -> list[ActionRun]:
    """Callback tasks created in Bitrix24 for this number by calls before `before`."""
    return list(
        ActionRun.objects.filter(
            action_type=ActionType.CALLBACK_TASK,
            status=ActionRun.Status.DONE,
            call__phone_number=phone_number,
            result__has_key="task_id",
        )
        .filter(Q(call__started_at__lt=before) | Q(call__started_at__isnull=True))
        .exclude(result__has_key="completed")
    )


# --- Bitrix24 directory checks --------------------------------------------------------------


@dataclass(frozen=True)
class Directory:
    """What crm's synced directory says exists; `synced` False means nothing can be judged."""

    synced: bool = False
    users: dict[int, bool] = field(default_factory=dict)  # id -> active
    names: dict[int, str] = field(default_factory=dict)
    lead_statuses: tuple[str, ...] = ()  # in the portal's order
    lead_sources: frozenset[str] = frozenset()
    pipelines: frozenset[int] = frozenset()
    stages: dict[int, tuple[str, ...]] = field(default_factory=dict)  # pipeline -> stage ids
    # Read for routing only (routing_directory): departments, the CRM field lists of the entity
    # types whose lists were synced, recent work-day statuses.
    departments: frozenset[int] = frozenset()
    fields: dict[str, frozenset[str]] = field(default_factory=dict)
    timeman: dict[int, str] = field(default_factory=dict)

    def user_problem(self, user_id: int) -> str | None:
        if not self.synced:
            return None
        if user_id not in self.users:
            return f"Bitrix24 user {user_id} no longer exists"
        if not self.users[user_id]:
            return f"Bitrix24 user {user_id} is inactive"
        return None

    def user_name(self, user_id: int) -> str:
        return self.names.get(user_id, "")


def runs_late(runs: QuerySet[ActionRun] | None = None) -> QuerySet[ActionRun]:
    """Runs due for longer than ActionRun.LATE_AFTER and not started."""
    runs = ActionRun.objects.all() if runs is None else runs
    return runs.filter(late_filter(timezone.now()))


def runs_attention() -> dict[str, Any]:
    """What in the outbox needs someone: late runs (and by how long the oldest) and failed ones."""
    now = timezone.now()
    late = late_filter(now)
    row = ActionRun.objects.filter(
        status__in=[ActionRun.Status.SCHEDULED, ActionRun.Status.FAILED]
    ).aggregate(
        late=Count("pk", filter=late),
        oldest_late=Min("due_at", filter=late),
        failed=Count("pk", filter=Q(status=ActionRun.Status.FAILED)),
    )
    oldest = row.pop("oldest_late")
    return {**row, "oldest_late_by": now - oldest if oldest else None}


def directory() -> Directory:
    """crm's synced Bitrix24 directory (users, lead statuses and sources, pipelines, stages).

    Rows Bitrix24 no longer has are kept by crm with `removed` set; here they count as gone.
    """
    from crm.selectors import (
        directory_lead_sources,
        directory_lead_statuses,
        directory_pipelines,
        directory_stages,
        directory_users,
    )

    users = list(directory_users(active_only=False).values_list("id", "active", "name"))
    if not users:
        return Directory()  # never synced: nothing can be called missing
    stages: dict[int, list[str]] = {}
    for pipeline_id, stage_id in (
        directory_stages().order_by("sort").values_list("pipeline_id", "stage_id")
    ):
        stages.setdefault(pipeline_id, []).append(stage_id)
    return Directory(
        synced=True,
        users={user_id: active for user_id, active, _ in users},
        names={user_id: name for user_id, _, name in users},
        lead_statuses=tuple(
            directory_lead_statuses().order_by("sort").values_list("status_id", flat=True)
        ),
        lead_sources=frozenset(directory_lead_sources().values_list("source_id", flat=True)),
        pipelines=frozenset(directory_pipelines().values_list("id", flat=True)),
        stages={pipeline: tuple(ids) for pipeline, ids in stages.items()},
    )


# A work-day status older than this is not trusted (the refresh stopped, e.g. no timeman scope).
TIMEMAN_FRESH_FOR = timedelta(minutes=10)


def routing_directory(*, with_fields: bool = True) -> Directory:
    """`directory()` plus what routing rules are checked against (departments, CRM fields;
    not needed to route a call: `with_fields=False`) and routed by (work-day statuses).

    Without the fields it is read for every call, so memoised in the process for a few
    seconds (tenants.memo); crm forgets it when it syncs the directory or work-day statuses.
    """
    from crm.directory import DIRECTORY_MEMO

    if not with_fields:
        return tenant_memo(DIRECTORY_MEMO, lambda: _routing_directory(with_fields=False))
    return _routing_directory(with_fields=True)


def _routing_directory(*, with_fields: bool) -> Directory:
    from crm.models import Bitrix24User
    from crm.selectors import directory_departments, directory_entity_fields

    known = directory()
    if not known.synced:
        return known
    fresh_since = timezone.now() - TIMEMAN_FRESH_FOR
    timeman = dict(
        Bitrix24User.objects.filter(timeman_checked_at__gte=fresh_since)
        .exclude(timeman_status="")
        .values_list("id", "timeman_status")
    )
    known = replace(known, timeman=timeman)
    if not with_fields:
        return known
    # Every type whose list was ever synced is judged, even if all its fields are gone now.
    fields: dict[str, set[str]] = {}
    for entity_type, name, removed in directory_entity_fields(include_removed=True).values_list(
        "entity_type", "name", "removed"
    ):
        names = fields.setdefault(entity_type, set())
        if not removed:
            names.add(name)
    return replace(
        known,
        departments=frozenset(directory_departments().values_list("id", flat=True)),
        fields={entity_type: frozenset(names) for entity_type, names in fields.items()},
    )


def action_reference_problems(
    config: dict[str, Any], *, known: Directory, for_execution: bool = False
) -> list[str]:
    """Users, statuses, sources, pipelines or stages the action names that Bitrix24 lacks.

    Round-robin passes over users who left by design: in the admin they are flagged, but they
    do not stop the action from running (`for_execution`).
    """
    if not known.synced:
        return []
    problems = []
    kind = config["action_type"]
    round_robin = config.get("responsible") == Action.Responsible.ROUND_ROBIN
    if kind == ActionType.NOTIFY or config.get("responsible") in (
        Action.Responsible.FIXED,
        Action.Responsible.ROUND_ROBIN,
    ):
        for user_id in config.get("users") or []:
            problem = known.user_problem(user_id)
            if problem is None or (round_robin and for_execution):
                continue
            problems.append(problem)
    if kind == ActionType.CREATE_LEAD:
        status = config.get("lead_status_id")
        if status and status not in known.lead_statuses:
            problems.append(f"lead status {status!r} no longer exists")
        source = config.get("lead_source_id")
        if source and source not in known.lead_sources:
            problems.append(f"lead source {source!r} no longer exists")
    if kind == ActionType.CREATE_DEAL:
        pipeline = config.get("pipeline_id")
        if pipeline is not None and pipeline not in known.pipelines:
            problems.append(f"pipeline {pipeline} no longer exists")
        stage = config.get("stage_id")
        if stage and stage not in known.stages.get(pipeline or 0, ()):
            problems.append(f"stage {stage!r} no longer exists in pipeline {pipeline or 0}")
    return problems


def actions_with_problems() -> dict[int, list[str]]:
    """Configured actions whose references are gone, by action id (for the admin's flags)."""
    known = directory()
    if not known.synced:
        return {}
    flagged = {}
    for action in ScenarioAction.objects.all():
        problems = action_reference_problems(action.as_config(), known=known)
        if problems:
            flagged[action.pk] = problems
    return flagged


# --- Routing by CRM data ------------------------------------------------------------------------

# Work-day statuses that make a user unavailable (TIMEMAN_STATUS; REFERENCE 3.2, 5.7).
TIMEMAN_UNAVAILABLE = frozenset({"CLOSED", "PAUSED", "EXPIRED"})


ROUTING_SETTINGS_MEMO = "scenarios.routing_settings"


def routing_settings_get() -> RoutingSettings:
    """The tenant's routing settings (the defaults when none were saved); read for every call,
    so memoised in the process for a few seconds (tenants.memo)."""
    return tenant_memo(
        ROUTING_SETTINGS_MEMO,
        lambda: RoutingSettings.objects.filter(singleton=1).first() or RoutingSettings(),
    )


def routing_rules(*, known: Directory | None = None) -> list[Rule]:
    """The enabled rules in order, as the evaluator reads them (department members resolved)."""
    from crm.selectors import department_members

    rules = []
    for row in RoutingRule.objects.filter(enabled=True).prefetch_related("conditions"):
        users = list(row.users or [])
        if row.target == RoutingRule.Target.ROUND_ROBIN and row.department_id:
            users = department_members(department_id=row.department_id)
        rules.append(
            Rule(
                id=row.pk,
                name=row.name,
                conditions=tuple(c.as_condition() for c in row.conditions.all()),
                target=row.target,
                user_ids=tuple(users),
                broken=row.broken,
                broken_reason=row.broken_reason,
            )
        )
    return rules


def user_unavailable_reason(
    user_id: int, *, known: Directory, settings: RoutingSettings
) -> str | None:
    """Why a user cannot take a call now, or None when they can (or nothing says otherwise)."""
    problem = known.user_problem(user_id)
    if problem:
        return problem
    status = known.timeman.get(user_id, "")
    if settings.use_timeman and status in TIMEMAN_UNAVAILABLE:
        return f"work day {status.lower()}"
    return None


def condition_reference_problem(condition: Condition, *, known: Directory) -> str:
    """What a condition names that Bitrix24 no longer has ("" when all is there)."""
    if not known.synced or condition.source == SOURCE_ENTITY_TYPE:
        return ""
    problems = []
    domain = ENTITY_FIELDS if condition.source == SOURCE_ENTITY else DEAL_FIELDS
    if condition.field not in domain:
        types = CALLER_TYPES if condition.source == SOURCE_ENTITY else ("deal",)
        synced = [t for t in types if t in known.fields]
        # Judged only when crm has read the field lists; any caller type having it is enough.
        if synced and not any(condition.field in known.fields[t] for t in synced):
            problems.append(f"field {condition.field} no longer exists in Bitrix24")
    values = [] if condition.operator in VALUELESS else list(condition.values)
    if condition.field == "responsible" and condition.field in domain:
        for value in values:
            if not value.isdigit() or int(value) not in known.users:
                problems.append(f"user {value} no longer exists in Bitrix24")
    elif condition.source == SOURCE_DEAL and condition.field == "pipeline":
        problems += [
            f"pipeline {value} no longer exists in Bitrix24"
            for value in values
            if not value.isdigit() or int(value) not in known.pipelines
        ]
    elif condition.source == SOURCE_DEAL and condition.field == "stage":
        stages = {stage for ids in known.stages.values() for stage in ids}
        problems += [
            f"stage {value} no longer exists in Bitrix24" for value in values if value not in stages
        ]
    elif condition.source == SOURCE_ENTITY and condition.field == "status":
        problems += [
            f"lead status {value} no longer exists in Bitrix24"
            for value in values
            if value not in known.lead_statuses
        ]
    elif condition.source == SOURCE_ENTITY and condition.field == "source":
        problems += [
            f"source {value} no longer exists in Bitrix24"
            for value in values
            if value not in known.lead_sources
        ]
    return "; ".join(problems)


def target_reference_problems(
    *, target: str, users: list[int], department_id: int | None, known: Directory
) -> list[str]:
    """Users or the department a rule's target names that Bitrix24 no longer has.

    An inactive user is not a broken reference: they are unavailable, and the call falls
    through to the next member of the queue (or "Others").
    """
    if not known.synced:
        return []
    problems = [
        f"user {user} no longer exists in Bitrix24" for user in users if user not in known.users
    ]
    if department_id and known.departments and department_id not in known.departments:
        problems.append(f"department {department_id} no longer exists in Bitrix24")
    return problems


def routing_rule_problems(
    rule: RoutingRule, *, known: Directory
) -> tuple[dict[int, str], list[str]]:
    """A saved rule's broken references: by condition id, and of its target."""
    conditions = {
        condition.pk: condition_reference_problem(condition.as_condition(), known=known)
        for condition in rule.conditions.all()
    }
    target = target_reference_problems(
        target=rule.target,
        users=list(rule.users or []),
        department_id=rule.department_id,
        known=known,
    )
    return conditions, target


def route_explain(route: dict[str, Any]) -> list[dict[str, Any]]:
    """A stored route's explanation as rows people read: what was tried, in order, and why it
    did or did not decide (the call page and the rule tester show these)."""
    names = directory().names
    unavailable = route.get("unavailable") or {}

    def who(user_id: Any) -> str:
        if not user_id:
            return "nobody"
        name = names.get(int(user_id), "")
        reason = unavailable.get(str(user_id))
        label = f"{name} ({user_id})" if name else f"user {user_id}"
        return f"{label}, {reason}" if reason else label

    rows = []
    for step in route.get("explanation") or []:
        row: dict[str, Any] = {"title": step.get("rule") or step.get("step"), "conditions": []}
        if "rule" in step and "skipped" in step:
            row["outcome"] = f"skipped: {step.get('reason') or step['skipped']}"
            row["kind"] = "broken"
        elif "rule" in step:
            row["conditions"] = step.get("conditions") or []
            if not step.get("matched"):
                row["outcome"], row["kind"] = "does not match", "no"
            elif "chosen" in step:
                row["outcome"], row["kind"] = f"matches: routed to {who(step['chosen'])}", "yes"
            else:
                tried = ", ".join(who(user) for user in step.get("candidates") or []) or "nobody"
                row["outcome"] = f"matches, but nobody is available ({tried}): to Others"
                row["kind"] = "fell"
        elif "skipped" in step:
            row["outcome"], row["kind"] = f"skipped: {step['skipped']}", "no"
        elif "available" in step:
            available = step["available"]
            row["outcome"] = (
                f"routed to {who(step['user_id'])}"
                if available
                else f"not available: {who(step['user_id'])}"
            )
            row["kind"] = "yes" if available else "fell"
        elif "user_id" in step:
            detail = f" ({step['detail']})" if step.get("detail") else ""
            row["outcome"], row["kind"] = f"routed to {who(step['user_id'])}{detail}", "yes"
        else:
            row["outcome"], row["kind"] = step.get("detail", ""), "info"
        rows.append(row)
    return rows
