"""The pure parts: the periods' local days and the SVG charts."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from reports.charts import Series, bar_chart, heat_colour, heat_map, nice_ceiling
from reports.periods import MAX_DAYS, PeriodKind, period_for

WARSAW = ZoneInfo("Europe/Warsaw")
TODAY = date(2026, 11, 21)


@pytest.mark.parametrize(
    ("kind", "first", "last"),
    [
        (PeriodKind.TODAY, TODAY, TODAY),
        (PeriodKind.YESTERDAY, date(2026, 11, 20), date(2026, 11, 20)),
        (PeriodKind.LAST_7, date(2026, 11, 15), TODAY),
        (PeriodKind.LAST_30, date(2026, 10, 23), TODAY),
    ],
)
def test_the_named_periods_count_back_from_today(kind: str, first: date, last: date) -> None:
    period = period_for(kind, today=TODAY, zone="Europe/Warsaw")
    assert (period.first, period.last) == (first, last)
    assert period.since == datetime(first.year, first.month, first.day, tzinfo=WARSAW)
    assert period.until == datetime(last.year, last.month, last.day, tzinfo=WARSAW) + timedelta(
        days=1
    )
    assert len(period.days) == (last - first).days + 1


def test_a_period_is_whole_local_days_across_a_clock_change() -> None:
    # Sunday 25 October 2026: the clocks go back an hour in Warsaw.
    day = date(2026, 10, 25)
    period = period_for(PeriodKind.CUSTOM, today=TODAY, zone="Europe/Warsaw", first=day, last=day)
    utc = ZoneInfo("UTC")
    assert period.until.astimezone(utc) - period.since.astimezone(utc) == timedelta(hours=25)
    assert period.since.utcoffset() == timedelta(hours=2)
    assert period.until.utcoffset() == timedelta(hours=1)


def test_a_custom_period_is_checked() -> None:
    with pytest.raises(ValueError, match="first and last day"):
        period_for(PeriodKind.CUSTOM, today=TODAY, zone="UTC", first=TODAY)
    with pytest.raises(ValueError, match="cannot end before"):
        period_for(PeriodKind.CUSTOM, today=TODAY, zone="UTC", first=TODAY, last=date(2026, 1, 1))
    with pytest.raises(ValueError, match="at most"):
        period_for(
            PeriodKind.CUSTOM,
            today=TODAY,
            zone="UTC",
            first=TODAY - timedelta(days=MAX_DAYS),
            last=TODAY,
        )
    with pytest.raises(ValueError, match="Unknown period"):
        period_for("fortnight", today=TODAY, zone="UTC")


def test_axis_tops_and_heat_colours() -> None:
    assert [nice_ceiling(n) for n in (0, 1, 2, 3, 7, 11, 45, 101)] == [1, 1, 2, 5, 10, 20, 50, 200]
    assert heat_colour(0, 10) == "#ffffff"
    assert heat_colour(10, 10) == "#ba2121"
    assert heat_colour(5, 10) == "#dc9090"


def test_charts_are_inline_svg_without_script_or_style_and_escape_their_labels() -> None:
    bars = bar_chart(
        title="Calls <per> day",
        labels=["1 lis", "<script>"],
        series=[Series("Połączenia", [3, 0], "#417690"), Series("Missed", [1, 0], "#ba2121")],
    )
    grid = [[0] * 24 for _ in range(7)]
    grid[5][0] = 4
    heat = heat_map(title="Missed", grid=grid, row_labels=list("MTWTFSS"), column_labels=[
        f"{h:02d}" for h in range(24)])  # fmt: skip
    for svg in (bars, heat):
        assert svg.startswith("<svg ")
        assert "<script" not in svg
        assert "style=" not in svg
        assert "href" not in svg
    assert "&lt;script&gt;" in bars
    assert "Calls &lt;per&gt; day" in bars
    assert "Połączenia" in bars
    # Bars: the tallest reaches the top of the axis (3 -> 5), the empty day has none.
    bar = r'<rect x="[^"]+" y="[^"]+" width="[^"]+" height="([^"]+)" fill'
    heights = [float(h) for h in re.findall(bar, bars)]
    assert heights[:4] == [pytest.approx(188 * 3 / 5), pytest.approx(188 / 5), 0.0, 0.0]
    assert heat.count("<rect ") == 7 * 24
    assert ">4</text>" in heat
    assert 'fill="#ba2121"' in heat
