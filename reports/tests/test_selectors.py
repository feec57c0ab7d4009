"""The reports' numbers, on calls the phones report through the bridge API; every expected
figure is computed here, in plain Python, from the list of calls the test made."""

from __future__ import annotations

import math
from datetime import date, datetime, time, timedelta
from typing import Any

import pytest
from django_tenants.utils import schema_context

from calls.models import Call, Device
from calls.services import device_register
from calls.tests.conftest import Bridge
from reports.choices import CallbackTaskState
from reports.periods import PeriodKind, period_for
from reports.selectors import (
    callback_task_state,
    missed_not_returned,
    missed_not_returned_count,
    report_callbacks,
    report_days,
    report_missed_heatmap,
    report_team,
    report_totals,
    working_day_ends,
)
from reports.tests.conftest import WARSAW, Spec, place
from scenarios.models import ActionRun, OfficeHours
from scenarios.worktime import WorkSchedule
from tenants.models import Tenant

A, B, C, D, E, F, G = (f"+4860{n}{n}{n}{n}{n}{n}{n}" for n in range(1, 8))


def at(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    """A moment of November 2026 on the Warsaw clock (16th: Monday ... 21st: Saturday)."""
    return datetime(2026, 11, day, hour, minute, second)


# Monday 16 to Saturday 21 November 2026, and a call on each side of the period.
CALLS = [
    Spec("before", "marta", "incoming", A, at(15, 23, 59), "missed", ring=20),
    Spec("m-a1", "marta", "incoming", A, at(16, 10), "missed", ring=20),
    Spec("cb-a1", "ewa", "outgoing", A, at(16, 10, 12), "answered", ring=8, talk=120),
    Spec("m-b1", "ewa", "incoming", B, at(16, 16, 50), "no_answer", ring=30),
    Spec("cb-b1", "marta", "incoming", B, at(17, 9, 30), "answered", ring=5, talk=60),
    Spec("m-c1", "marta", "incoming", C, at(17, 20), "busy", ring=3),
    Spec("cb-c1", "marta", "outgoing", C, at(18, 11), "answered", ring=10, talk=300),
    Spec("m-d1", "ewa", "incoming", D, at(18, 12), "missed", ring=25),
    Spec("m-d2", "ewa", "incoming", D, at(18, 12, 5), "missed", ring=25),
    Spec("o-d", "ewa", "outgoing", D, at(18, 12, 30), "no_answer", ring=40),
    Spec("r-e", "marta", "incoming", E, at(19, 9, 15), "rejected", ring=4),
    Spec("a-f", "marta", "incoming", F, at(19, 14), "answered", ring=12, talk=200),
    # 23:30 UTC on Friday: Saturday 00:30 in Warsaw.
    Spec("m-f", "ewa", "incoming", F, at(21, 0, 30), "missed", ring=15),
    Spec("cb-f", "marta", "outgoing", F, at(21, 14, 32, 5), "answered", ring=4, talk=30),
    Spec("m-a2", "marta", "incoming", A, at(21, 15), "missed", ring=20),
    Spec("a-g", "ewa", "incoming", G, at(21, 15, 10), "answered", ring=6, talk=45),
    Spec("ringing", "ewa", "incoming", G, at(21, 16), ""),  # not over yet: not counted
    Spec("after", "ewa", "incoming", B, at(22, 10), "missed", ring=20),
]
FIRST, LAST = date(2026, 11, 16), date(2026, 11, 21)


@pytest.fixture
def placed(
    marta: tuple[Device, Bridge], ewa: tuple[Device, Bridge], alpha: Tenant
) -> dict[str, Device]:
    # Office hours as the test states them: Monday to Friday, 9 to 17.
    OfficeHours.objects.all().delete()
    for weekday in range(5):
        OfficeHours.objects.create(weekday=weekday, opens_at=time(9), closes_at=time(17))
    place(CALLS, {"marta": marta[1], "ewa": ewa[1]})
    return {"marta": marta[0], "ewa": ewa[0]}


def window(first: date = FIRST, last: date = LAST, **filters: Any) -> dict[str, Any]:
    period = period_for(PeriodKind.CUSTOM, today=last, zone="Europe/Warsaw", first=first, last=last)
    return {"since": period.since, "until": period.until, **filters}


# --- What the reports should say, computed from CALLS -----------------------------------------


def in_period(specs: list[Spec], first: date = FIRST, last: date = LAST) -> list[Spec]:
    return [s for s in specs if s.ended and first <= s.day <= last]


def reached_by(missed: Spec, specs: list[Spec] = CALLS) -> Spec | None:
    later = [
        s
        for s in specs
        if s.number == missed.number and s.start > missed.start and s.outcome == "answered"
    ]
    return min(later, key=lambda s: s.start, default=None)


def percentile_cont(values: list[float], fraction: float) -> float:
    """PostgreSQL's percentile_cont: linear between the two closest ranks."""
    ordered = sorted(values)
    rank = fraction * (len(ordered) - 1)
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def working_day_end(moment: datetime) -> datetime:
    """Monday to Friday, 9 to 17: the close of the day it came in, or of the next working day."""
    local = moment.astimezone(WARSAW)
    day = local.date()
    if local.weekday() >= 5 or local.time() >= time(17):
        day += timedelta(days=1)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return datetime.combine(day, time(17), tzinfo=WARSAW)


# --- The tests ------------------------------------------------------------------------------


def test_totals_count_the_periods_ended_calls_by_direction_and_outcome(placed: Any) -> None:
    calls = in_period(CALLS)
    incoming = [s for s in calls if s.direction == "incoming"]
    outgoing = [s for s in calls if s.direction == "outgoing"]
    answered_in = [s for s in incoming if s.outcome == "answered"]
    answered_out = [s for s in outgoing if s.outcome == "answered"]
    talk = [s.talk for s in calls if s.outcome == "answered"]

    totals = report_totals(**window())

    assert totals == {
        "calls": len(calls),
        "incoming": len(incoming),
        "outgoing": len(outgoing),
        "answered": len(answered_in) + len(answered_out),
        "incoming_answered": len(answered_in),
        "outgoing_answered": len(answered_out),
        "missed": len([s for s in calls if s.missed]),
        "rejected": len([s for s in incoming if s.outcome == "rejected"]),
        "outgoing_unanswered": len(outgoing) - len(answered_out),
        "answer_rate": pytest.approx(len(answered_in) / len(incoming)),
        "ring_avg_seconds": pytest.approx(sum(s.ring for s in answered_in) / len(answered_in)),
        "talk_seconds": sum(talk),
        "talk_avg_seconds": pytest.approx(sum(talk) / len(talk)),
    }
    assert totals["calls"] == 15  # the list above, less the call before, after, and ringing


def test_a_call_at_2330_utc_counts_on_the_next_day_in_warsaw(placed: Any) -> None:
    late = next(s for s in CALLS if s.call_id == "m-f")
    assert late.start.astimezone(WARSAW).date() == date(2026, 11, 21)
    stored = Call.objects.get(call_id="m-f").started_at
    assert stored is not None
    assert (stored.utcoffset(), stored.day, stored.hour) == (timedelta(0), 20, 23)  # UTC

    friday = report_totals(**window(date(2026, 11, 20), date(2026, 11, 20)))
    saturday = report_totals(**window(date(2026, 11, 21), date(2026, 11, 21)))

    assert friday["calls"] == len(in_period(CALLS, date(2026, 11, 20), date(2026, 11, 20))) == 0
    assert saturday["missed"] == 2  # m-f at 00:30 and m-a2
    grid = report_missed_heatmap(**window(date(2026, 11, 21), date(2026, 11, 21)))
    assert grid[5][0] == 1  # Saturday, 00:00-01:00
    assert sum(map(sum, grid)) == 2


def test_days_list_every_local_day_with_its_calls_and_missed_calls(placed: Any) -> None:
    calls = in_period(CALLS)
    expected = [
        {
            "day": FIRST + timedelta(days=n),
            "calls": len([s for s in calls if s.day == FIRST + timedelta(days=n)]),
            "answered": len(
                [s for s in calls if s.day == FIRST + timedelta(days=n) and s.outcome == "answered"]
            ),
            "missed": len([s for s in calls if s.day == FIRST + timedelta(days=n) and s.missed]),
        }
        for n in range(6)
    ]
    assert report_days(**window()) == expected
    assert [row["calls"] for row in expected] == [3, 2, 4, 2, 0, 4]  # Friday had none


def test_the_heat_map_counts_missed_calls_by_local_weekday_and_hour(placed: Any) -> None:
    expected = [[0] * 24 for _ in range(7)]
    for spec in in_period(CALLS):
        if spec.missed:
            expected[spec.local.weekday()][spec.local.hour] += 1
    assert report_missed_heatmap(**window()) == expected


def test_callbacks_median_p90_and_shares(placed: Any) -> None:
    missed = [s for s in in_period(CALLS) if s.missed]
    waits: list[float] = []
    quick = same_day = 0
    for spec in missed:
        back = reached_by(spec)
        if back is None:
            continue
        assert back.answered_at is not None
        waited = back.answered_at - spec.start
        waits.append(waited.total_seconds())
        quick += waited <= timedelta(minutes=30)
        same_day += back.answered_at <= working_day_end(spec.start)

    callbacks = report_callbacks(**window())

    assert callbacks["missed"] == len(missed) == 7
    assert callbacks["returned"] == len(waits) == 4
    assert callbacks["not_returned"] == 3
    assert callbacks["median_seconds"] == pytest.approx(percentile_cont(waits, 0.5))
    assert callbacks["p90_seconds"] == pytest.approx(percentile_cont(waits, 0.9))
    assert callbacks["within_30_min"] == quick == 1  # m-a1, 12 min 8 s later
    # m-a1 (the same morning), m-c1 (20:00, the next morning), m-f (Saturday night, that
    # Saturday); not m-b1 (16:50, called back the next morning).
    assert callbacks["within_working_day"] == same_day == 3
    assert callbacks["within_30_min_share"] == pytest.approx(quick / len(missed))
    assert callbacks["within_working_day_share"] == pytest.approx(same_day / len(missed))
    bounds = [300, 1800, 7200, 86400, math.inf]
    expected_buckets = [0] * 5
    for wait in waits:
        expected_buckets[next(i for i, bound in enumerate(bounds) if wait <= bound)] += 1
    assert callbacks["buckets"] == expected_buckets


def test_the_working_day_of_a_missed_call_ends_when_the_office_closes() -> None:
    schedule = WorkSchedule(
        timezone="Europe/Warsaw", weekly={d: ((time(9), time(17)),) for d in range(5)}
    )
    since = datetime(2026, 11, 20, tzinfo=WARSAW)  # a Friday
    ends = working_day_ends(schedule, since=since, until=since + timedelta(days=1))
    # Thursday's close (the day before), Friday's, then Monday's: the weekend has none.
    assert ends == [
        datetime(2026, 11, 19, 17, tzinfo=WARSAW),
        datetime(2026, 11, 20, 17, tzinfo=WARSAW),
        datetime(2026, 11, 23, 17, tzinfo=WARSAW),
    ]
    always = working_day_ends(WorkSchedule(timezone="Europe/Warsaw"), since=since, until=since)
    assert always[-1] == datetime(2026, 11, 21, tzinfo=WARSAW)  # midnight, without hours


def test_missed_calls_not_returned_oldest_first_with_their_callback_task(
    placed: dict[str, Device],
) -> None:
    missed = [s for s in in_period(CALLS) if s.missed and reached_by(s) is None]
    now = datetime(2026, 11, 28, 12, tzinfo=WARSAW)

    found = missed_not_returned(**window(), now=now)

    assert [row["call_id"] for row in found] == [
        Call.objects.get(call_id=s.call_id).pk for s in sorted(missed, key=lambda s: s.start)
    ]
    assert [row["phone_number"] for row in found] == [D, D, A]
    assert [row["started_at"] for row in found] == [s.start for s in missed]
    assert [row["age"] for row in found] == [now - s.start for s in missed]
    by_line = {device.pk: name for name, device in placed.items()}
    assert [by_line[row["device_id"]] for row in found] == [s.line for s in missed]
    assert [row["agent_id"] for row in found] == [placed[s.line].bitrix24_user_id for s in missed]
    # Nothing planned yet: the scenario's actions follow the caller's lookup, which has not
    # run (no worker here; test_reports_portal.py runs them).
    assert {row["callback_task"] for row in found} == {CallbackTaskState.NONE}
    assert [row["responsible_id"] for row in found] == [row["agent_id"] for row in found]
    assert missed_not_returned_count(**window()) == len(missed)
    assert len(missed_not_returned(**window(), limit=1)) == 1


@pytest.mark.parametrize(
    ("status", "result", "state"),
    [
        (None, {}, CallbackTaskState.NONE),
        ("scheduled", {}, CallbackTaskState.PLANNED),
        ("running", {}, CallbackTaskState.PLANNED),
        ("done", {"task_id": 812}, CallbackTaskState.OPEN),
        ("done", {"task_id": 812, "completed": True}, CallbackTaskState.COMPLETED),
        ("skipped", {}, CallbackTaskState.SKIPPED),
        ("failed", {}, CallbackTaskState.FAILED),
        ("cancelled", {}, CallbackTaskState.CANCELLED),
    ],
)
def test_a_callback_tasks_state_from_its_run(
    status: str | None, result: dict[str, Any], state: CallbackTaskState
) -> None:
    assert callback_task_state(status, result) == state


def test_per_agent_and_per_line(placed: dict[str, Device]) -> None:
    calls = in_period(CALLS)

    def row(specs: list[Spec]) -> dict[str, int]:
        return {
            "calls": len(specs),
            "answered": len([s for s in specs if s.outcome == "answered"]),
            "missed": len([s for s in specs if s.missed]),
            "rejected": len([s for s in specs if s.outcome == "rejected"]),
            "returned": len([s for s in specs if s.missed and reached_by(s)]),
            "talk_seconds": sum(s.talk for s in specs if s.outcome == "answered"),
        }

    team = report_team(**window())

    assert team["lines"] == {
        device.pk: row([s for s in calls if s.line == line]) for line, device in placed.items()
    }
    # One phone each: an agent's row is their phone's.
    assert team["agents"] == {
        device.bitrix24_user_id: row([s for s in calls if s.line == line])
        for line, device in placed.items()
    }


def test_filters_by_line_and_by_agent(placed: dict[str, Device]) -> None:
    marta, ewa = placed["marta"], placed["ewa"]
    on_ewa = [s for s in in_period(CALLS) if s.line == "ewa"]

    by_line = report_totals(**window(device_ids=[ewa.pk]))
    by_agent = report_totals(**window(user_ids=[ewa.bitrix24_user_id]))

    assert by_line["calls"] == by_agent["calls"] == len(on_ewa)
    assert by_line["missed"] == len([s for s in on_ewa if s.missed])
    assert report_totals(**window(device_ids=[marta.pk], user_ids=[9]))["calls"] == 0
    # A missed call on Ewa's line returned from Marta's still counts as returned.
    assert report_callbacks(**window(device_ids=[ewa.pk]))["returned"] == len(
        [s for s in on_ewa if s.missed and reached_by(s)]
    )
    assert {r["device_id"] for r in missed_not_returned(**window(device_ids=[ewa.pk]))} == {ewa.pk}
    now = datetime(2026, 11, 28, tzinfo=WARSAW)
    assert missed_not_returned(**window(user_ids=[marta.bitrix24_user_id]), now=now) == [
        r for r in missed_not_returned(**window(), now=now) if r["device_id"] == marta.pk
    ]
    assert sum(map(sum, report_missed_heatmap(**window(device_ids=[marta.pk])))) == len(
        [s for s in in_period(CALLS) if s.line == "marta" and s.missed]
    )


def test_another_tenants_calls_never_appear(placed: Any, beta: Tenant) -> None:
    with schema_context("beta"):
        _, token = device_register(
            name="Beta phone", phone_number="+48500900900", bitrix24_user_id=5, country="PL"
        )
    # Beta answers D (alpha's caller who is not returned) and misses more calls.
    place(
        [
            Spec("b-1", "beta", "outgoing", D, at(18, 13), "answered", talk=60),
            Spec("b-2", "beta", "incoming", A, at(19, 10), "missed"),
            Spec("b-3", "beta", "incoming", C, at(19, 11), "missed"),
        ],
        {"beta": Bridge(token, host="beta.localhost")},
    )
    with schema_context("alpha"):
        totals = report_totals(**window())
        not_returned = {r["phone_number"] for r in missed_not_returned(**window())}
        team = report_team(**window())
    assert totals["calls"] == len(in_period(CALLS))
    assert D in not_returned
    assert len(team["lines"]) == 2
    with schema_context("beta"):
        assert report_totals(**window())["calls"] == 3
        assert report_callbacks(**window())["returned"] == 0


def test_an_empty_period_is_all_zeros(placed: Any) -> None:
    quiet = window(date(2026, 11, 1), date(2026, 11, 2))
    assert report_totals(**quiet)["calls"] == 0
    assert report_totals(**quiet)["answer_rate"] is None
    assert report_callbacks(**quiet)["median_seconds"] is None
    assert report_team(**quiet) == {"agents": {}, "lines": {}}
    assert missed_not_returned(**quiet) == []


def test_a_period_that_ends_before_it_begins_is_refused() -> None:
    moment = datetime(2026, 11, 16, tzinfo=WARSAW)
    with pytest.raises(ValueError, match="end after it begins"):
        report_totals(since=moment, until=moment)


def test_a_to_do_or_an_added_to_callback_is_the_missed_calls_callback(
    placed: dict[str, Device],
) -> None:
    first, second, third = missed_not_returned(**window())
    ActionRun.objects.create(
        call_id=first["call_id"], action_type="schedule_call", status="done",
        result={"todo_id": 55}, dedupe_key="t:1",
    )  # fmt: skip
    ActionRun.objects.create(
        call_id=second["call_id"], action_type="callback_task", status="done",
        result={"added_to": {"task_id": 812, "added_to_run": 1, "deadline": "kept"}},
        dedupe_key="t:2",
    )  # fmt: skip
    ActionRun.objects.create(
        call_id=third["call_id"], action_type="notify", status="done", dedupe_key="t:3"
    )  # not a callback
    found = {row["call_id"]: row for row in missed_not_returned(**window())}
    todo = found[first["call_id"]]
    assert (todo["callback_task"], todo["callback_task_id"]) == (CallbackTaskState.OPEN, 55)
    assert found[second["call_id"]]["callback_task_id"] == 812
    assert found[second["call_id"]]["callback_task"] == CallbackTaskState.OPEN
    assert found[third["call_id"]]["callback_task"] == CallbackTaskState.NONE
