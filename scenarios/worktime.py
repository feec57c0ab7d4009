"""Working time: a tenant's weekly opening hours and holidays, in the tenant's timezone.

Pure functions on a frozen `WorkSchedule`, so every rule (nights, weekends, holidays, DST) is
tested directly; `work_schedule()` alone reads the tenant's rows to build one (the outbox needs
it for a delay counted in working time, below the engine's selectors).
A schedule without weekly hours is "always open": then working time is plain time, which is what
a tenant that never set hours expects.

`working_time_add(schedule, start, delay)` walks the open intervals after `start` and spends the
delay inside them; when it runs out exactly at a closing time the result is that closing time
(not the next opening), which keeps the addition associative:
add(add(t, a), b) == add(t, a + b).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from scenarios.models import Holiday, OfficeHours
from tenants.context import tenant_timezone
from tenants.memo import tenant_scoped

# A schedule whose hours never open (every day a holiday) must not loop forever.
HORIZON_DAYS = 800
MIDNIGHT = time(0, 0)


class NoWorkingTime(ValueError):
    """The schedule has no open hours within the horizon."""


@dataclass(frozen=True)
class WorkSchedule:
    timezone: str = "UTC"
    # weekday (0 = Monday) -> sorted, non-overlapping (opens, closes); closes 00:00 = midnight.
    weekly: Mapping[int, tuple[tuple[time, time], ...]] = field(default_factory=dict)
    holidays: frozenset[date] = frozenset()
    # Holidays on the same day every year, as (month, day).
    yearly_holidays: frozenset[tuple[int, int]] = frozenset()

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def always_open(self) -> bool:
        return not any(self.weekly.get(day) for day in range(7))


def schedule_is_holiday(schedule: WorkSchedule, day: date) -> bool:
    return day in schedule.holidays or (day.month, day.day) in schedule.yearly_holidays


def schedule_day_intervals(schedule: WorkSchedule, day: date) -> list[tuple[datetime, datetime]]:
    """The open intervals of one local date, as aware datetimes (empty on holidays)."""
    if schedule_is_holiday(schedule, day):
        return []
    tz = schedule.tz
    intervals = []
    for opens, closes in schedule.weekly.get(day.weekday(), ()):
        start = datetime.combine(day, opens, tzinfo=tz)
        end_day = day + timedelta(days=1) if closes == MIDNIGHT else day
        end = datetime.combine(end_day, closes, tzinfo=tz)
        # Compare in UTC: wall-clock arithmetic across a DST change would be off by an hour.
        if _utc(end) > _utc(start):
            intervals.append((start, end))
    return intervals


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(ZoneInfo("UTC"))


def schedule_intervals_from(
    schedule: WorkSchedule, start: datetime
) -> Iterator[tuple[datetime, datetime]]:
    """Open intervals that end after `start`, the first one clipped to begin at `start`."""
    start = _utc(start)
    day = start.astimezone(schedule.tz).date() - timedelta(days=1)
    for _ in range(HORIZON_DAYS):
        for local_opens, local_closes in schedule_day_intervals(schedule, day):
            opens, closes = _utc(local_opens), _utc(local_closes)
            if closes > start:
                yield max(opens, start), closes
        day += timedelta(days=1)
    raise NoWorkingTime("The office hours never open: check the weekly hours and holidays.")


def schedule_is_open(schedule: WorkSchedule, at: datetime) -> bool:
    if schedule.always_open:
        return True
    at = _utc(at)
    local_day = at.astimezone(schedule.tz).date()
    for day in (local_day - timedelta(days=1), local_day):
        for opens, closes in schedule_day_intervals(schedule, day):
            if _utc(opens) <= at < _utc(closes):
                return True
    return False


def schedule_next_opening(schedule: WorkSchedule, at: datetime) -> datetime:
    """`at` itself when open, otherwise the next moment the office opens."""
    if schedule.always_open:
        return at
    opens, _ = next(schedule_intervals_from(schedule, at))
    return opens


def working_time_add(schedule: WorkSchedule, start: datetime, delay: timedelta) -> datetime:
    """The moment `delay` of working time after `start` has passed."""
    if delay < timedelta(0):
        raise ValueError("A delay cannot be negative.")
    if schedule.always_open or delay == timedelta(0):
        return start + delay
    remaining = delay
    for opens, closes in schedule_intervals_from(schedule, start):
        if opens + remaining <= closes:
            return (opens + remaining).astimezone(start.tzinfo)
        remaining -= closes - opens
    raise NoWorkingTime("unreachable")  # pragma: no cover - the iterator raises first


def schedule_intervals_before(
    schedule: WorkSchedule, end: datetime
) -> Iterator[tuple[datetime, datetime]]:
    """Open intervals that begin before `end`, latest first, the first one clipped to `end`."""
    end = _utc(end)
    day = end.astimezone(schedule.tz).date() + timedelta(days=1)
    for _ in range(HORIZON_DAYS):
        for local_opens, local_closes in reversed(schedule_day_intervals(schedule, day)):
            opens, closes = _utc(local_opens), _utc(local_closes)
            if opens < end:
                yield opens, min(closes, end)
        day -= timedelta(days=1)
    raise NoWorkingTime("The office hours never open: check the weekly hours and holidays.")


def working_time_subtract(schedule: WorkSchedule, end: datetime, delay: timedelta) -> datetime:
    """The moment from which `delay` of working time runs out exactly at `end` (the latest such
    moment: when it falls on an opening, that opening, not the previous closing)."""
    if delay < timedelta(0):
        raise ValueError("A delay cannot be negative.")
    if schedule.always_open or delay == timedelta(0):
        return end - delay
    remaining = delay
    for opens, closes in schedule_intervals_before(schedule, end):
        if closes - remaining >= opens:
            return (closes - remaining).astimezone(end.tzinfo)
        remaining -= closes - opens
    raise NoWorkingTime("unreachable")  # pragma: no cover - the iterator raises first


def due_before(
    schedule: WorkSchedule, *, moment: datetime, delay_seconds: int, working_time: bool
) -> datetime:
    """When something `delay_seconds` before `moment` is due, in plain or working time."""
    delay = timedelta(seconds=delay_seconds)
    if not working_time:
        return moment - delay
    try:
        return working_time_subtract(schedule, moment, delay)
    except NoWorkingTime:
        return moment - delay


def working_time_between(schedule: WorkSchedule, start: datetime, end: datetime) -> timedelta:
    """How much working time lies between two moments (zero if `end` is not after `start`)."""
    if end <= start:
        return timedelta(0)
    if schedule.always_open:
        return end - start
    total = timedelta(0)
    end = _utc(end)
    for opens, closes in schedule_intervals_from(schedule, start):
        if opens >= end:
            break
        total += min(closes, end) - opens
    return total


def due_at(
    schedule: WorkSchedule, *, base: datetime, delay_seconds: int, working_time: bool
) -> datetime:
    """When something `delay_seconds` after `base` is due, in plain or working time."""
    delay = timedelta(seconds=delay_seconds)
    if not working_time:
        return base + delay
    try:
        return working_time_add(schedule, base, delay)
    except NoWorkingTime:
        # A schedule that never opens would hold the work forever; plain time is the safe reading.
        return base + delay


def work_schedule() -> WorkSchedule:
    """The current tenant's office hours and holidays."""
    return tenant_scoped("work-schedule", _work_schedule)


def _work_schedule() -> WorkSchedule:
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
