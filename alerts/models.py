"""Alerts: who is told of what (one settings row), the incidents found, and their history."""

from __future__ import annotations

from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from alerts.choices import Channel, EventKind, IncidentKind, Phase


class AlertSettings(models.Model):
    """Who is alerted, and of what. Exactly one row per tenant schema; none means no alerts."""

    singleton = models.PositiveSmallIntegerField(
        _("single-row marker"), default=1, unique=True, editable=False
    )
    user_ids = models.JSONField(
        _("Bitrix24 users alerted"),
        default=list,
        blank=True,
        help_text=_("They get a Bitrix24 notification for every alert and when it resolves."),
    )
    email = models.EmailField(
        _("email address"),
        blank=True,
        help_text=_(
            "Optional: the alerts are emailed here too (they still arrive when Bitrix24 is "
            "unreachable)."
        ),
    )
    device_silent = models.BooleanField(_("a phone goes silent"), default=True)
    device_silent_minutes = models.PositiveIntegerField(
        _("silent for (minutes)"),
        default=30,
        validators=[MinValueValidator(1)],
        help_text=_("Only office hours count: a phone switched off at night is not an alert."),
    )
    runs_failed = models.BooleanField(
        _("an action fails after its retries"),
        default=True,
        help_text=_("One alert per action type and hour, however many calls it failed for."),
    )
    bitrix24_connection = models.BooleanField(
        _("the Bitrix24 connection fails"),
        default=True,
        help_text=_(
            "Credentials refused, a missing scope, telephony refused, or the portal down; "
            "and when it works again."
        ),
    )
    portal_down_minutes = models.PositiveIntegerField(
        _("portal down for (minutes)"),
        default=10,
        validators=[MinValueValidator(1)],
        help_text=_("A shorter outage is not an alert: SIMtrix catches up by itself."),
    )
    broken_config = models.BooleanField(
        _("a routing rule or scenario action breaks"),
        default=True,
        help_text=_("Something it names (a user, a pipeline, a stage) is gone from Bitrix24."),
    )
    missed_summary = models.BooleanField(
        _("daily summary of missed calls not returned"),
        default=True,
        help_text=_("Sent when the office opens (office hours), if any caller waits for a call."),
    )
    # The check's own bookkeeping.
    checking_until = models.DateTimeField(
        _("check running until"), null=True, blank=True, editable=False
    )
    checked_at = models.DateTimeField(_("last checked at"), null=True, blank=True, editable=False)
    config_checked_at = models.DateTimeField(
        _("rules and actions last checked at"), null=True, blank=True, editable=False
    )
    summary_done_on = models.DateField(_("last summary for"), null=True, blank=True, editable=False)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("alert settings")
        verbose_name_plural = _("alert settings")
        constraints = [
            models.CheckConstraint(condition=Q(singleton=1), name="alerts_settings_singleton")
        ]

    def __str__(self) -> str:
        return str(_("Alert settings"))

    @property
    def recipients(self) -> bool:
        return bool(self.user_ids or self.email)

    @property
    def any_alert(self) -> bool:
        return any(
            (
                self.device_silent,
                self.runs_failed,
                self.bitrix24_connection,
                self.broken_config,
                self.missed_summary,
            )
        )

    @property
    def enabled(self) -> bool:
        """Someone is told of something: only then is the tenant checked at all."""
        return self.recipients and self.any_alert

    @property
    def channels(self) -> list[str]:
        return [
            channel
            for channel, on in ((Channel.BITRIX24, self.user_ids), (Channel.EMAIL, self.email))
            if on
        ]


class Incident(models.Model):
    """Something wrong found by the check: open while it lasts, alerted once, cleared once."""

    kind = models.CharField(_("kind"), max_length=32, choices=IncidentKind)
    subject_key = models.CharField(
        _("subject key"),
        max_length=200,
        help_text=_(
            "What the incident is about, as the check names it (a phone, a rule, an hour)."
        ),
    )
    subject = models.CharField(_("subject"), max_length=300, blank=True)
    opened_at = models.DateTimeField(_("opened at"))
    alert_at = models.DateTimeField(
        _("alert due at"),
        help_text=_("If it still lasts then, people are alerted (a portal down for a while)."),
    )
    notified_at = models.DateTimeField(_("alerted at"), null=True, blank=True)
    cleared_at = models.DateTimeField(_("cleared at"), null=True, blank=True)
    # What is still to be told: the alert (while it lasts), then that it resolved.
    alert_pending = models.BooleanField(_("alert to send"), default=True)
    recovery_pending = models.BooleanField(_("recovery notice to send"), default=False)
    details = models.JSONField(_("details"), default=dict, blank=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        ordering = ["-opened_at", "-pk"]
        verbose_name = _("incident")
        verbose_name_plural = _("incidents")
        constraints = [
            # One open incident per subject, found again by whichever worker checks.
            models.UniqueConstraint(
                fields=["kind", "subject_key"],
                condition=Q(cleared_at__isnull=True),
                name="alerts_one_open_incident",
            ),
            # One summary a day, even once it is closed.
            models.UniqueConstraint(
                fields=["kind", "subject_key"],
                condition=Q(kind="missed_summary"),
                name="alerts_one_summary_a_day",
            ),
        ]
        indexes = [
            models.Index(
                fields=["alert_at"],
                condition=Q(alert_pending=True) | Q(recovery_pending=True),
                name="alerts_notices_due",
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.subject or self.subject_key}"

    @property
    def is_open(self) -> bool:
        return self.cleared_at is None


class IncidentEvent(models.Model):
    """One state change of an incident or one notice about it: its history."""

    incident = models.ForeignKey(
        Incident, on_delete=models.CASCADE, related_name="events", verbose_name=_("incident")
    )
    at = models.DateTimeField(_("at"))
    kind = models.CharField(_("what happened"), max_length=16, choices=EventKind)
    phase = models.CharField(_("notice"), max_length=8, choices=Phase, blank=True)
    channel = models.CharField(_("channel"), max_length=16, choices=Channel, blank=True)
    text = models.TextField(_("text"), blank=True)
    details = models.JSONField(_("details"), default=dict, blank=True)

    class Meta:
        ordering = ["at", "pk"]
        verbose_name = _("incident event")
        verbose_name_plural = _("incident events")
        constraints = [
            # Each notice goes out once per channel: a worker that restarts finds it sent.
            models.UniqueConstraint(
                fields=["incident", "phase", "channel"],
                condition=Q(kind="notice_sent"),
                name="alerts_one_notice_per_channel",
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {timezone.localtime(self.at):%Y-%m-%d %H:%M}"
