"""The reports' numbers, read in SQL: one statement per report over the period's calls.

What counts (the scenarios' own rules, so a report agrees with what the engine did):
- a call counts once it has ended (it has an outcome), on the local day it started;
- a *missed* call is an incoming call that was neither answered nor rejected
  (scenarios.planning.trigger_for: busy, no answer, failed and cancelled are missed too);
- a missed call is *returned* once an answered call with its number, in either direction, started
  after it (scenarios.selectors.call_reached_since, the callback task's `skip_if_reached`); the
  returning call may come from any line and after the period's end.

Days, hours and weekdays are the tenant's (AT TIME ZONE the tenant's zone, DST included). Every
function takes the same filters: `device_ids` (lines) and `user_ids` (agents: the Bitrix24 user
who carries the line), None for all.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import date, datetime, time, timedelta
from typing import Any, TypedDict
from zoneinfo import ZoneInfo

from django.db import connection, transaction
from django.utils import timezone

from calls.models import Call, Device
from common.sql import table
from crm.services import crm_entity_urls
from reports.choices import CallbackTaskState
from scenarios.choices import CALLBACK_TYPES
from scenarios.models import ActionRun
from scenarios.worktime import HORIZON_DAYS, WorkSchedule, schedule_day_intervals, work_schedule
from tenants.context import tenant_timezone

# A call that ended: the period's calls. An incoming call neither answered nor rejected: missed.
_ENDED = "c.outcome <> ''"
_MISSED = "c.direction = 'incoming' AND c.outcome NOT IN ('', 'answered', 'rejected')"
# An answered call (or one in progress) that reaches the number of `c` after `c` began.
_REACHES = (
    "r.phone_number = c.phone_number AND r.started_at > c.started_at AND r.id <> c.id "
    "AND (r.outcome = 'answered' OR r.answered_at IS NOT NULL)"
)


def _calls() -> str:
    return table(Call)


def _devices() -> str:
    return table(Device)


def _runs() -> str:
    return table(ActionRun)


def _filters(
    *,
    since: datetime,
    until: datetime,
    device_ids: Sequence[int] | None,
    user_ids: Sequence[int] | None,
) -> tuple[str, dict[str, Any]]:
    """The period and the filters as a WHERE clause on `c` (calls) and `d` (its device)."""
    if since >= until:
        raise ValueError("The period must end after it begins.")
    where = ["c.started_at >= %(since)s", "c.started_at < %(until)s"]
    params: dict[str, Any] = {"since": since, "until": until, "zone": tenant_timezone()}
    if device_ids is not None:
        where.append("c.device_id = ANY(%(device_ids)s)")
        params["device_ids"] = list(device_ids)
    if user_ids is not None:
        where.append("d.bitrix24_user_id = ANY(%(user_ids)s)")
        params["user_ids"] = list(user_ids)
    return " AND ".join(where), params


def _rows(sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    # JIT off: these statements run in tens of milliseconds, and PostgreSQL's cost estimate of
    # the correlated callback lookups crosses its JIT thresholds on a busy tenant, where
    # compiling cost 0.9 s of a 1.2 s report (bench/reports.py).
    with transaction.atomic(), connection.cursor() as cursor:  # the tenant's search_path
        cursor.execute("SET LOCAL jit = off")
        cursor.execute(sql, params)
        return list(cursor.fetchall())


# --- Missed calls not returned -----------------------------------------------------------------


class MissedNotReturned(TypedDict):
    """A missed incoming call whose number no answered call has reached since."""

    call_id: int  # the call's row (its page in the admin)
    phone_number: str
    started_at: datetime
    age: timedelta  # how long the caller has been waiting, at `now`
    device_id: int
    device_name: str
    agent_id: int  # the Bitrix24 user who carries the line
    # The callback task's responsible; without a task, the routed user, else the caller's CRM
    # responsible, else the line's agent.
    responsible_id: int
    callback_task: CallbackTaskState
    callback_task_id: int | None  # the task's id in Bitrix24, once created
    caller_name: str  # the CRM entity's name, "" when not in the CRM
    crm_url: str  # the caller's card in Bitrix24, "" when not in the CRM


def missed_not_returned(
    *,
    since: datetime,
    until: datetime,
    device_ids: list[int] | None = None,
    user_ids: list[int] | None = None,
    now: datetime | None = None,
    limit: int | None = None,
) -> list[MissedNotReturned]:
    """Missed incoming calls that started in [since, until) and are not returned, oldest first
    (`limit` of them, or all). A call without a readable number cannot be returned: left out."""
    where, params = _filters(since=since, until=until, device_ids=device_ids, user_ids=user_ids)
    # A callback task or a to-do (schedule_call); a run that added to an earlier one has that.
    params.update({"tasks": sorted(CALLBACK_TYPES), "limit": limit})
    rows = _rows(
        f"""
        SELECT c.id, c.phone_number, c.started_at, c.device_id, d.name, d.bitrix24_user_id,
               COALESCE(
                   (run.params ->> 'responsible_user_id')::bigint,
                   (run.result ->> 'responsible_id')::bigint,
                   (c.route -> 'user' ->> 'id')::bigint,
                   (c.crm -> 'responsible' ->> 'id')::bigint,
                   d.bitrix24_user_id
               ),
               run.status, run.result, c.crm -> 'entity'
        FROM {_calls()} c
        JOIN {_devices()} d ON d.id = c.device_id
        LEFT JOIN LATERAL (
            SELECT t.status, t.params, t.result FROM {_runs()} t
            WHERE t.call_id = c.id AND t.action_type = ANY(%(tasks)s)
            ORDER BY t.id DESC LIMIT 1
        ) run ON TRUE
        WHERE {where} AND {_MISSED} AND c.phone_number <> ''
          AND NOT EXISTS (SELECT 1 FROM {_calls()} r WHERE {_REACHES})
        ORDER BY c.started_at, c.id
        LIMIT %(limit)s
        """,
        params,
    )
    now = now or timezone.now()
    links = _CrmLinks()
    found: list[MissedNotReturned] = []
    for (
        pk,
        number,
        started_at,
        device_id,
        device_name,
        agent,
        responsible,
        run_status,
        run_result,
        entity_json,
    ) in rows:
        result = _json(run_result)
        made = result.get("added_to") or result  # "one open callback per caller"
        task_id = made.get("task_id") or made.get("todo_id")
        entity = _json(entity_json)
        found.append(
            {
                "call_id": pk,
                "phone_number": number,
                "started_at": started_at,
                "age": now - started_at,
                "device_id": device_id,
                "device_name": device_name,
                "agent_id": agent,
                "responsible_id": int(responsible),
                "callback_task": callback_task_state(run_status, result),
                "callback_task_id": int(task_id) if task_id else None,
                "caller_name": str(entity.get("name") or ""),
                "crm_url": links.url(entity),
            }
        )
    return found


def missed_not_returned_count(
    *,
    since: datetime,
    until: datetime,
    device_ids: list[int] | None = None,
    user_ids: list[int] | None = None,
) -> int:
    where, params = _filters(since=since, until=until, device_ids=device_ids, user_ids=user_ids)
    rows = _rows(
        f"""
        SELECT count(*) FROM {_calls()} c JOIN {_devices()} d ON d.id = c.device_id
        WHERE {where} AND {_MISSED} AND c.phone_number <> ''
          AND NOT EXISTS (SELECT 1 FROM {_calls()} r WHERE {_REACHES})
        """,
        params,
    )
    return int(rows[0][0])


def _json(value: Any) -> dict[str, Any]:
    """A JSON column's object: Django's connection hands jsonb over as text (its fields decode
    it), and NULL (no run, no entity) as None."""
    if isinstance(value, str):
        value = json.loads(value)
    return value if isinstance(value, dict) else {}


def callback_task_state(status: str | None, result: dict[str, Any]) -> CallbackTaskState:
    """The state of a callback task run (its status and result; None: no run)."""
    if status is None:
        return CallbackTaskState.NONE
    if status in (ActionRun.Status.SCHEDULED, ActionRun.Status.RUNNING):
        return CallbackTaskState.PLANNED
    if status == ActionRun.Status.DONE:
        return CallbackTaskState.COMPLETED if result.get("completed") else CallbackTaskState.OPEN
    if status == ActionRun.Status.SKIPPED:
        return CallbackTaskState.SKIPPED
    if status == ActionRun.Status.CANCELLED:
        return CallbackTaskState.CANCELLED
    return CallbackTaskState.FAILED


class _CrmLinks:
    """The card's address the lookup stored; built from the portal's address when it has none."""

    def __init__(self) -> None:
        self._built: dict[tuple[str, int], str] = {}
        # crm_entity_urls(): made at the first entity without an address, the portal read once.
        self._urls: Callable[[tuple[str, int]], str] | None = None

    def url(self, entity: dict[str, Any]) -> str:
        if entity.get("url"):
            return str(entity["url"])
        if not entity.get("type") or not entity.get("id"):
            return ""
        key = (str(entity["type"]), int(entity["id"]))
        if key not in self._built:
            self._urls = self._urls or crm_entity_urls()
            try:
                self._built[key] = self._urls(key)
            except ValueError:  # a type Bitrix24 has no card for
                self._built[key] = ""
        return self._built[key]


# --- Totals ------------------------------------------------------------------------------------


class Totals(TypedDict):
    calls: int
    incoming: int
    outgoing: int
    answered: int  # in either direction
    incoming_answered: int
    outgoing_answered: int
    missed: int
    rejected: int
    outgoing_unanswered: int
    answer_rate: float | None  # incoming answered / incoming (None without incoming calls)
    ring_avg_seconds: float | None  # from ringing to answered, incoming calls answered
    talk_seconds: int  # answered calls, both directions
    talk_avg_seconds: float | None


def report_totals(
    *,
    since: datetime,
    until: datetime,
    device_ids: list[int] | None = None,
    user_ids: list[int] | None = None,
) -> Totals:
    where, params = _filters(since=since, until=until, device_ids=device_ids, user_ids=user_ids)
    (
        (
            calls,
            incoming,
            outgoing,
            answered_in,
            answered_out,
            missed,
            rejected,
            ring,
            talk,
            talk_avg,
        ),
    ) = _rows(
        f"""
            SELECT count(*),
                   count(*) FILTER (WHERE c.direction = 'incoming'),
                   count(*) FILTER (WHERE c.direction = 'outgoing'),
                   count(*) FILTER (WHERE c.direction = 'incoming' AND c.outcome = 'answered'),
                   count(*) FILTER (WHERE c.direction = 'outgoing' AND c.outcome = 'answered'),
                   count(*) FILTER (WHERE {_MISSED}),
                   count(*) FILTER (WHERE c.direction = 'incoming' AND c.outcome = 'rejected'),
                   avg(extract(epoch FROM c.answered_at - c.started_at)) FILTER (
                       WHERE c.direction = 'incoming' AND c.outcome = 'answered'
                         AND c.answered_at IS NOT NULL),
                   coalesce(sum(c.duration_seconds) FILTER (WHERE c.outcome = 'answered'), 0),
                   avg(c.duration_seconds) FILTER (WHERE c.outcome = 'answered')
            FROM {_calls()} c JOIN {_devices()} d ON d.id = c.device_id
            WHERE {where} AND {_ENDED}
            """,
        params,
    )
    return {
        "calls": calls,
        "incoming": incoming,
        "outgoing": outgoing,
        "answered": answered_in + answered_out,
        "incoming_answered": answered_in,
        "outgoing_answered": answered_out,
        "missed": missed,
        "rejected": rejected,
        "outgoing_unanswered": outgoing - answered_out,
        "answer_rate": answered_in / incoming if incoming else None,
        "ring_avg_seconds": _float(ring),
        "talk_seconds": int(talk),
        "talk_avg_seconds": _float(talk_avg),
    }


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


# --- Missed calls by hour and weekday ------------------------------------------------------


def report_missed_heatmap(
    *,
    since: datetime,
    until: datetime,
    device_ids: list[int] | None = None,
    user_ids: list[int] | None = None,
) -> list[list[int]]:
    """Missed incoming calls by local weekday (rows, Monday first) and hour (columns, 0-23)."""
    where, params = _filters(since=since, until=until, device_ids=device_ids, user_ids=user_ids)
    grid = [[0] * 24 for _ in range(7)]
    for weekday, hour, count in _rows(
        f"""
        SELECT extract(isodow FROM c.started_at AT TIME ZONE %(zone)s)::int,
               extract(hour FROM c.started_at AT TIME ZONE %(zone)s)::int,
               count(*)
        FROM {_calls()} c JOIN {_devices()} d ON d.id = c.device_id
        WHERE {where} AND {_MISSED}
        GROUP BY 1, 2
        """,
        params,
    ):
        grid[weekday - 1][hour] = count
    return grid


# --- Per day -------------------------------------------------------------------------------


class DayRow(TypedDict):
    day: date  # the tenant's local day
    calls: int
    answered: int
    missed: int


def report_days(
    *,
    since: datetime,
    until: datetime,
    device_ids: list[int] | None = None,
    user_ids: list[int] | None = None,
) -> list[DayRow]:
    """Every local day of the period in order, days without calls included."""
    where, params = _filters(since=since, until=until, device_ids=device_ids, user_ids=user_ids)
    counted = {
        day: (calls, answered, missed)
        for day, calls, answered, missed in _rows(
            f"""
            SELECT (c.started_at AT TIME ZONE %(zone)s)::date,
                   count(*),
                   count(*) FILTER (WHERE c.outcome = 'answered'),
                   count(*) FILTER (WHERE {_MISSED})
            FROM {_calls()} c JOIN {_devices()} d ON d.id = c.device_id
            WHERE {where} AND {_ENDED}
            GROUP BY 1
            """,
            params,
        )
    }
    zone = ZoneInfo(params["zone"])
    day, last = (
        since.astimezone(zone).date(),
        (until - timedelta(microseconds=1)).astimezone(zone).date(),
    )
    days: list[DayRow] = []
    while day <= last:
        calls, answered, missed = counted.get(day, (0, 0, 0))
        days.append({"day": day, "calls": calls, "answered": answered, "missed": missed})
        day += timedelta(days=1)
    return days


# --- Callbacks -----------------------------------------------------------------------------


class Callbacks(TypedDict):
    missed: int  # missed calls with a number (the others cannot be returned)
    returned: int
    not_returned: int
    median_seconds: float | None  # from the missed call to the caller reached, returned ones
    p90_seconds: float | None
    within_30_min: int
    within_working_day: int  # reached before the office closed on the missed call's working day
    within_30_min_share: float | None  # of `missed`
    within_working_day_share: float | None
    # Returned calls by the time it took: up to each of CALLBACK_BUCKETS, and later.
    buckets: list[int]


# "Reached within 30 minutes".
QUICK_CALLBACK = timedelta(minutes=30)
# How long callers waited, for the chart: up to 5 minutes, 30 minutes, 2 hours, a day, later.
CALLBACK_BUCKETS = (
    timedelta(minutes=5),
    QUICK_CALLBACK,
    timedelta(hours=2),
    timedelta(days=1),
)


def report_callbacks(
    *,
    since: datetime,
    until: datetime,
    device_ids: list[int] | None = None,
    user_ids: list[int] | None = None,
    schedule: WorkSchedule | None = None,
) -> Callbacks:
    """How the period's missed calls were returned. A missed call's working day ends when the
    office closes on the day it came in, or, outside office hours, on the next working day
    (scenarios.worktime: the tenant's weekly hours and holidays; without hours, at midnight)."""
    where, params = _filters(since=since, until=until, device_ids=device_ids, user_ids=user_ids)
    params["day_ends"] = working_day_ends(schedule or work_schedule(), since=since, until=until)
    params["quick"] = QUICK_CALLBACK
    params.update({f"bucket_{i}": bound for i, bound in enumerate(CALLBACK_BUCKETS)})
    ((missed, returned, median, p90, quick, same_day, *buckets),) = _rows(
        f"""
        WITH missed AS MATERIALIZED (  -- each call's callback looked up once, not per use
            SELECT c.started_at, (
                SELECT coalesce(r.answered_at, r.started_at) FROM {_calls()} r
                WHERE {_REACHES} ORDER BY r.started_at LIMIT 1
            ) AS reached_at
            FROM {_calls()} c JOIN {_devices()} d ON d.id = c.device_id
            WHERE {where} AND {_MISSED} AND c.phone_number <> ''
        )
        SELECT count(*), count(reached_at),
               percentile_cont(0.5) WITHIN GROUP (
                   ORDER BY extract(epoch FROM reached_at - started_at)),
               percentile_cont(0.9) WITHIN GROUP (
                   ORDER BY extract(epoch FROM reached_at - started_at)),
               count(*) FILTER (WHERE reached_at - started_at <= %(quick)s),
               count(*) FILTER (WHERE reached_at <= (
                   SELECT min(e) FROM unnest(%(day_ends)s::timestamptz[]) e
                   WHERE e > started_at)),
               {_bucket_counts()}
        FROM missed
        """,
        params,
    )
    return {
        "missed": missed,
        "returned": returned,
        "not_returned": missed - returned,
        "median_seconds": _float(median),
        "p90_seconds": _float(p90),
        "within_30_min": quick,
        "within_working_day": same_day,
        "within_30_min_share": quick / missed if missed else None,
        "within_working_day_share": same_day / missed if missed else None,
        "buckets": list(buckets),
    }


def _bucket_counts() -> str:
    """A count per bucket of CALLBACK_BUCKETS (up to each bound, after the one before), and one
    of the returned calls past the last bound."""
    waited = "(reached_at - started_at)"
    counts = []
    for i in range(len(CALLBACK_BUCKETS) + 1):
        conditions = ["reached_at IS NOT NULL"]
        if i > 0:
            conditions.append(f"{waited} > %(bucket_{i - 1})s")
        if i < len(CALLBACK_BUCKETS):
            conditions.append(f"{waited} <= %(bucket_{i})s")
        counts.append(f"count(*) FILTER (WHERE {' AND '.join(conditions)})")
    return ", ".join(counts)


def working_day_ends(schedule: WorkSchedule, *, since: datetime, until: datetime) -> list[datetime]:
    """When each working day that a call in [since, until) can fall in ends: the close of each
    local day's last office hours (midnight for a schedule without hours), in order, from the
    day before `since` to the first one after `until`. A call's working day ends at the first of
    these after it."""
    zone = schedule.tz
    day = since.astimezone(zone).date() - timedelta(days=1)
    ends: list[datetime] = []
    for _ in range(HORIZON_DAYS):
        if schedule.always_open:
            ends.append(datetime.combine(day + timedelta(days=1), time.min, tzinfo=zone))
        else:
            intervals = schedule_day_intervals(schedule, day)
            if intervals:
                ends.append(intervals[-1][1])
        if ends and ends[-1] > until:
            break
        day += timedelta(days=1)
    return ends


# --- Per agent and per line ----------------------------------------------------------------


class TeamRow(TypedDict):
    calls: int
    answered: int
    missed: int
    rejected: int
    returned: int  # of its missed calls
    talk_seconds: int


class Team(TypedDict):
    agents: dict[int, TeamRow]  # by Bitrix24 user id (the line's carrier)
    lines: dict[int, TeamRow]  # by device id


def report_team(
    *,
    since: datetime,
    until: datetime,
    device_ids: list[int] | None = None,
    user_ids: list[int] | None = None,
) -> Team:
    """The period's calls per agent and per line (only those with calls), in one pass."""
    where, params = _filters(since=since, until=until, device_ids=device_ids, user_ids=user_ids)
    team: Team = {"agents": {}, "lines": {}}
    for by_line, agent, device, calls, answered, missed, rejected, returned, talk in _rows(
        f"""
        WITH p AS (
            SELECT d.bitrix24_user_id AS agent, c.device_id, c.outcome, c.duration_seconds,
                   ({_MISSED}) AS missed,
                   CASE WHEN ({_MISSED}) AND c.phone_number <> ''
                        THEN EXISTS (SELECT 1 FROM {_calls()} r WHERE {_REACHES})
                        ELSE FALSE END AS returned,
                   (c.direction = 'incoming' AND c.outcome = 'rejected') AS rejected
            FROM {_calls()} c JOIN {_devices()} d ON d.id = c.device_id
            WHERE {where} AND {_ENDED}
        )
        SELECT GROUPING(device_id) = 0, agent, device_id, count(*),
               count(*) FILTER (WHERE outcome = 'answered'),
               count(*) FILTER (WHERE missed),
               count(*) FILTER (WHERE rejected),
               count(*) FILTER (WHERE returned),
               coalesce(sum(duration_seconds) FILTER (WHERE outcome = 'answered'), 0)
        FROM p
        GROUP BY GROUPING SETS ((agent), (device_id))
        """,
        params,
    ):
        row: TeamRow = {
            "calls": calls,
            "answered": answered,
            "missed": missed,
            "rejected": rejected,
            "returned": returned,
            "talk_seconds": int(talk),
        }
        if by_line:
            team["lines"][device] = row
        else:
            team["agents"][agent] = row
    return team
