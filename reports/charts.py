"""The reports' charts, drawn on the server as inline SVG: no script, no library, nothing from
another host (the admin's Content-Security-Policy holds). Colours and sizes are attributes, not
style; every label is escaped. The numbers are also in a table under each chart.

Pure: the labels come in already translated and formatted."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

INK = "#333333"
GRID = "#dddddd"
# The admin's own colours: its header blue, its error red.
BLUE = "#417690"
RED = "#ba2121"
GREEN = "#3d8b40"


@dataclass(frozen=True)
class Series:
    label: str
    values: Sequence[int]
    colour: str


def _text(x: float, y: float, text: str, *, anchor: str = "middle", size: int = 11, fill: str = INK,
          bold: bool = False) -> str:  # fmt: skip
    weight = ' font-weight="bold"' if bold else ""
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" '
        f'fill="{fill}"{weight}>{escape(text)}</text>'
    )


def _svg(width: int, height: int, title: str, body: list[str], css_class: str) -> SafeString:
    return mark_safe(  # noqa: S308 — every text above went through escape()
        f'<svg class="report-chart {css_class}" xmlns="http://www.w3.org/2000/svg" '
        f'viewBox="0 0 {width} {height}" width="100%" role="img" '
        f'font-family="sans-serif" preserveAspectRatio="xMinYMin meet">'
        f"<title>{escape(title)}</title>{''.join(body)}</svg>"
    )


def nice_ceiling(value: int) -> int:
    """The axis' top: 1, 2 or 5 times a power of ten, at least `value` (and at least 1)."""
    if value <= 1:
        return 1
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def bar_chart(*, title: str, labels: Sequence[str], series: Sequence[Series]) -> SafeString:
    """Grouped vertical bars, one group per label (a day, a bucket), with a legend; at most
    about fifteen labels are written under the axis."""
    count = len(labels)
    width, height = 900, 260
    left, right, top, bottom = 44, 10, 28, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = nice_ceiling(max((max(s.values, default=0) for s in series), default=0))
    body = []
    for tick in (0, peak // 2 if peak >= 2 else 0, peak):
        y = top + plot_h - plot_h * tick / peak
        body.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" '
            f'stroke="{GRID}" stroke-width="1"/>'
        )
        body.append(_text(left - 6, y + 4, str(tick), anchor="end", size=10))
    group = plot_w / max(count, 1)
    # Thin bars for a year of days, none wider than 40 for a day or two.
    bar = min(max(group * 0.8 / max(len(series), 1), 1.0), 40.0)
    inset = (group - bar * len(series)) / 2
    every = max(1, -(-count // 15))  # ceil: about fifteen labels at most
    for i, label in enumerate(labels):
        x0 = left + i * group + inset
        for j, each in enumerate(series):
            value = each.values[i]
            h = plot_h * value / peak
            x = x0 + j * bar
            body.append(
                f'<rect x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{bar:.1f}" '
                f'height="{h:.1f}" fill="{each.colour}"><title>{escape(label)}: '
                f"{escape(each.label)} {value}</title></rect>"
            )
        if i % every == 0:
            body.append(_text(left + i * group + group / 2, top + plot_h + 16, label, size=10))
    x = left
    for each in series:
        body.append(f'<rect x="{x}" y="8" width="12" height="12" fill="{each.colour}"/>')
        body.append(_text(x + 16, 18, each.label, anchor="start"))
        x += 24 + 8 * len(each.label)
    return _svg(width, height, title, body, "bar-chart")


def heat_colour(value: int, peak: int) -> str:
    """White for none, the admin's red for the most; linear in between."""
    if peak <= 0 or value <= 0:
        return "#ffffff"
    share = value / peak
    white, red = (255, 255, 255), (0xBA, 0x21, 0x21)
    r, g, b = (round(w + (c - w) * share) for w, c in zip(white, red, strict=True))
    return f"#{r:02x}{g:02x}{b:02x}"


def heat_map(
    *,
    title: str,
    grid: Sequence[Sequence[int]],
    row_labels: Sequence[str],
    column_labels: Sequence[str],
) -> SafeString:
    """A grid of counts (rows: weekdays, columns: hours), each cell's colour its share of the
    largest; the count written in every cell that has one."""
    cell_w, cell_h, left, top = 34, 26, 48, 22
    width = left + cell_w * len(column_labels) + 4
    height = top + cell_h * len(row_labels) + 4
    peak = max((max(row, default=0) for row in grid), default=0)
    body = [
        _text(left + c * cell_w + cell_w / 2, top - 7, label, size=10)
        for c, label in enumerate(column_labels)
    ]
    for r, (label, row) in enumerate(zip(row_labels, grid, strict=True)):
        y = top + r * cell_h
        body.append(_text(left - 6, y + cell_h / 2 + 4, label, anchor="end"))
        for c, value in enumerate(row):
            x = left + c * cell_w
            body.append(
                f'<rect x="{x}" y="{y}" width="{cell_w}" height="{cell_h}" '
                f'fill="{heat_colour(value, peak)}" stroke="{GRID}" stroke-width="1">'
                f"<title>{escape(label)} {escape(column_labels[c])}: {value}</title></rect>"
            )
            if value:
                dark = value / peak > 0.55
                body.append(
                    _text(x + cell_w / 2, y + cell_h / 2 + 4, str(value), size=10,
                          fill="#ffffff" if dark else INK)
                )  # fmt: skip
    return _svg(width, height, title, body, "heat-map")
