"""A report's period: whole local days in the tenant's time zone (pure: today is given)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from django.db import models
from django.utils.translation import gettext_lazy as _

# A custom range longer than this is refused (a year and a day: a leap year fits).
MAX_DAYS = 366


class PeriodKind(models.TextChoices):
    TODAY = "today", _("Today")
    YESTERDAY = "yesterday", _("Yesterday")
    LAST_7 = "7d", _("Last 7 days")
    LAST_30 = "30d", _("Last 30 days")
    CUSTOM = "custom", _("Custom range")


@dataclass(frozen=True)
class Period:
    """The local days `first` to `last`, both included, in `zone`."""

    first: date
    last: date
    zone: str

    @property
    def since(self) -> datetime:
        """The first day's local midnight (aware)."""
        return _midnight(self.first, self.zone)

    @property
    def until(self) -> datetime:
        """The local midnight after the last day (aware): the period is [since, until)."""
        return _midnight(self.last + timedelta(days=1), self.zone)

    @property
    def days(self) -> list[date]:
        return [self.first + timedelta(days=n) for n in range((self.last - self.first).days + 1)]


def _midnight(day: date, zone: str) -> datetime:
    return datetime.combine(day, time.min, tzinfo=ZoneInfo(zone))


def period_for(
    kind: str, *, today: date, zone: str, first: date | None = None, last: date | None = None
) -> Period:
    """The period `kind` names, counted back from the local `today` (a custom one from `first`
    and `last`, which must be given, in order, at most MAX_DAYS apart)."""
    if kind == PeriodKind.TODAY:
        return Period(today, today, zone)
    if kind == PeriodKind.YESTERDAY:
        yesterday = today - timedelta(days=1)
        return Period(yesterday, yesterday, zone)
    if kind == PeriodKind.LAST_7:
        return Period(today - timedelta(days=6), today, zone)
    if kind == PeriodKind.LAST_30:
        return Period(today - timedelta(days=29), today, zone)
    if kind == PeriodKind.CUSTOM:
        if first is None or last is None:
            raise ValueError("A custom period needs its first and last day.")
        if last < first:
            raise ValueError("A period cannot end before it begins.")
        if (last - first).days + 1 > MAX_DAYS:
            raise ValueError(f"A period is at most {MAX_DAYS} days.")
        return Period(first, last, zone)
    raise ValueError(f"Unknown period {kind!r}")
