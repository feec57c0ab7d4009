"""The Reports pages of the tenant admin: one page per report (reports.models), each with the
period and filter form, its charts (inline SVG, reports.charts) and tables, and a CSV export per
table. Read-only; whoever may view a report's model may read it (the "Support" group may)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import timedelta
from itertools import pairwise
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import Model
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.http.response import HttpResponseBase
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import formats, timezone
from django.utils.dates import WEEKDAYS_ABBR
from django.utils.timesince import timesince
from django.utils.translation import gettext

from calls.models import Device
from calls.selectors import agent_label, agent_names
from reports.charts import BLUE, GREEN, RED, Series, bar_chart, heat_map
from reports.forms import ReportFilterForm, ReportFilters
from reports.models import (
    CallbackReport,
    MissedHoursReport,
    NotReturnedReport,
    OverviewReport,
    TeamReport,
)
from reports.selectors import (
    CALLBACK_BUCKETS,
    Callbacks,
    TeamRow,
    missed_not_returned,
    missed_not_returned_count,
    report_callbacks,
    report_days,
    report_missed_heatmap,
    report_team,
    report_totals,
)
from tenants.admin_utils import ReadOnlyAdmin, csv_response
from tenants.context import tenant_timezone

# The not-returned page lists this many (oldest first); the CSV has them all.
NOT_RETURNED_SHOWN = 500

# A table's CSV: its header (taken in the request's language) and its rows.
Table = tuple[list[str], Callable[[], Iterable[list[Any]]]]


# --- Formatting ------------------------------------------------------------------------------


def duration_text(seconds: float | None) -> str:
    """ "1 h 05 min", "4 min 10 s", "35 s"; "-" for no value."""
    if seconds is None:
        return "-"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return gettext("%(hours)d h %(minutes)02d min") % {"hours": hours, "minutes": minutes}
    if minutes:
        return gettext("%(minutes)d min %(seconds)02d s") % {"minutes": minutes, "seconds": secs}
    return gettext("%(seconds)d s") % {"seconds": secs}


def share_text(share: float | None) -> str:
    if share is None:
        return "-"
    return gettext("%(percent)s%%") % {"percent": formats.number_format(share * 100, 1)}


def _day_label(day: Any) -> str:
    return formats.date_format(day, "j M")


def _local(moment: Any, zone: ZoneInfo) -> str:
    """A moment in the tenant's time, with its offset (as the calls' CSV writes it)."""
    return moment.astimezone(zone).isoformat(timespec="seconds") if moment else ""


# --- The pages -------------------------------------------------------------------------------


class ReportAdmin(ReadOnlyAdmin):
    """A report page: `report()` gives its context, `tables()` its CSV exports."""

    template: ClassVar[str] = ""
    slug: ClassVar[str] = ""

    def get_urls(self) -> list[URLPattern]:
        # A page and its exports: there are no rows to add, change or delete.
        info = self.opts.app_label, self.opts.model_name
        return [
            path(
                "",
                self.admin_site.admin_view(self.changelist_view),
                name="{}_{}_changelist".format(*info),
            ),
            path(
                "export.csv",
                self.admin_site.admin_view(self.export_view),
                name="{}_{}_export".format(*info),
            ),
        ]

    def report(self, request: HttpRequest, filters: ReportFilters) -> dict[str, Any]:
        raise NotImplementedError

    def tables(self, request: HttpRequest, filters: ReportFilters) -> dict[str, Table]:
        raise NotImplementedError

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        form = ReportFilterForm(request.GET)
        context: dict[str, Any] = {
            **self.admin_site.each_context(request),
            "title": str(self.opts.verbose_name_plural).capitalize(),
            "opts": self.opts,
            "form": form,
            "tabs": _tabs(request, self),
            "query": request.GET.urlencode(),
            "export_url": reverse(f"admin:reports_{self.opts.model_name}_export"),
        }
        if form.is_valid():
            filters = form.filters()
            context["filters"] = filters
            context["period_text"] = _period_text(filters)
            context.update(self.report(request, filters))
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.template, context)

    def export_view(self, request: HttpRequest) -> HttpResponseBase:
        if not self.has_view_permission(request):
            raise PermissionDenied
        form = ReportFilterForm(request.GET)
        if not form.is_valid():
            errors = "; ".join(str(e) for field in form.errors.values() for e in field)
            return HttpResponseBadRequest(errors, content_type="text/plain; charset=utf-8")
        filters = form.filters()
        tables = self.tables(request, filters)
        name = request.GET.get("table") or next(iter(tables))
        if name not in tables:
            raise Http404(gettext("This report has no table %(name)s.") % {"name": name})
        header, rows = tables[name]
        period = filters.period
        return csv_response(
            name=f"{self.slug}-{name}-{period.first:%Y%m%d}-{period.last:%Y%m%d}",
            header=header,
            rows=rows,
        )


def _period_text(filters: ReportFilters) -> str:
    period = filters.period
    first = formats.date_format(period.first, "DATE_FORMAT")
    if period.first == period.last:
        return first
    return gettext("%(first)s to %(last)s") % {
        "first": first,
        "last": formats.date_format(period.last, "DATE_FORMAT"),
    }


REPORT_MODELS: list[type[Model]] = [
    OverviewReport,
    MissedHoursReport,
    NotReturnedReport,
    CallbackReport,
    TeamReport,
]


def _tabs(request: HttpRequest, current: ReportAdmin) -> list[dict[str, Any]]:
    tabs = []
    for model in REPORT_MODELS:
        model_admin = current.admin_site.get_model_admin(model)
        if not model_admin.has_view_permission(request):
            continue
        tabs.append(
            {
                "label": str(model._meta.verbose_name_plural).capitalize(),
                "url": reverse(f"admin:reports_{model._meta.model_name}_changelist"),
                "active": model_admin is current,
            }
        )
    return tabs


@admin.register(OverviewReport)
class OverviewReportAdmin(ReportAdmin):
    template = "admin/reports/overview.html"
    slug = "overview"

    def _totals_rows(self, filters: ReportFilters) -> list[tuple[str, str, Any, str]]:
        """(measure as shown, measure in the CSV, value in the CSV, value as shown)."""
        t = report_totals(**filters.window)

        def count(label: str, key: str) -> tuple[str, str, Any, str]:
            return (label, label, t[key], str(t[key]))  # type: ignore[literal-required]

        def seconds(label: str, csv_label: str, value: float | None) -> tuple[str, str, Any, str]:
            return (label, csv_label, _rounded(value), duration_text(value))

        rate = t["answer_rate"]
        return [
            count(gettext("Calls"), "calls"),
            count(gettext("Incoming"), "incoming"),
            count(gettext("Outgoing"), "outgoing"),
            count(gettext("Answered"), "answered"),
            count(gettext("Incoming answered"), "incoming_answered"),
            count(gettext("Outgoing answered"), "outgoing_answered"),
            count(gettext("Missed"), "missed"),
            count(gettext("Rejected"), "rejected"),
            count(gettext("Outgoing not answered"), "outgoing_unanswered"),
            (
                gettext("Answer rate (incoming)"),
                gettext("Answer rate (incoming)"),
                "" if rate is None else round(rate, 4),
                share_text(rate),
            ),
            seconds(
                gettext("Average time to answer"),
                gettext("Average time to answer (s)"),
                t["ring_avg_seconds"],
            ),
            seconds(gettext("Talk time"), gettext("Talk time (s)"), t["talk_seconds"]),
            seconds(
                gettext("Average talk time"),
                gettext("Average talk time (s)"),
                t["talk_avg_seconds"],
            ),
        ]

    def report(self, request: HttpRequest, filters: ReportFilters) -> dict[str, Any]:
        days = report_days(**filters.window)
        labels = [_day_label(row["day"]) for row in days]
        chart = bar_chart(
            title=gettext("Calls and missed calls per day"),
            labels=labels,
            series=[
                Series(gettext("Calls"), [row["calls"] for row in days], BLUE),
                Series(gettext("Missed"), [row["missed"] for row in days], RED),
            ],
        )
        return {
            "totals": [(label, shown) for label, _c, _raw, shown in self._totals_rows(filters)],
            "days": days,
            "chart": chart,
            "not_returned": missed_not_returned_count(**filters.window),
        }

    def tables(self, request: HttpRequest, filters: ReportFilters) -> dict[str, Table]:
        totals = [[label, raw] for _label, label, raw, _shown in self._totals_rows(filters)]
        window = filters.window
        return {
            "totals": ([gettext("Measure"), gettext("Value")], lambda: totals),
            "days": (
                [gettext("Day"), gettext("Calls"), gettext("Answered"), gettext("Missed")],
                lambda: (
                    [row["day"].isoformat(), row["calls"], row["answered"], row["missed"]]
                    for row in report_days(**window)
                ),
            ),
        }


def _rounded(value: float | None) -> Any:
    return "" if value is None else round(value, 1)


def _weekdays() -> list[str]:
    return [str(WEEKDAYS_ABBR[day]) for day in range(7)]


@admin.register(MissedHoursReport)
class MissedHoursReportAdmin(ReportAdmin):
    template = "admin/reports/missed_hours.html"
    slug = "missed-by-hour"

    def report(self, request: HttpRequest, filters: ReportFilters) -> dict[str, Any]:
        grid = report_missed_heatmap(**filters.window)
        weekdays = _weekdays()
        hours = [f"{hour:02d}" for hour in range(24)]
        return {
            "chart": heat_map(
                title=gettext("Missed calls by hour and weekday"),
                grid=grid,
                row_labels=weekdays,
                column_labels=hours,
            ),
            "hours": hours,
            "rows": list(zip(weekdays, grid, strict=True)),
            "total": sum(map(sum, grid)),
        }

    def tables(self, request: HttpRequest, filters: ReportFilters) -> dict[str, Table]:
        window = filters.window
        weekdays = _weekdays()
        return {
            "hours": (
                [gettext("Weekday"), *(f"{hour:02d}" for hour in range(24))],
                lambda: (
                    [day, *row]
                    for day, row in zip(weekdays, report_missed_heatmap(**window), strict=True)
                ),
            )
        }


def _names_for(user_ids: Iterable[int]) -> dict[int, str]:
    return agent_names(user_ids=sorted(set(user_ids)))


@admin.register(NotReturnedReport)
class NotReturnedReportAdmin(ReportAdmin):
    template = "admin/reports/not_returned.html"
    slug = "not-returned"

    def report(self, request: HttpRequest, filters: ReportFilters) -> dict[str, Any]:
        now = timezone.now()
        total = missed_not_returned_count(**filters.window)
        found = missed_not_returned(**filters.window, now=now, limit=NOT_RETURNED_SHOWN)
        names = _names_for([*(r["agent_id"] for r in found), *(r["responsible_id"] for r in found)])
        rows = [
            {
                **row,
                "age_text": timesince(row["started_at"], now, depth=2),
                "agent": agent_label(row["agent_id"], names),
                "responsible": agent_label(row["responsible_id"], names),
                "task": row["callback_task"].label,
                "call_url": reverse("admin:calls_call_change", args=[row["call_id"]]),
            }
            for row in found
        ]
        shown_note = (
            gettext("The oldest %(shown)d of %(count)d are listed; the CSV has them all.")
            % {"shown": len(rows), "count": total}
            if total > len(rows)
            else ""
        )
        return {"rows": rows, "total": total, "shown_note": shown_note}

    def tables(self, request: HttpRequest, filters: ReportFilters) -> dict[str, Table]:
        window = filters.window
        zone = ZoneInfo(tenant_timezone())
        base = request.build_absolute_uri("/")[:-1]

        def rows() -> Iterable[list[Any]]:
            now = timezone.now()
            found = missed_not_returned(**window, now=now)
            names = _names_for(
                [*(r["agent_id"] for r in found), *(r["responsible_id"] for r in found)]
            )
            for row in found:
                yield [
                    _local(row["started_at"], zone),
                    round(row["age"].total_seconds() / 60),
                    row["phone_number"],
                    row["caller_name"],
                    row["crm_url"],
                    row["device_name"],
                    agent_label(row["agent_id"], names),
                    agent_label(row["responsible_id"], names),
                    str(row["callback_task"].label),
                    base + reverse("admin:calls_call_change", args=[row["call_id"]]),
                ]

        return {
            "calls": (
                [
                    gettext("Missed at"),
                    gettext("Waiting (minutes)"),
                    gettext("Number"),
                    gettext("Caller"),
                    gettext("CRM card"),
                    gettext("Line"),
                    gettext("Agent"),
                    gettext("Responsible"),
                    gettext("Callback task"),
                    gettext("Call page"),
                ],
                rows,
            )
        }


def _span_text(span: timedelta) -> str:
    minutes = round(span.total_seconds() / 60)
    if minutes < 60:
        return gettext("%(minutes)d min") % {"minutes": minutes}
    return gettext("%(hours)d h") % {"hours": minutes // 60}


def _bucket_labels(*, measure: bool) -> list[str]:
    """The chart's labels ("up to 5 min", "5 min to 30 min", ... "over 24 h"), or the CSV's
    measures ("Reached within 5 min", ...): each a whole phrase of its own."""
    bounds = [_span_text(bound) for bound in CALLBACK_BUCKETS]
    if measure:
        first = gettext("Reached within %(bound)s")
        between = gettext("Reached after %(low)s, within %(high)s")
        last = gettext("Reached after %(bound)s")
    else:
        first = gettext("up to %(bound)s")
        between = gettext("%(low)s to %(high)s")
        last = gettext("over %(bound)s")
    labels = [first % {"bound": bounds[0]}]
    labels += [between % {"low": low, "high": high} for low, high in pairwise(bounds)]
    labels.append(last % {"bound": bounds[-1]})
    return labels


@admin.register(CallbackReport)
class CallbackReportAdmin(ReportAdmin):
    template = "admin/reports/callbacks.html"
    slug = "callbacks"

    def _summary(self, c: Callbacks) -> list[tuple[str, str, Any, str]]:
        """(measure as shown, measure in the CSV, value in the CSV, value as shown): the
        figures, then the buckets (in the CSV only: the chart shows them)."""

        def count(label: str, value: int, shown: str = "") -> tuple[str, str, Any, str]:
            return (label, label, value, shown or str(value))

        def seconds(label: str, csv_label: str, value: float | None) -> tuple[str, str, Any, str]:
            return (label, csv_label, _rounded(value), duration_text(value))

        rows = [
            count(gettext("Missed calls"), c["missed"]),
            count(gettext("Returned"), c["returned"]),
            count(gettext("Not returned"), c["not_returned"]),
            seconds(
                gettext("Median time to reach the caller"),
                gettext("Median time to reach the caller (s)"),
                c["median_seconds"],
            ),
            seconds(
                gettext("90th percentile time to reach the caller"),
                gettext("90th percentile time to reach the caller (s)"),
                c["p90_seconds"],
            ),
            count(
                gettext("Reached within 30 minutes"),
                c["within_30_min"],
                f"{c['within_30_min']} ({share_text(c['within_30_min_share'])})",
            ),
            count(
                gettext("Reached within the same working day"),
                c["within_working_day"],
                f"{c['within_working_day']} ({share_text(c['within_working_day_share'])})",
            ),
        ]
        for label, value in zip(_bucket_labels(measure=True), c["buckets"], strict=True):
            rows.append(count(label, value))
        return rows

    def report(self, request: HttpRequest, filters: ReportFilters) -> dict[str, Any]:
        c = report_callbacks(**filters.window)
        labels = [*_bucket_labels(measure=False), gettext("not returned")]
        return {
            "summary": [(label, shown) for label, _csv, _raw, shown in self._summary(c)[:7]],
            "callbacks": c,
            "chart": bar_chart(
                title=gettext("Missed calls by the time it took to reach the caller"),
                labels=labels,
                series=[
                    Series(
                        gettext("Missed calls"),
                        [*c["buckets"], c["not_returned"]],
                        GREEN,
                    )
                ],
            ),
            "buckets": list(zip(labels, [*c["buckets"], c["not_returned"]], strict=True)),
        }

    def tables(self, request: HttpRequest, filters: ReportFilters) -> dict[str, Table]:
        summary = [
            [label, raw]
            for _label, label, raw, _shown in self._summary(report_callbacks(**filters.window))
        ]
        return {"summary": ([gettext("Measure"), gettext("Value")], lambda: summary)}


def _team_cells(row: TeamRow) -> list[int]:
    return [
        row["calls"],
        row["answered"],
        row["missed"],
        row["rejected"],
        row["returned"],
        row["talk_seconds"],
    ]


def _team_header(first: str) -> list[str]:
    return [
        first,
        gettext("Calls"),
        gettext("Answered"),
        gettext("Missed"),
        gettext("Rejected"),
        gettext("Returned"),
        gettext("Talk time (s)"),
    ]


@admin.register(TeamReport)
class TeamReportAdmin(ReportAdmin):
    template = "admin/reports/team.html"
    slug = "team"

    def _tables(self, filters: ReportFilters) -> tuple[list[list[Any]], list[list[Any]]]:
        """Agents (by name) and lines (by name), each row: name, counts, talk seconds."""
        team = report_team(**filters.window)
        names = _names_for(team["agents"])
        agents = sorted(
            ([agent_label(uid, names), *_team_cells(row)] for uid, row in team["agents"].items()),
            key=lambda r: str(r[0]).lower(),
        )
        devices = dict(Device.objects.filter(pk__in=team["lines"]).values_list("pk", "name"))
        lines = sorted(
            ([devices.get(pk, str(pk)), *_team_cells(row)] for pk, row in team["lines"].items()),
            key=lambda r: str(r[0]).lower(),
        )
        return agents, lines

    def report(self, request: HttpRequest, filters: ReportFilters) -> dict[str, Any]:
        agents, lines = self._tables(filters)

        def shown(rows: list[list[Any]]) -> list[list[Any]]:
            return [[*row[:-1], duration_text(row[-1])] for row in rows]

        return {
            "sections": [
                (
                    "agents",
                    gettext("Per agent"),
                    _team_header(gettext("Agent")),
                    shown(agents),
                    "agents",
                ),
                (
                    "lines",
                    gettext("Per line"),
                    _team_header(gettext("Line")),
                    shown(lines),
                    "lines",
                ),
            ]
        }

    def tables(self, request: HttpRequest, filters: ReportFilters) -> dict[str, Table]:
        agents, lines = self._tables(filters)
        return {
            "agents": (_team_header(gettext("Agent")), lambda: agents),
            "lines": (_team_header(gettext("Line")), lambda: lines),
        }
