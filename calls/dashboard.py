"""The tenant admin's home: the tenant at a glance, or, for a tenant not set up yet, the
onboarding checklist, each step ticked from what is really there.

Each line links to where it is seen or fixed. Read on every visit of the home page: a handful
of indexed counts, nothing from Bitrix24 (its health is what the last request recorded)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from django.db.models import Count
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from alerts.choices import IncidentKind
from alerts.models import Incident
from calls.models import Call, Device
from calls.selectors import devices_silent
from crm.connections import scopes_missing
from crm.models import Bitrix24Connection
from reports.periods import PeriodKind, period_for
from reports.selectors import missed_not_returned_count
from scenarios.models import RoutingRule
from tenants.context import tenant_timezone

# Today's calls by outcome, as the glance names them.
OUTCOMES = {
    "answered": gettext_lazy("answered"),
    "missed": gettext_lazy("missed"),
    "rejected": gettext_lazy("rejected"),
    "busy": gettext_lazy("busy"),
    "no_answer": gettext_lazy("no answer"),
    "failed": gettext_lazy("failed"),
    "cancelled": gettext_lazy("cancelled"),
    "": gettext_lazy("in progress"),
}


@dataclass
class Step:
    label: str
    done: bool
    url: str
    hint: str = ""


@dataclass
class Line:
    """One fact of the glance: ok or not, what it says, where it leads."""

    label: str
    text: str
    ok: bool
    url: str


@dataclass
class Dashboard:
    steps: list[Step]
    lines: list[Line] = field(default_factory=list)
    today: list[tuple[int, str]] = field(default_factory=list)
    today_url: str = ""

    @property
    def onboarding(self) -> bool:
        return not all(step.done for step in self.steps)


def _admin(name: str, *args: Any) -> str:
    return reverse(f"admin:{name}", args=args)


def _local_midnight(now: datetime) -> datetime:
    zone = ZoneInfo(tenant_timezone())
    return datetime.combine(now.astimezone(zone).date(), time.min, tzinfo=zone)


def tenant_dashboard(*, now: datetime | None = None, reports: bool = False) -> Dashboard:
    """`reports`: the viewer may read the reports (a line about missed calls not returned)."""
    now = now or timezone.now()
    conn = Bitrix24Connection.objects.filter(singleton=1).first()
    connection_url = (
        _admin("crm_bitrix24connection_change", conn.pk)
        if conn
        else _admin("crm_bitrix24connection_add")
    )
    devices = Device.objects.filter(revoked_at__isnull=True)
    calls = Call.objects.all()
    steps = [
        Step(
            _("Connect Bitrix24"),
            bool(conn and conn.last_ok_at and not conn.last_error),
            connection_url,
            _("paste an inbound webhook or install the application, then Test connection"),
        ),
        Step(
            _("Directory synced (users, pipelines)"),
            bool(conn and conn.directory_synced_at),
            connection_url,
            _("synced in the background once the connection works"),
        ),
        Step(
            _("First device"),
            devices.exists(),
            _admin("calls_device_add"),
            _("add the agent's phone and scan its QR code in the SIMtrix Bridge app"),
        ),
        Step(
            _("A test call"),
            calls.exists(),
            _admin("calls_call_changelist"),
            _("call the phone, or call from it"),
        ),
        Step(
            _("Seen in Bitrix24"),
            calls.filter(b24_finished_at__isnull=False).exists(),
            _admin("calls_call_changelist"),
            _("the call is logged in the contact's timeline"),
        ),
    ]
    board = Dashboard(steps=steps)
    if board.onboarding:
        return board
    board.lines = [_connection_line(conn, connection_url), _devices_line(devices, now)]
    board.lines += _attention_lines()
    if reports:
        board.lines.append(_reports_line(now))
    since = _local_midnight(now)
    counts = dict(
        calls.filter(started_at__gte=since)
        .values_list("outcome")
        .annotate(n=Count("pk"))
        .values_list("outcome", "n")
    )
    board.today = [
        (count, str(OUTCOMES.get(outcome, outcome or OUTCOMES[""])))
        for outcome, count in sorted(counts.items(), key=lambda item: -item[1])
    ]
    day = since.date().isoformat()
    board.today_url = _admin("calls_call_changelist") + f"?started_from={day}&started_to={day}"
    return board


def _connection_line(conn: Bitrix24Connection | None, url: str) -> Line:
    if conn is None or conn.last_error:
        return Line("Bitrix24", conn.last_error if conn else _("not connected"), False, url)
    missing = scopes_missing(conn.scopes)
    if conn.scopes and missing:
        text = _("missing scopes: %(scopes)s") % {"scopes": ", ".join(missing)}
        return Line("Bitrix24", text, False, url)
    parts = [
        _("%(mode)s, last answer %(ago)s")
        % {"mode": conn.get_auth_mode_display(), "ago": _ago(conn.last_ok_at)}
    ]
    parts.append(
        _("events arriving (last %(ago)s)") % {"ago": _ago(conn.last_event_at)}
        if conn.last_event_at
        else _("no event received yet")
    )
    return Line("Bitrix24", "; ".join(parts), True, url)


def _devices_line(devices: Any, now: datetime) -> Line:
    silent = list(devices_silent(now=now).values_list("name", flat=True))
    total = devices.count()
    url = _admin("calls_device_changelist") + ("?heartbeat=silent" if silent else "")
    if silent:
        names = ", ".join(silent[:5]) + ("…" if len(silent) > 5 else "")
        text = _("%(online)s of %(total)s online; silent: %(names)s") % {
            "online": total - len(silent),
            "total": total,
            "names": names,
        }
        return Line(_("Devices"), text, False, url)
    return Line(_("Devices"), _("all %(total)s online") % {"total": total}, True, url)


def _attention_lines() -> list[Line]:
    # Failed and late runs have their own box under this one (scenarios' outbox_attention).
    lines = []
    broken = list(
        RoutingRule.objects.filter(enabled=True)
        .exclude(broken_reason="")
        .values_list("name", flat=True)
    )
    if broken:
        text = ngettext("broken rule: %(names)s", "broken rules: %(names)s", len(broken)) % {
            "names": ", ".join(broken)
        }
        lines.append(Line(_("Routing"), text, False, _admin("scenarios_routingrule_changelist")))
    # What the alerts found and has not resolved yet (alerts.checks), past its grace time.
    open_alerts = Incident.objects.filter(
        cleared_at__isnull=True, alert_at__lte=timezone.now()
    ).exclude(kind=IncidentKind.MISSED_SUMMARY)  # a report, not a fault
    count = open_alerts.count()
    if count:
        subjects = "; ".join(
            subject
            for subject in open_alerts.order_by("opened_at").values_list("subject", flat=True)[:3]
            if subject
        )
        text = ngettext(
            "%(count)s open alert: %(subjects)s",
            "%(count)s open alerts: %(subjects)s",
            count,
        ) % {"count": count, "subjects": subjects}
        url = _admin("alerts_incident_changelist") + "?state=open"
        lines.append(Line(_("Alerts"), text, False, url))
    return lines


def _reports_line(now: datetime) -> Line:
    zone = tenant_timezone()
    period = period_for(PeriodKind.LAST_7, today=now.astimezone(ZoneInfo(zone)).date(), zone=zone)
    count = missed_not_returned_count(since=period.since, until=period.until)
    text = ngettext(
        "%(count)d missed call not returned in the last 7 days",
        "%(count)d missed calls not returned in the last 7 days",
        count,
    ) % {"count": count}
    url = _admin("reports_notreturnedreport_changelist") + f"?period={PeriodKind.LAST_7.value}"
    return Line(_("Reports"), text, count == 0, url)


def _ago(moment: datetime | None) -> str:
    if moment is None:
        return _("never")
    seconds = max(0, int((timezone.now() - moment).total_seconds()))
    if seconds < 120:
        return _("%(n)s s ago") % {"n": seconds}
    if seconds < 7200:
        return _("%(n)s min ago") % {"n": seconds // 60}
    if seconds < 2 * 86400:
        return _("%(n)s h ago") % {"n": seconds // 3600}
    return _("%(n)s days ago") % {"n": seconds // 86400}
