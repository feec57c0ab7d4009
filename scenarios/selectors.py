"""Reads of the scenario engine: configuration, office hours, runs, directory checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db.models import Count, Min, Q, QuerySet
from django.utils import timezone

from calls.models import Call, Device
from crm.selectors import (
    directory_lead_sources,
    directory_lead_statuses,
    directory_pipelines,
    directory_stages,
    directory_users,
)
from scenarios.choices import CALLBACK_TYPES, ActionType
from scenarios.models import (
    ActionRun,
    Scenario,
    ScenarioAction,
)
from scenarios.outbox import late_filter
from scenarios.planning import ScenarioConfig, ScenarioEntry
from tenants.memo import tenant_scoped

Action = ScenarioAction


def scenario_config() -> ScenarioConfig:
    """The active scenarios with their active actions, as planning reads them."""
    return tenant_scoped("scenario-config", _scenario_config)


def _scenario_config() -> ScenarioConfig:
    scenarios: dict[str, list[ScenarioEntry]] = {}
    rows = Scenario.objects.filter(is_active=True).prefetch_related("actions", "devices")
    for scenario in rows.order_by("pk"):
        actions = tuple(
            {
                **action.as_config(),
                "id": action.pk,
                "position": action.position,
                "scenario": scenario.name,
            }
            for action in scenario.actions.all()
            if action.is_active
        )
        devices = frozenset(device.pk for device in scenario.devices.all())
        scenarios.setdefault(scenario.trigger, []).append(
            ScenarioEntry(name=scenario.name, actions=actions, devices=devices)
        )
    return ScenarioConfig(scenarios={k: tuple(v) for k, v in scenarios.items()})


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
    """Call backs (tasks and to-dos) made in Bitrix24 for this number by calls before `before`
    and not known to be done: what completes once the caller is reached."""
    return list(
        ActionRun.objects.filter(
            action_type__in=CALLBACK_TYPES,
            status=ActionRun.Status.DONE,
            call__phone_number=phone_number,
        )
        .filter(Q(result__has_key="task_id") | Q(result__has_key="todo_id"))
        .filter(Q(call__started_at__lt=before) | Q(call__started_at__isnull=True))
        .exclude(result__has_key="completed")
    )


def callback_open(*, phone_number: str, exclude_run_id: int) -> ActionRun | None:
    """The latest call back (task or to-do) made for this number and not known to be done,
    whichever call made it; also one whose run is still finishing (it records what it made
    before it lets go of the number's lock)."""
    return (
        ActionRun.objects.filter(
            action_type__in=CALLBACK_TYPES,
            status__in=[ActionRun.Status.DONE, ActionRun.Status.RUNNING],
            call__phone_number=phone_number,
        )
        .filter(Q(result__has_key="task_id") | Q(result__has_key="todo_id"))
        .exclude(result__has_key="completed")
        .exclude(pk=exclude_run_id)
        .order_by("-pk")
        .first()
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
    return tenant_scoped("scenario-directory", _directory)


def _directory() -> Directory:
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
    if kind == ActionType.SET_STATUS:
        problems += _status_problems(config, known)
    if kind == ActionType.CREATE_DEAL:
        pipeline = config.get("pipeline_id")
        if pipeline is not None and pipeline not in known.pipelines:
            problems.append(f"pipeline {pipeline} no longer exists")
        stage = config.get("stage_id")
        if stage and stage not in known.stages.get(pipeline or 0, ()):
            problems.append(f"stage {stage!r} no longer exists in pipeline {pipeline or 0}")
    return problems


def _status_problems(config: dict[str, Any], known: Directory) -> list[str]:
    status = config.get("status_id") or ""
    if not status:
        return []
    if config.get("target") == Action.AutomationTarget.DEAL:
        if not any(status in ids for ids in known.stages.values()):
            return [f"stage {status!r} no longer exists"]
    elif status not in known.lead_statuses:
        return [f"lead status {status!r} no longer exists"]
    return []


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
