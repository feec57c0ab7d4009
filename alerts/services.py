"""The alerts' check: incidents opened and cleared from what the checks find, and each notice
told once.

How nothing is lost or doubled when a worker dies or two run at once:
- one check at a time per tenant: a lease on the settings row, taken with a conditional update
  that must touch one row and given back at the end (a dead worker's lapses after
  SIMTRIX_ALERTS_LEASE_SECONDS, longer than a task may run);
- one open incident per subject: a partial unique constraint (and one summary a day), so a
  check that runs again finds the incident instead of opening a second;
- each notice once per channel: a `notice_sent` history row, unique per (incident, notice,
  channel), written after the notice went. A Bitrix24 notification carries a tag made of the
  incident and the notice (crm_notify_many's intent key): sent again after a crash between the
  request and the row, it replaces the first, so nobody reads it twice. An email sent again in
  that instant keeps its Message-ID, which mail clients treat as the same message.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.mail import EmailMessage
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from alerts.checks import (
    Findings,
    Problem,
    config_broken_check,
    connection_check,
    connection_unusable,
    devices_silent_check,
    missed_summary_problem,
    runs_failed_check,
    summary_opening,
)
from alerts.choices import (
    CONNECTION_KINDS,
    NOTICE_KINDS,
    Channel,
    EventKind,
    IncidentKind,
    Phase,
)
from alerts.models import AlertSettings, Incident, IncidentEvent
from alerts.notices import Notice, notice_render
from crm.errors import Bitrix24Error
from crm.health import ConnectionHealth, connection_health
from crm.services import crm_notify_many
from scenarios.worktime import work_schedule
from tenants.connection import tenant_connection
from tenants.context import tenant_language_active, tenant_public_url
from tenants.fanout import schedule_flag_set, scheduled_schemas

logger = logging.getLogger(__name__)

# A recovery notice that still cannot be sent after this long is given up (and said so).
RECOVERY_GIVE_UP = timedelta(days=1)
# Rules and actions are looked at after every directory sync, and at least this often.
CONFIG_EVERY = timedelta(minutes=5)
SILENT_KINDS: tuple[str, ...] = (IncidentKind.DEVICE_SILENT,)
RUNS_KINDS: tuple[str, ...] = (IncidentKind.RUNS_FAILED,)
CONFIG_KINDS: tuple[str, ...] = (IncidentKind.RULE_BROKEN, IncidentKind.ACTION_BROKEN)


# --- Settings ------------------------------------------------------------------------------------


def alert_settings_ensure() -> AlertSettings:
    settings_row, _ = AlertSettings.objects.get_or_create(singleton=1)
    return settings_row


def alerts_schedule_on_settings_saved(*, instance: AlertSettings, **kwargs: Any) -> None:
    """Whether the tenant is checked at all is kept in public, where the minute's fan-out reads
    it: a tenant without alerts costs the check nothing."""
    schedule_flag_set(alerts=instance.enabled)


def alerts_schemas() -> list[str]:
    """The active tenants with alerts on and someone to tell."""
    return scheduled_schemas("alerts")


# --- The check -----------------------------------------------------------------------------------


def _lease_take(pk: int) -> bool:
    now = timezone.now()
    lease = timedelta(seconds=settings.SIMTRIX_ALERTS_LEASE_SECONDS)
    return (
        AlertSettings.objects.filter(pk=pk)
        .filter(Q(checking_until__isnull=True) | Q(checking_until__lt=now))
        .update(checking_until=now + lease)
        == 1
    )


def alerts_check(*, now: datetime | None = None) -> dict[str, int]:
    """Runs the tenant's checks once: incidents opened, cleared, told. Returns what it did."""
    now = now or timezone.now()
    row = AlertSettings.objects.filter(singleton=1).first()
    if row is None or not row.enabled:
        return {}
    if not _lease_take(row.pk):
        return {"busy": 1}
    done: Counter[str] = Counter()
    finished: dict[str, Any] = {}
    try:
        health = _run_checks(row, now, done)
        _notices_send(row, now, health, done)
        finished = {"checked_at": now}
        if done.pop("config_checked", 0):
            finished["config_checked_at"] = now
    finally:
        # The lease given back, with what was done (nothing if the check failed).
        AlertSettings.objects.filter(pk=row.pk).update(checking_until=None, **finished)
    return {what: count for what, count in done.items() if count}


def _config_due(row: AlertSettings, health: ConnectionHealth, now: datetime) -> bool:
    """Rules and actions break when the directory changes (its sync marks the rules) or when
    someone edits them: checked after every sync, else every few minutes."""
    last = row.config_checked_at
    if last is None or now < last or now - last >= CONFIG_EVERY:
        return True
    return health.directory_synced_at is not None and health.directory_synced_at > last


def _run_checks(row: AlertSettings, now: datetime, done: Counter[str]) -> ConnectionHealth:
    schedule = work_schedule()
    health = connection_health()
    open_all = list(Incident.objects.filter(cleared_at__isnull=True).order_by("pk"))

    def open_of(kinds: tuple[str, ...]) -> list[Incident]:
        return [incident for incident in open_all if incident.kind in kinds]

    def devices() -> Findings:
        return devices_silent_check(
            open_=open_of(SILENT_KINDS),
            minutes=row.device_silent_minutes,
            schedule=schedule,
            now=now,
        )

    def runs() -> Findings:
        return runs_failed_check(open_=open_of(RUNS_KINDS), now=now)

    def connection() -> Findings:
        nonlocal health
        findings, health = connection_check(
            open_=open_of(CONNECTION_KINDS),
            health=health,
            down_minutes=row.portal_down_minutes,
            now=now,
        )
        return findings

    def config() -> Findings | None:
        if not _config_due(row, health, now):
            return None
        done["config_checked"] = 1
        return config_broken_check(open_=open_of(CONFIG_KINDS))

    checks: list[tuple[bool, tuple[str, ...], Callable[[], Findings | None]]] = [
        (row.device_silent, SILENT_KINDS, devices),
        (row.runs_failed, RUNS_KINDS, runs),
        (row.bitrix24_connection, CONNECTION_KINDS, connection),
        (row.broken_config, CONFIG_KINDS, config),
    ]
    for on, kinds, check in checks:
        if not on:
            # An alert turned off: its open incidents are closed without a word.
            for incident in open_of(kinds):
                done["cleared"] += _clear(incident, now, reason="turned off", quietly=True)
            continue
        try:
            findings = check()
            if findings is not None:
                _apply(findings, open_of(kinds), now, done)
        except SoftTimeLimitExceeded:  # out of time: the lease is given back, the next minute
            raise
        except Exception:  # one check's failure must not stop the others (nor their notices)
            logger.exception("alerts: the %s check failed", kinds[0])
            done["errors"] += 1
    if row.missed_summary:
        try:
            _summary(row, schedule, now, done)
        except SoftTimeLimitExceeded:
            raise
        except Exception:
            logger.exception("alerts: the daily summary failed")
            done["errors"] += 1
    return health


def _apply(findings: Findings, open_: list[Incident], now: datetime, done: Counter[str]) -> None:
    still_open = {(incident.kind, incident.subject_key): incident for incident in open_}
    for incident in open_:
        reason = findings.resolved.get(incident.pk)
        if reason is not None and _clear(incident, now, reason=reason):
            done["cleared"] += 1
            still_open.pop((incident.kind, incident.subject_key), None)
    for problem in findings.problems:
        same = still_open.get((problem.kind, problem.key))
        if same is None:
            done["opened"] += _open(problem, now)
        elif same.details != problem.details:
            # More of the same (another failed run in the hour): one alert still.
            Incident.objects.filter(pk=same.pk).update(details=problem.details)


def _open(problem: Problem, now: datetime) -> int:
    try:
        with transaction.atomic():
            incident = Incident.objects.create(
                kind=problem.kind,
                subject_key=problem.key,
                subject=problem.subject[:300],
                opened_at=now,
                alert_at=now + problem.alert_after,
                details=problem.details,
            )
            IncidentEvent.objects.create(incident=incident, kind=EventKind.OPENED, at=now)
    except IntegrityError:  # opened by a check that ran meanwhile (or today's summary made)
        return 0
    return 1


def _clear(incident: Incident, now: datetime, *, reason: str, quietly: bool = False) -> bool:
    alerted = incident.alert_at <= now and not quietly
    details = {**incident.details, "cleared": {"reason": reason}}
    with transaction.atomic():
        cleared = Incident.objects.filter(pk=incident.pk, cleared_at__isnull=True).update(
            cleared_at=now,
            details=details,
            alert_pending=False,
            recovery_pending=alerted and incident.kind not in NOTICE_KINDS,
        )
        if cleared != 1:
            return False
        IncidentEvent.objects.create(
            incident=incident, kind=EventKind.CLEARED, at=now, details={"reason": reason}
        )
    return True


def _summary(row: AlertSettings, schedule: Any, now: datetime, done: Counter[str]) -> None:
    """Once a working day, when the office opens: the missed calls nobody called back."""
    today: date = now.astimezone(schedule.tz).date()
    if row.summary_done_on == today or summary_opening(schedule, now) is None:
        return
    problem = missed_summary_problem(now=now, day=today)
    with transaction.atomic():
        # Claimed with the day's summary (if any) in one transaction: both or neither.
        claimed = (
            AlertSettings.objects.filter(pk=row.pk)
            .filter(Q(summary_done_on__isnull=True) | Q(summary_done_on__lt=today))
            .update(summary_done_on=today)
        )
        if claimed and problem is not None:
            done["opened"] += _open(problem, now)


# --- Notices -------------------------------------------------------------------------------------


def _notices_send(
    row: AlertSettings, now: datetime, health: ConnectionHealth, done: Counter[str]
) -> None:
    due = Incident.objects.filter(
        Q(alert_pending=True, cleared_at__isnull=True, alert_at__lte=now) | Q(recovery_pending=True)
    ).order_by("pk")
    channels = row.channels
    # A channel that failed once in this check is not tried again before the next one (a
    # portal down would make every notice wait for its timeouts); no portal, not at all.
    failing: set[str] = {Channel.BITRIX24} if connection_unusable(health) else set()
    for incident in due:
        phase = Phase.CLEARED if incident.cleared_at is not None else Phase.OPENED
        sent = set(
            IncidentEvent.objects.filter(
                incident=incident, kind=EventKind.NOTICE_SENT, phase=phase
            ).values_list("channel", flat=True)
        )
        for channel in channels:
            if channel in sent or channel in failing:
                continue
            if _deliver(incident, phase, channel, row):
                sent.add(channel)
                done[f"sent_{phase}"] += 1
            else:
                failing.add(channel)
        _notices_settle(incident, phase, complete=set(channels) <= sent, anything=bool(sent))


def _notices_settle(incident: Incident, phase: str, *, complete: bool, anything: bool) -> None:
    now = timezone.now()
    if phase == Phase.OPENED:
        if anything and incident.notified_at is None:
            Incident.objects.filter(pk=incident.pk, notified_at__isnull=True).update(
                notified_at=now
            )
        if not complete:
            if incident.kind in NOTICE_KINDS and now - incident.opened_at > RECOVERY_GIVE_UP:
                _give_up(incident, phase, cleared=True)
            return
        if incident.kind in NOTICE_KINDS:
            # Told: a summary has nothing to wait for.
            Incident.objects.filter(pk=incident.pk, cleared_at__isnull=True).update(
                cleared_at=now, alert_pending=False
            )
            return
        Incident.objects.filter(pk=incident.pk).update(alert_pending=False)
        return
    assert incident.cleared_at is not None  # a recovery notice is for a cleared incident
    if complete:
        Incident.objects.filter(pk=incident.pk).update(recovery_pending=False)
    elif now - incident.cleared_at > RECOVERY_GIVE_UP:
        _give_up(incident, phase, cleared=False)


def _give_up(incident: Incident, phase: str, *, cleared: bool) -> None:
    """A notice that could not go for a day: not tried any more, and the history says so."""
    now = timezone.now()
    with transaction.atomic():
        changes: dict[str, Any] = {"alert_pending": False, "recovery_pending": False}
        if cleared:
            changes["cleared_at"] = now
        Incident.objects.filter(pk=incident.pk).update(**changes)
        IncidentEvent.objects.create(
            incident=incident,
            kind=EventKind.NOTICE_FAILED,
            phase=phase,
            at=now,
            text="given up: not sent within a day",
        )


def _deliver(incident: Incident, phase: str, channel: str, row: AlertSettings) -> bool:
    with tenant_language_active():
        notice = notice_render(incident, phase)
    try:
        if channel == Channel.BITRIX24:
            ids = crm_notify_many(
                user_ids=[int(user) for user in row.user_ids],
                message=notice.text,
                tag=f"simtrix-alert:{tenant_connection.schema_name}:{incident.pk}:{phase}",
            )
            details: dict[str, Any] = {"users": {str(user): nid for user, nid in ids.items()}}
        else:
            _email(incident, phase, notice, row.email)
            details = {"to": row.email}
    except (Bitrix24Error, OSError) as exc:
        error = exc.display() if isinstance(exc, Bitrix24Error) else f"{type(exc).__name__}: {exc}"
        _failed(incident, phase, channel, error)
        return False
    try:
        with transaction.atomic():
            IncidentEvent.objects.create(
                incident=incident,
                kind=EventKind.NOTICE_SENT,
                phase=phase,
                channel=channel,
                at=timezone.now(),
                text=notice.text,
                details=details,
            )
    except IntegrityError:  # recorded by another check meanwhile: sent all the same
        pass
    return True


def _email(incident: Incident, phase: str, notice: Notice, address: str) -> None:
    domain = urlsplit(tenant_public_url()).hostname or "simtrix.invalid"
    EmailMessage(
        subject=notice.title[:200],
        body=notice.text,
        to=[address],
        headers={"Message-ID": f"<alert.{incident.pk}.{phase}@{domain}>"},
    ).send()


def _failed(incident: Incident, phase: str, channel: str, error: str) -> None:
    """A notice that did not go: said in the history once per distinct error (it is tried
    again every minute)."""
    last = (
        IncidentEvent.objects.filter(incident=incident, phase=phase, channel=channel)
        .order_by("-at", "-pk")
        .first()
    )
    if last is not None and last.kind == EventKind.NOTICE_FAILED and last.text == error[:2000]:
        return
    logger.warning(
        "alerts: %s notice of incident %s by %s not sent: %s", phase, incident.pk, channel, error
    )
    IncidentEvent.objects.create(
        incident=incident,
        kind=EventKind.NOTICE_FAILED,
        phase=phase,
        channel=channel,
        at=timezone.now(),
        text=error[:2000],
    )
