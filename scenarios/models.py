from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from common.crypto import EncryptedTextField
from scenarios import choices
from scenarios.catalog import action_catalog_errors, crm_catalog
from scenarios.choices import ActionType, Trigger
from scenarios.routing.rules import Condition, condition_errors, target_errors
from scenarios.validation import action_errors, hours_errors


class Scenario(models.Model):
    """What SIMtrix does in Bitrix24 for one kind of call: an ordered list of actions.

    One per trigger for the whole tenant, plus any limited to some devices (lines): for a call,
    the scenario of its trigger that names the call's device wins over the tenant-wide one. A
    device is in at most one scenario per trigger (checked by the admin form and the import).
    """

    trigger = models.CharField(_("trigger"), max_length=32, choices=Trigger)
    name = models.CharField(_("name"), max_length=100)
    devices = models.ManyToManyField(
        "calls.Device",
        blank=True,
        related_name="scenarios",
        verbose_name=_("devices"),
        help_text=_(
            "Only for calls on these phones (lines); empty = every phone that has no scenario "
            "of its own for this trigger."
        ),
    )
    is_active = models.BooleanField(
        _("active"),
        default=True,
        help_text=_("An inactive scenario plans nothing (calls stay unlogged)."),
    )
    description = models.TextField(_("description"), blank=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        ordering = ["trigger"]
        verbose_name = _("scenario")
        verbose_name_plural = _("scenarios")

    def __str__(self) -> str:
        return self.name


class ScenarioAction(models.Model):
    """One step of a scenario. Which fields matter depends on the type (see `clean`)."""

    # The choices are the action's, defined in choices.py (validation reads them without the model).
    Timing = choices.Timing
    Hours = choices.Hours
    Responsible = choices.Responsible
    CardFor = choices.CardFor
    AutomationTarget = choices.AutomationTarget
    Target = choices.AutomationTarget
    Recipient = choices.Recipient

    scenario = models.ForeignKey(
        Scenario, on_delete=models.CASCADE, related_name="actions", verbose_name=_("scenario")
    )
    position = models.PositiveIntegerField(
        pgettext_lazy("place in an order", "position"), default=0
    )
    action_type = models.CharField(_("type"), max_length=32, choices=ActionType)
    is_active = models.BooleanField(pgettext_lazy("scenario action", "active"), default=True)
    timing = models.CharField(
        _("timing"), max_length=16, choices=Timing, default=Timing.IMMEDIATELY
    )
    delay_minutes = models.PositiveIntegerField(
        _("delay (minutes)"),
        default=0,
        help_text=_(
            "Minutes after the end of the call (or of the previous action); for 'before a "
            "date', minutes before that date."
        ),
    )
    delay_in_working_time = models.BooleanField(
        _("delay in working time"),
        default=False,
        help_text=_("Count the delay in office hours only (nights, weekends skipped)."),
    )
    hours = models.CharField(
        _("when"),
        max_length=8,
        choices=Hours,
        default=Hours.ALWAYS,
        help_text=_("Office hours are judged at the moment the call started."),
    )
    responsible = models.CharField(_("responsible"), max_length=16, choices=Responsible, blank=True)
    users = models.JSONField(
        _("users"),
        default=list,
        blank=True,
        help_text=_(
            "Bitrix24 user ids: the fixed user, the round-robin set (empty = every agent "
            "with a bridge device) or extra notification recipients."
        ),
    )
    recipients = models.JSONField(
        _("recipients"),
        default=list,
        blank=True,
        help_text=_("Who gets the notification: the responsible user, the device's agent."),
    )
    card_for = models.CharField(_("card for"), max_length=8, choices=CardFor, blank=True)
    title_template = models.CharField(_("title template"), max_length=255, blank=True)
    text_template = models.TextField(_("text template"), blank=True)
    deadline_minutes = models.PositiveIntegerField(
        _("deadline (minutes)"),
        null=True,
        blank=True,
        help_text=_("Task deadline, counted from when the task is created."),
    )
    deadline_in_working_time = models.BooleanField(_("deadline in working time"), default=False)
    skip_if_reached = models.BooleanField(
        _("skip if reached"),
        default=True,
        help_text=_(
            "Callback task: skip it when the caller was reached meanwhile by an answered "
            "call in either direction."
        ),
    )
    automation_code = models.CharField(_("automation code"), max_length=100, blank=True)
    target = models.CharField(
        _("works on"),
        max_length=8,
        choices=AutomationTarget,
        blank=True,
        help_text=_("Change status, responsible or fields: the caller's entity or its open deal."),
    )
    status_id = models.CharField(
        _("new status or stage"),
        max_length=50,
        blank=True,
        help_text=_("A lead status (entity) or a stage of the deal's pipeline (deal)."),
    )
    fields = models.JSONField(
        _("fields"),
        default=dict,
        blank=True,
        help_text=_("Fields to set, as Bitrix24 names them, with fixed values or templates."),
    )
    url = models.CharField(_("webhook URL"), max_length=500, blank=True)
    secret = EncryptedTextField(
        _("webhook secret"),
        max_length=200,
        blank=True,
        help_text=_("Signs each request (HMAC-SHA256); stored encrypted, never shown again."),
    )
    conditions = models.JSONField(
        _("conditions"),
        default=list,
        blank=True,
        help_text=_(
            "Run only when all hold, on the caller's CRM data when the action runs (as routing "
            "rules' conditions)."
        ),
    )
    date_field = models.CharField(
        _("date field"),
        max_length=100,
        blank=True,
        help_text=_("Before a date: the field that holds it, e.g. CLOSEDATE or UF_CRM_..."),
    )
    date_of = models.CharField(_("date of"), max_length=8, choices=AutomationTarget, blank=True)
    automation_target = models.CharField(
        _("automation target"), max_length=8, choices=AutomationTarget, blank=True
    )
    lead_status_id = models.CharField(_("lead status"), max_length=50, blank=True)
    lead_source_id = models.CharField(_("lead source"), max_length=50, blank=True)
    pipeline_id = models.PositiveIntegerField(_("pipeline"), null=True, blank=True)
    stage_id = models.CharField(_("stage"), max_length=50, blank=True)

    class Meta:
        ordering = ["scenario", "position", "pk"]
        verbose_name = _("scenario action")
        verbose_name_plural = _("scenario actions")

    def __str__(self) -> str:
        return f"{self.get_action_type_display()} ({self.scenario.trigger})"

    def clean(self) -> None:
        try:
            # In an admin inline the scenario may be new (unsaved) but already attached.
            trigger = self.scenario.trigger
        except Scenario.DoesNotExist:
            trigger = ""
        config = self.as_config()
        errors = action_errors(
            config, trigger=trigger, allow_http=scenario_settings_get().webhooks_allow_http
        )
        if not errors:
            errors = action_catalog_errors(config, crm_catalog())
        if errors:
            by_field: dict[str, list[str]] = {}
            for key, message in errors.items():
                by_field.setdefault(key if key in _FIELD_NAMES else NON_FIELD_ERRORS, []).append(
                    message
                )
            raise ValidationError(by_field)

    def as_config(self) -> dict:
        """The action's settings as plain data (export, run parameters, validation)."""
        return {name: getattr(self, name) for name in CONFIG_FIELDS}


# The settings of an action, in export order; `position` and `scenario` come from the context.
CONFIG_FIELDS = (
    "action_type",
    "is_active",
    "timing",
    "delay_minutes",
    "delay_in_working_time",
    "hours",
    "responsible",
    "users",
    "recipients",
    "card_for",
    "title_template",
    "text_template",
    "deadline_minutes",
    "deadline_in_working_time",
    "skip_if_reached",
    "automation_code",
    "automation_target",
    "lead_status_id",
    "lead_source_id",
    "pipeline_id",
    "stage_id",
    "target",
    "status_id",
    "fields",
    "url",
    "secret",
    "conditions",
    "date_field",
    "date_of",
)
_FIELD_NAMES = frozenset(CONFIG_FIELDS)


class ScenarioSettings(models.Model):
    """The tenant's settings of the scenario actions. Exactly one row per tenant schema."""

    singleton = models.PositiveSmallIntegerField(
        _("singleton"), default=1, unique=True, editable=False
    )
    webhooks_allow_http = models.BooleanField(
        _("webhooks may use http"),
        default=False,
        help_text=_(
            "Webhook actions may post to http:// addresses (the call's data then travels "
            "unencrypted). Private and local addresses stay refused."
        ),
    )
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("scenario settings")
        verbose_name_plural = _("scenario settings")
        constraints = [
            models.CheckConstraint(
                condition=models.Q(singleton=1), name="scenarios_scenario_settings_singleton"
            )
        ]

    def __str__(self) -> str:
        return str(_("Scenario settings"))


def scenario_settings_get() -> ScenarioSettings:
    """The tenant's scenario settings (the defaults when none were saved)."""
    return ScenarioSettings.objects.filter(singleton=1).first() or ScenarioSettings()


class OfficeHours(models.Model):
    """One opening period of a weekday, in the tenant's timezone (several = a lunch break)."""

    class Weekday(models.IntegerChoices):
        MONDAY = 0, _("Monday")
        TUESDAY = 1, _("Tuesday")
        WEDNESDAY = 2, _("Wednesday")
        THURSDAY = 3, _("Thursday")
        FRIDAY = 4, _("Friday")
        SATURDAY = 5, _("Saturday")
        SUNDAY = 6, _("Sunday")

    weekday = models.PositiveSmallIntegerField(_("weekday"), choices=Weekday)
    opens_at = models.TimeField(_("opens at"))
    closes_at = models.TimeField(
        _("closes at"), help_text=_("00:00 means midnight (the end of the day).")
    )

    class Meta:
        ordering = ["weekday", "opens_at"]
        verbose_name = _("office hours")
        verbose_name_plural = _("office hours")

    def __str__(self) -> str:
        return (
            f"{self.get_weekday_display()} {self.opens_at:%H:%M}-{self.closes_at:%H:%M}"
            if self.opens_at and self.closes_at
            else self.get_weekday_display()
        )

    def clean(self) -> None:
        errors = hours_errors(
            [
                *OfficeHours.objects.exclude(pk=self.pk).values_list(
                    "weekday", "opens_at", "closes_at"
                ),
                (self.weekday, self.opens_at, self.closes_at),
            ],
            day_names=[str(day.label) for day in OfficeHours.Weekday],
        )
        if errors:
            raise ValidationError(errors[0])


class Holiday(models.Model):
    """A day the office is closed; `every_year` repeats it on the same date each year."""

    date = models.DateField(_("date"), unique=True)
    name = models.CharField(_("name"), max_length=100, blank=True)
    every_year = models.BooleanField(_("every year"), default=False)

    class Meta:
        ordering = ["date"]
        verbose_name = _("holiday")
        verbose_name_plural = _("holidays")

    def __str__(self) -> str:
        return f"{self.date:%Y-%m-%d} {self.name}".strip()


class CallPlan(models.Model):
    """A planning phase done for a call: planning is once per phase, whatever events repeat.

    `start`: the caller is known (ring-time card, unknown-number scenario); `end`: the outcome's
    scenario. The unique constraint makes concurrent events plan a phase exactly once.
    """

    class Phase(models.TextChoices):
        START = "start", _("Start")
        END = "end", _("End")

    call = models.ForeignKey(
        "calls.Call", on_delete=models.CASCADE, related_name="plans", verbose_name=_("call")
    )
    phase = models.CharField(_("phase"), max_length=8, choices=Phase)
    trigger = models.CharField(_("trigger"), max_length=32, blank=True)
    office_open = models.BooleanField(_("during office hours"), null=True)
    planned_at = models.DateTimeField(_("planned at"), auto_now_add=True)

    class Meta:
        ordering = ["planned_at", "pk"]
        verbose_name = _("call plan")
        verbose_name_plural = _("call plans")
        constraints = [
            models.UniqueConstraint(fields=["call", "phase"], name="scenarios_plan_call_phase")
        ]

    def __str__(self) -> str:
        return f"{self.phase} of call {self.call_id}"


class RoundRobinCursor(models.Model):
    """Who got the last assignment from one set of users (row-locked while choosing)."""

    key = models.CharField(_("set of users"), max_length=200, unique=True)
    last_user_id = models.PositiveIntegerField(_("last user"), null=True, blank=True)
    assignments = models.PositiveIntegerField(_("assignments"), default=0)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("round-robin turn")
        verbose_name_plural = _("round-robin turns")

    def __str__(self) -> str:
        return f"{self.key} -> {self.last_user_id}"


class ActionRun(models.Model):
    """One planned piece of work for a call (the outbox).

    Written in the same transaction as the call event that caused it, so it can never be lost;
    Celery only carries the row's id. A run is claimed with a conditional update, so a duplicate
    message is a no-op, and a periodic dispatcher re-sends rows whose message went missing.
    """

    class Status(models.TextChoices):
        SCHEDULED = "scheduled", _("Scheduled")
        RUNNING = "running", _("Running")
        DONE = "done", _("Done")
        FAILED = "failed", _("Failed")
        SKIPPED = "skipped", _("Skipped")
        CANCELLED = "cancelled", _("Cancelled")

    call = models.ForeignKey(
        "calls.Call",
        on_delete=models.CASCADE,
        related_name="action_runs",
        verbose_name=_("call"),
    )
    action_type = models.CharField(_("action type"), max_length=32)
    label = models.CharField(
        _("label"),
        max_length=150,
        blank=True,
        help_text=_("The scenario step that planned this run."),
    )
    params = models.JSONField(_("parameters"), default=dict, blank=True)
    dedupe_key = models.CharField(
        _("deduplication key"),
        max_length=200,
        unique=True,
        help_text=_("Identifies the work, so that planning it twice makes only one run."),
    )
    after = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="successors",
        verbose_name=_("after"),
        help_text=_("The run this one waits for: it starts once that one has finished."),
    )
    delay_seconds = models.PositiveIntegerField(_("delay (seconds)"), default=0)
    delay_in_working_time = models.BooleanField(_("delay in working time"), default=False)
    status = models.CharField(_("status"), max_length=16, choices=Status, default=Status.SCHEDULED)
    due_at = models.DateTimeField(
        _("due at"),
        null=True,
        blank=True,
        help_text=_("Empty while it waits for the run it follows."),
    )
    dispatched_at = models.DateTimeField(_("dispatched at"), null=True, blank=True)
    claimed_at = models.DateTimeField(_("started at"), null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0)
    last_error = models.TextField(_("last error"), blank=True)
    result = models.JSONField(_("result"), default=dict, blank=True)
    done_at = models.DateTimeField(_("done at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    # A run due for longer than this and not started is late (the admin, outbox_status, readyz).
    LATE_AFTER = timedelta(minutes=1)

    class Meta:
        ordering = ["due_at", "pk"]
        indexes = [models.Index(fields=["status", "due_at"], name="scenarios_run_due")]
        verbose_name = _("action run")
        verbose_name_plural = _("action runs")

    def __str__(self) -> str:
        return f"{self.action_type} for call {self.call_id} ({self.status})"

    @property
    def late_by(self) -> timedelta | None:
        """How long past due a scheduled run is, once it counts as late."""
        if self.status != self.Status.SCHEDULED or self.due_at is None:
            return None
        overdue = timezone.now() - self.due_at
        return overdue if overdue > self.LATE_AFTER else None


# --- Routing by CRM data (issue 6) ------------------------------------------------------------


class RoutingSettings(models.Model):
    """How incoming calls are routed, besides the rules. Exactly one row per tenant schema."""

    class OthersTarget(models.TextChoices):
        AGENT = "agent", _("The device's agent (who carries the phone it rang on)")
        USER = "user", _("A fixed user")

    class MissedTo(models.TextChoices):
        ROUTED = "routed", _("The routed user")
        NEXT = "next", _("The next member of the queue")

    singleton = models.PositiveSmallIntegerField(
        _("singleton"), default=1, unique=True, editable=False
    )
    responsible_first = models.BooleanField(
        _("route identified callers to their responsible user"),
        default=True,
        help_text=_(
            "As Bitrix24's own telephony: before the rules, a caller found in the CRM goes "
            "to the entity's responsible user when they are available."
        ),
    )
    use_timeman = models.BooleanField(
        _("use the work-day status for availability"),
        default=False,
        help_text=_(
            "Users whose Bitrix24 work day is closed, paused or expired count as unavailable. "
            "Read every minute; the Bitrix24 connection needs the 'timeman' scope."
        ),
    )
    others_target = models.CharField(
        _('"Others" target'),
        max_length=8,
        choices=OthersTarget,
        default=OthersTarget.AGENT,
        help_text=_("Where callers go that match no rule (unknown numbers included)."),
    )
    others_user_id = models.PositiveIntegerField(
        _('"Others" user'),
        null=True,
        blank=True,
        help_text=_(
            "Bitrix24 user for 'A fixed user' (the device's agent if they are unavailable)."
        ),
    )
    missed_to = models.CharField(
        _("missed calls go to"),
        max_length=8,
        choices=MissedTo,
        default=MissedTo.ROUTED,
        help_text=_(
            "Whom the missed-call scenario treats as the routed user (notifications, "
            "callback tasks) when the routed user did not answer."
        ),
    )
    transfer_updates_responsible = models.BooleanField(
        _("a transfer makes the answering agent the lead's responsible"),
        default=False,
        help_text=_(
            "When an incoming call is answered by an agent other than the lead's "
            "responsible user, that agent becomes the lead's responsible in Bitrix24."
        ),
    )
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("routing settings")
        verbose_name_plural = _("routing settings")
        constraints = [
            models.CheckConstraint(
                condition=models.Q(singleton=1), name="scenarios_routing_settings_singleton"
            )
        ]

    def __str__(self) -> str:
        return str(_("Routing settings"))

    def clean(self) -> None:
        if self.others_target == self.OthersTarget.USER and not self.others_user_id:
            raise ValidationError({"others_user_id": _("Choose the user for 'A fixed user'.")})


class RoutingRule(models.Model):
    """One rule: when all its conditions hold, the call goes to its target. Applied in order."""

    class Target(models.TextChoices):
        RESPONSIBLE = "responsible", _("The responsible user of the matched entity or deal")
        USER = "user", _("A specific user")
        ROUND_ROBIN = "round_robin", _("Round-robin over users or a department")
        QUEUE = "queue", _("A queue of users (the first available)")

    name = models.CharField(
        _("name"),
        max_length=100,
        unique=True,
        help_text=_("Shown on the phone (SIMtrix Bridge app)."),
    )
    position = models.PositiveIntegerField(
        pgettext_lazy("place in an order", "position"),
        default=0,
        help_text=_("Rules apply in this order."),
    )
    enabled = models.BooleanField(_("enabled"), default=True)
    target = models.CharField(_("target"), max_length=16, choices=Target)
    users = models.JSONField(
        _("users"),
        default=list,
        blank=True,
        help_text=_(
            "Bitrix24 user ids: the specific user, the round-robin set or the queue (in order)."
        ),
    )
    department_id = models.PositiveIntegerField(
        _("department"),
        null=True,
        blank=True,
        help_text=_("Round-robin over the active members of this Bitrix24 department."),
    )
    broken_reason = models.TextField(
        _("why it is broken"),
        blank=True,
        editable=False,
        help_text=_(
            "Set when something the rule names no longer exists in Bitrix24; the rule is "
            "skipped until it is fixed."
        ),
    )
    checked_at = models.DateTimeField(_("checked at"), null=True, blank=True, editable=False)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        ordering = ["position", "pk"]
        verbose_name = _("routing rule")
        verbose_name_plural = _("routing rules")

    def __str__(self) -> str:
        return self.name

    @property
    def broken(self) -> bool:
        return bool(self.broken_reason)

    def clean(self) -> None:
        errors = target_errors(
            target=self.target, users=self.users, department_id=self.department_id
        )
        if errors:
            raise ValidationError(errors)


class RoutingCondition(models.Model):
    """One condition of a rule: a field of the caller's CRM data, an operator and values."""

    class Source(models.TextChoices):
        ENTITY_TYPE = "entity_type", _("Caller type (contact, company or lead)")
        ENTITY = "entity", _("A field of the caller's entity")
        DEAL = "deal", _("A field of an open deal (any open deal matches)")

    class Operator(models.TextChoices):
        EQUALS = "equals", _("equals")
        NOT_EQUALS = "not_equals", _("does not equal")
        CONTAINS = "contains", _("contains (every value given)")
        NOT_CONTAINS = "not_contains", _("does not contain")
        EMPTY = "empty", _("is empty")
        NOT_EMPTY = "not_empty", _("is not empty")

    rule = models.ForeignKey(
        RoutingRule,
        on_delete=models.CASCADE,
        related_name="conditions",
        verbose_name=_("routing rule"),
    )
    position = models.PositiveIntegerField(
        pgettext_lazy("place in an order", "position"), default=0
    )
    source = models.CharField(
        pgettext_lazy("routing condition", "source"), max_length=16, choices=Source
    )
    field = models.CharField(
        _("field"),
        max_length=100,
        blank=True,
        help_text=_(
            "responsible, type, source, status, a deal's pipeline or stage, or any field "
            "as Bitrix24 names it (UF_CRM_...). Empty for the caller type."
        ),
    )
    operator = models.CharField(
        pgettext_lazy("routing condition", "operator"), max_length=16, choices=Operator
    )
    values = models.JSONField(_("values"), default=list, blank=True)
    broken_reason = models.TextField(_("why it is broken"), blank=True, editable=False)

    class Meta:
        ordering = ["rule", "position", "pk"]
        verbose_name = _("routing condition")
        verbose_name_plural = _("routing conditions")

    def __str__(self) -> str:
        return self.as_condition().describe()

    def as_condition(self) -> Any:
        return Condition(
            self.source, self.field, self.operator, tuple(str(v) for v in self.values or [])
        )

    def clean(self) -> None:
        errors = condition_errors(
            source=self.source, field=self.field, operator=self.operator, values=self.values
        )
        if errors:
            # The admin edits `values` through other form fields: report it for the row.
            raise ValidationError(
                {
                    name if name in ("source", "field", "operator") else NON_FIELD_ERRORS: message
                    for name, message in errors.items()
                }
            )
