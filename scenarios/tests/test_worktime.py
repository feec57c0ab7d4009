"""Working-time arithmetic: nights, weekends, holidays, lunch breaks, DST (pure, no database)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scenarios.worktime import (
    NoWorkingTime,
    WorkSchedule,
    due_at,
    due_before,
    schedule_is_open,
    schedule_next_opening,
    working_time_add,
    working_time_between,
    working_time_subtract,
)

WARSAW = ZoneInfo("Europe/Warsaw")
NINE_TO_SIX = ((time(9), time(18)),)
OFFICE = WorkSchedule(timezone="Europe/Warsaw", weekly=dict.fromkeys(range(5), NINE_TO_SIX))


def local(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=WARSAW)


def test_a_callback_due_after_friday_closing_lands_on_monday_opening_plus_the_remainder() -> None:
    # Missed at 17:40 on Friday, 30 working minutes: 20 on Friday, 10 on Monday morning.
    missed = local(2026, 11, 20, 17, 40)
    assert missed.weekday() == 4
    assert working_time_add(OFFICE, missed, timedelta(minutes=30)) == local(2026, 11, 23, 9, 10)


def test_work_that_starts_at_night_starts_counting_at_opening() -> None:
    assert working_time_add(OFFICE, local(2026, 11, 18, 23, 0), timedelta(minutes=30)) == local(
        2026, 11, 19, 9, 30
    )


def test_holidays_are_skipped_also_every_year() -> None:
    schedule = WorkSchedule(
        timezone="Europe/Warsaw",
        weekly=OFFICE.weekly,
        holidays=frozenset({date(2026, 11, 23)}),
        yearly_holidays=frozenset({(11, 24)}),
    )
    friday = local(2026, 11, 20, 17, 40)
    # Monday 23rd is a holiday, Tuesday 24th a yearly one: Wednesday it is.
    assert working_time_add(schedule, friday, timedelta(minutes=30)) == local(2026, 11, 25, 9, 10)
    assert not schedule_is_open(schedule, local(2027, 11, 24, 12, 0))


def test_a_lunch_break_is_not_working_time() -> None:
    schedule = WorkSchedule(
        timezone="Europe/Warsaw", weekly={0: ((time(9), time(13)), (time(14), time(18)))}
    )
    monday = local(2026, 11, 23, 12, 30)
    assert working_time_add(schedule, monday, timedelta(hours=1)) == local(2026, 11, 23, 14, 30)
    assert not schedule_is_open(schedule, local(2026, 11, 23, 13, 30))
    assert schedule_next_opening(schedule, local(2026, 11, 23, 13, 30)) == local(
        2026, 11, 23, 14, 0
    )


def test_closing_at_midnight_means_the_end_of_the_day() -> None:
    schedule = WorkSchedule(timezone="Europe/Warsaw", weekly={0: ((time(20), time(0)),)})
    assert schedule_is_open(schedule, local(2026, 11, 23, 23, 59))
    assert working_time_add(schedule, local(2026, 11, 23, 23, 30), timedelta(hours=1)) == local(
        2026, 11, 30, 20, 30
    )


def test_working_time_follows_the_wall_clock_across_a_dst_change() -> None:
    # Warsaw leaves summer time on 25 October 2026: the office still opens at 9:00 local.
    schedule = WorkSchedule(timezone="Europe/Warsaw", weekly=dict.fromkeys(range(7), NINE_TO_SIX))
    saturday_evening = local(2026, 10, 24, 17, 0)
    result = working_time_add(schedule, saturday_evening, timedelta(hours=2))
    assert result == local(2026, 10, 25, 10, 0)
    assert result.utcoffset() == timedelta(hours=1)


def test_no_hours_means_always_open_and_plain_time() -> None:
    schedule = WorkSchedule(timezone="Europe/Warsaw")
    at = local(2026, 11, 22, 3, 0)
    assert schedule_is_open(schedule, at)
    assert working_time_add(schedule, at, timedelta(minutes=30)) == at + timedelta(minutes=30)


def test_a_schedule_that_never_opens_falls_back_to_plain_time() -> None:
    schedule = WorkSchedule(
        timezone="UTC", weekly={0: NINE_TO_SIX}, yearly_holidays=frozenset(
            (month, day) for month in range(1, 13) for day in range(1, 32)
        ),
    )  # fmt: skip
    at = datetime(2026, 11, 23, 10, tzinfo=UTC)
    with pytest.raises(NoWorkingTime):
        working_time_add(schedule, at, timedelta(minutes=5))
    assert due_at(schedule, base=at, delay_seconds=300, working_time=True) == at + timedelta(
        minutes=5
    )


def test_plain_delays_ignore_the_office_hours() -> None:
    friday = local(2026, 11, 20, 17, 40)
    assert due_at(OFFICE, base=friday, delay_seconds=1800, working_time=False) == local(
        2026, 11, 20, 18, 10
    )


moments = st.datetimes(
    min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)
)
delays = st.integers(min_value=0, max_value=60 * 60 * 24 * 10).map(lambda s: timedelta(seconds=s))
SCHEDULES = [
    OFFICE,
    WorkSchedule(
        timezone="America/New_York",
        weekly={0: ((time(8), time(12)), (time(13), time(0))), 3: ((time(0), time(6)),)},
        holidays=frozenset({date(2026, 12, 24)}),
    ),
]


@settings(max_examples=150, deadline=None)
@given(start=moments, first=delays, second=delays, which=st.sampled_from(SCHEDULES))
def test_adding_working_time_is_associative_and_exact(
    start: datetime, first: timedelta, second: timedelta, which: WorkSchedule
) -> None:
    once = working_time_add(which, start, first + second)
    assert working_time_add(which, working_time_add(which, start, first), second) == once
    assert working_time_between(which, start, once) == first + second
    assert once >= start
    if first + second > timedelta(0):
        # The work ends inside opening hours (or exactly as they close).
        assert schedule_is_open(which, once - timedelta(microseconds=1))


# --- Counting back from a date ("before a date") ----------------------------------------------


def test_working_minutes_before_a_monday_morning_reach_back_into_friday_afternoon() -> None:
    # 30 working minutes before Monday 09:10: 10 on Monday, 20 before Friday's 18:00 closing.
    monday = local(2026, 11, 23, 9, 10)
    assert working_time_subtract(OFFICE, monday, timedelta(minutes=30)) == local(
        2026, 11, 20, 17, 40
    )
    # A whole working day before Wednesday 12:00 is Tuesday 12:00; in plain time, 24 h.
    wednesday = local(2026, 11, 25, 12, 0)
    assert due_before(OFFICE, moment=wednesday, delay_seconds=9 * 3600, working_time=True) == local(
        2026, 11, 24, 12, 0
    )
    assert due_before(
        OFFICE, moment=wednesday, delay_seconds=24 * 3600, working_time=False
    ) == local(2026, 11, 24, 12, 0)


def test_a_date_at_night_counts_back_from_the_last_closing() -> None:
    # Midnight starting Thursday: 60 working minutes before it end at Wednesday's closing.
    assert working_time_subtract(OFFICE, local(2026, 11, 19, 0, 0), timedelta(minutes=60)) == local(
        2026, 11, 18, 17, 0
    )


@settings(max_examples=200, deadline=None)
@given(
    start=st.datetimes(
        min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)
    ),
    minutes=st.integers(min_value=1, max_value=5000),
)
def test_subtracting_working_time_undoes_adding_it(start: datetime, minutes: int) -> None:
    # Adding lands inside open hours (or at a closing); counting back from there gives a moment
    # from which exactly that much working time passes before it.
    end = working_time_add(OFFICE, start, timedelta(minutes=minutes))
    back = working_time_subtract(OFFICE, end, timedelta(minutes=minutes))
    assert working_time_between(OFFICE, back, end) == timedelta(minutes=minutes)
    assert back >= start
