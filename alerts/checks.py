"""What is wrong right now: each check reads the tenant's rows and says which subjects are in
trouble (to open or keep open) and which open incidents have resolved.

Reads only: opening, clearing and telling people is alerts.services' work. The one request a
check makes is the connection's probe (crm's connection test), and only while the connection
row shows trouble, so a tenant whose portal works costs no request.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.db.models import Count, Max
from django.db.models.functions import TruncHour

from alerts.choices import IncidentKind
from alerts.models import Incident
from calls.models import Call, Device
from crm.health import ConnectionHealth, connection_health
from crm.models import Bitrix24User
from crm.services import connection_test
from reports.selectors import missed_not_returned, missed_not_returned_count
from scenarios.models import ActionRun, RoutingRule, ScenarioAction
from scenarios.selectors import actions_with_problems
from scenarios.worktime import (
    WorkSchedule,
    schedule_day_intervals,
    schedule_is_open,
    working_time_between,
)

logger = logging.getLogger(__name__)

# A phone silent for longer than this is silent whatever the office hours (and the working time
# between is not walked day by day over months).
SILENT_HORIZON = timedelta(days=14)
# Failed runs older than this do not open incidents (open ones are still followed).
RUNS_LOOKBACK = timedelta(hours=24)
# The connection is probed at most this often while its row shows trouble.
PROBE_EVERY = timedelta(seconds=55)
# The daily summary lists the missed calls of this long before it.
SUMMARY_LOOKBACK = timedelta(days=7)
SUMMARY_LINES = 10
# A tenant without office hours is open all day: its summary goes at this local hour.
SUMMARY_HOUR_ALWAYS_OPEN = 8


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def from_iso(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


@dataclass(frozen=True)
class Problem:
    kind: str
    key: str
    subject: str
    details: dict[str, Any]
    # How long it must last before people are told (a portal down for a while).
    alert_after: timedelta = timedelta(0)


@dataclass
class Findings:
    problems: list[Problem] = field(default_factory=list)
    # Open incidents that resolved: pk -> why ("seen", "revoked", "fixed", ...).
    resolved: dict[int, str] = field(default_factory=dict)


def _rest_resolved(open_: list[Incident], problems: list[Problem], reason: str) -> dict[int, str]:
    """A check that sees every subject: an open incident it no longer finds has resolved."""
    current = {(problem.kind, problem.key) for problem in problems}
    return {
        incident.pk: reason
        for incident in open_
        if (incident.kind, incident.subject_key) not in current
    }


# --- Phones ------------------------------------------------------------------------------------


def devices_silent_check(
    *, open_: list[Incident], minutes: int, schedule: WorkSchedule, now: datetime
) -> Findings:
    """Active phones not heard from for `minutes` of office hours, found while the office is
    open; an incident resolves when its phone is heard from again (or is revoked). A phone that
    never spoke has not started yet: the home page's checklist follows it, not the alerts."""
    findings = Findings()
    devices = Device.objects.in_bulk([incident.details.get("device_id") for incident in open_])
    for incident in open_:
        device = devices.get(incident.details.get("device_id"))
        if device is None or device.revoked_at is not None:
            findings.resolved[incident.pk] = "revoked"
            continue
        silent_since = from_iso(incident.details.get("last_seen_at"))
        if device.last_seen_at and (silent_since is None or device.last_seen_at > silent_since):
            findings.resolved[incident.pk] = "seen"
    if not schedule_is_open(schedule, now):
        return findings
    threshold = timedelta(minutes=minutes)
    candidates = Device.objects.filter(
        revoked_at__isnull=True, last_seen_at__lt=now - threshold
    ).order_by("pk")
    for device in candidates:
        assert device.last_seen_at is not None  # the filter
        start = max(device.last_seen_at, now - SILENT_HORIZON)
        if working_time_between(schedule, start, now) < threshold:
            continue
        findings.problems.append(
            Problem(
                kind=IncidentKind.DEVICE_SILENT,
                key=f"device:{device.pk}",
                subject=device.name,
                details={
                    "device_id": device.pk,
                    "device": device.name,
                    "number": device.phone_number,
                    "last_seen_at": iso(device.last_seen_at),
                },
            )
        )
    return findings


# --- Runs that failed for good -----------------------------------------------------------------


def _hour_key(action_type: str, hour: datetime) -> str:
    return f"{action_type}@{hour.astimezone(UTC):%Y-%m-%dT%H}"


def _failed_in(action_type: str, hour: datetime) -> Any:
    return ActionRun.objects.filter(
        status=ActionRun.Status.FAILED,
        action_type=action_type,
        done_at__gte=hour,
        done_at__lt=hour + timedelta(hours=1),
    )


def _runs_details(action_type: str, hour: datetime, count: int) -> dict[str, Any]:
    latest = list(
        _failed_in(action_type, hour)
        .order_by("-done_at", "-pk")
        .values("call_id", "last_error")[:5]
    )
    return {
        "action_type": action_type,
        "hour": iso(hour),
        "count": count,
        "error": (latest[0]["last_error"] if latest else "")[:500],
        "call_ids": [row["call_id"] for row in latest],
    }


def runs_failed_check(*, open_: list[Incident], now: datetime) -> Findings:
    """Runs failed after their retries, one subject per action type and (UTC) hour; an incident
    resolves when none of its hour's runs is failed any more (retried, or its call deleted)."""
    findings = Findings()
    groups = (
        ActionRun.objects.filter(status=ActionRun.Status.FAILED, done_at__gte=now - RUNS_LOOKBACK)
        .annotate(hour=TruncHour("done_at", tzinfo=UTC))
        .values("action_type", "hour")
        .annotate(count=Count("pk"), last=Max("done_at"))
        .order_by("hour", "action_type")
    )
    found: dict[str, tuple[str, datetime, int]] = {
        _hour_key(row["action_type"], row["hour"]): (row["action_type"], row["hour"], row["count"])
        for row in groups
    }
    for incident in open_:
        if incident.subject_key in found:
            continue
        action_type = str(incident.details.get("action_type") or "")
        hour = from_iso(incident.details.get("hour"))
        if hour is None:
            findings.resolved[incident.pk] = "fixed"
            continue
        count = _failed_in(action_type, hour).count()
        if count:  # older than the lookback, still failed
            found[incident.subject_key] = (action_type, hour, count)
        else:
            findings.resolved[incident.pk] = "fixed"
    known = {incident.subject_key: incident for incident in open_}
    for key, (action_type, hour, count) in found.items():
        same = known.get(key)
        if same is not None and same.details.get("count") == count:
            details = same.details  # unchanged: no need to read the errors again
        else:
            details = _runs_details(action_type, hour, count)
        findings.problems.append(
            Problem(kind=IncidentKind.RUNS_FAILED, key=key, subject=action_type, details=details)
        )
    return findings


# --- The Bitrix24 connection -------------------------------------------------------------------

_TROUBLE_KIND = {
    "auth": IncidentKind.BITRIX24_AUTH,
    "scope": IncidentKind.BITRIX24_SCOPE,
    "down": IncidentKind.BITRIX24_DOWN,
}


def _probe(health: ConnectionHealth, now: datetime) -> ConnectionHealth:
    """While the row shows trouble nothing else may call the portal (an idle tenant): the
    check asks it itself, so that a recovery is seen, at most once a minute."""
    if health.trouble not in _TROUBLE_KIND:
        return health
    if health.checked_at is not None and now - health.checked_at < PROBE_EVERY:
        return health
    try:
        connection_test()
    except Exception as exc:  # a probe must not stop the other checks
        logger.warning("alerts: the Bitrix24 connection probe failed: %s", exc)
        return health
    return connection_health()


def _telephony_refused() -> bool:
    """The call logged in Bitrix24 last was logged as an activity: telephony was refused."""
    latest = (
        Call.objects.exclude(b24_log_mode="")
        .order_by("-pk")
        .values_list("b24_log_mode", flat=True)
        .first()
    )
    return latest == Call.LogMode.ACTIVITY


def connection_check(
    *, open_: list[Incident], health: ConnectionHealth, down_minutes: int, now: datetime
) -> tuple[Findings, ConnectionHealth]:
    """Credentials refused, a scope missing, the portal down, telephony refused; each resolves
    when the connection no longer shows it (the probe's answer, or any request's success).
    Returns the connection as the probe left it."""
    health = _probe(health, now)
    problems: list[Problem] = []
    if health.configured:
        portal = health.portal
        kind = _TROUBLE_KIND.get(health.trouble or "")
        if kind is not None:
            problems.append(
                Problem(
                    kind=kind,
                    key="connection",
                    subject=portal,
                    details={
                        "code": health.code,
                        "error": health.error[:500],
                        "missing": health.missing_scopes,
                    },
                    alert_after=(
                        timedelta(minutes=down_minutes)
                        if kind == IncidentKind.BITRIX24_DOWN
                        else timedelta(0)
                    ),
                )
            )
        if health.trouble == "telephony" or _telephony_refused():
            problems.append(
                Problem(
                    kind=IncidentKind.BITRIX24_TELEPHONY,
                    key="connection",
                    subject=portal,
                    details={"code": health.code or "WRONG_AUTH_TYPE"},
                )
            )
    # What an open incident said when it opened stays (the error may change as it lasts).
    opened = {incident.kind: incident.details for incident in open_}
    problems = [
        replace(problem, details=opened[problem.kind]) if problem.kind in opened else problem
        for problem in problems
    ]
    findings = Findings(problems=problems, resolved=_rest_resolved(open_, problems, "recovered"))
    return findings, health


def connection_unusable(health: ConnectionHealth) -> bool:
    """No portal to notify through: Bitrix24 notifications are not even tried."""
    return not health.configured


# --- Rules and actions broken by a directory change --------------------------------------------


def config_broken_check(*, open_: list[Incident]) -> Findings | None:
    """Enabled routing rules marked broken (scenarios.routing checks them after every directory
    sync) and active scenario actions naming what Bitrix24 no longer has. None before the first
    directory sync: nothing can be called missing yet, nor fixed."""
    if not Bitrix24User.objects.exists():
        return None
    problems = [
        Problem(
            kind=IncidentKind.RULE_BROKEN,
            key=f"rule:{rule.pk}",
            subject=rule.name,
            details={"rule_id": rule.pk, "rule": rule.name, "reason": rule.broken_reason[:1000]},
        )
        for rule in RoutingRule.objects.filter(enabled=True).exclude(broken_reason="")
    ]
    flagged = actions_with_problems()
    actions = ScenarioAction.objects.filter(
        pk__in=list(flagged), is_active=True, scenario__is_active=True
    ).select_related("scenario")
    problems += [
        Problem(
            kind=IncidentKind.ACTION_BROKEN,
            key=f"action:{action.pk}",
            subject=action.scenario.name,
            details={
                "action_id": action.pk,
                "action_type": action.action_type,
                "scenario": action.scenario.name,
                "problems": "; ".join(flagged[action.pk])[:1000],
            },
        )
        for action in actions.order_by("pk")
    ]
    return Findings(problems=problems, resolved=_rest_resolved(open_, problems, "fixed"))


# --- The daily summary -------------------------------------------------------------------------


def summary_opening(schedule: WorkSchedule, now: datetime) -> datetime | None:
    """When today's working day began (the tenant's date), or None if it is closed today or
    has not opened yet."""
    today = now.astimezone(schedule.tz).date()
    if schedule.always_open:
        opening = datetime.combine(today, datetime.min.time(), tzinfo=schedule.tz).replace(
            hour=SUMMARY_HOUR_ALWAYS_OPEN
        )
    else:
        intervals = schedule_day_intervals(schedule, today)
        if not intervals:
            return None
        opening = intervals[0][0]
    return opening if opening <= now else None


def missed_summary_problem(*, now: datetime, day: date) -> Problem | None:
    """The summary of the missed calls nobody called back, or None when there are none."""
    since = now - SUMMARY_LOOKBACK
    count = missed_not_returned_count(since=since, until=now)
    if not count:
        return None
    oldest = missed_not_returned(since=since, until=now, now=now, limit=SUMMARY_LINES)
    return Problem(
        kind=IncidentKind.MISSED_SUMMARY,
        key=day.isoformat(),
        subject=day.isoformat(),
        details={
            "count": count,
            "since": iso(since),
            "calls": [
                {
                    "call_id": row["call_id"],
                    "number": row["phone_number"],
                    "started_at": iso(row["started_at"]),
                    "responsible_id": row["responsible_id"],
                    "callback_task": str(row["callback_task"]),
                    "caller": row["caller_name"],
                }
                for row in oldest
            ],
        },
    )
