from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import models
from django.utils import timezone

from scenarios import choices
from scenarios.choices import ActionType, Trigger
from scenarios.routing.rules import Condition, condition_errors, target_errors
from scenarios.validation import action_errors, hours_errors


class Scenario(models.Model):
    """What SIMtrix does in Bitrix24 for one kind of call: an ordered list of actions."""

    trigger = models.CharField(max_length=32, choices=Trigger, unique=True)
    name = models.CharField(max_length=100)
    is_active = models.BooleanField(
        "active",
        default=True,
        help_text="An inactive scenario plans nothing (calls stay unlogged).",
    )
    description = models.TextField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["trigger"]

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
    Recipient = choices.Recipient

    scenario = models.ForeignKey(Scenario, on_delete=models.CASCADE, related_name="actions")
    position = models.PositiveIntegerField(default=0)
    action_type = models.CharField("type", max_length=32, choices=ActionType)
    is_active = models.BooleanField("active", default=True)
    timing = models.CharField(max_length=16, choices=Timing, default=Timing.IMMEDIATELY)
    delay_minutes = models.PositiveIntegerField(default=0)
    delay_in_working_time = models.BooleanField(
        default=False, help_text="Count the delay in office hours only (nights, weekends skipped)."
    )
    hours = models.CharField(
        "when",
        max_length=8,
        choices=Hours,
        default=Hours.ALWAYS,
        help_text="Office hours are judged at the moment the call started.",
    )
    responsible = models.CharField(max_length=16, choices=Responsible, blank=True)
    users = models.JSONField(
        default=list,
        blank=True,
        help_text="Bitrix24 user ids: the fixed user, the round-robin set (empty = every agent "
        "with a bridge device) or extra notification recipients.",
    )
    recipients = models.JSONField(
        default=list, blank=True, help_text="Notification recipients: responsible, agent."
    )
    card_for = models.CharField(max_length=8, choices=CardFor, blank=True)
    title_template = models.CharField(max_length=255, blank=True)
    text_template = models.TextField(blank=True)
    deadline_minutes = models.PositiveIntegerField(
        null=True, blank=True, help_text="Task deadline, counted from when the task is created."
    )
    deadline_in_working_time = models.BooleanField(default=False)
    skip_if_reached = models.BooleanField(
        default=True,
        help_text="Callback task: skip it when the caller was reached meanwhile by an answered "
        "call in either direction.",
    )
    automation_code = models.CharField(max_length=100, blank=True)
    automation_target = models.CharField(max_length=8, choices=AutomationTarget, blank=True)
    lead_status_id = models.CharField("lead status", max_length=50, blank=True)
    lead_source_id = models.CharField("lead source", max_length=50, blank=True)
    pipeline_id = models.PositiveIntegerField("pipeline", null=True, blank=True)
    stage_id = models.CharField("stage", max_length=50, blank=True)

    class Meta:
        ordering = ["scenario", "position", "pk"]

    def __str__(self) -> str:
        return f"{self.get_action_type_display()} ({self.scenario.trigger})"

    def clean(self) -> None:
        try:
            # In an admin inline the scenario may be new (unsaved) but already attached.
            trigger = self.scenario.trigger
        except Scenario.DoesNotExist:
            trigger = ""
        errors = action_errors(self.as_config(), trigger=trigger)
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
)
_FIELD_NAMES = frozenset(CONFIG_FIELDS)


class OfficeHours(models.Model):
    """One opening period of a weekday, in the tenant's timezone (several = a lunch break)."""

    class Weekday(models.IntegerChoices):
        MONDAY = 0
        TUESDAY = 1
        WEDNESDAY = 2
        THURSDAY = 3
        FRIDAY = 4
        SATURDAY = 5
        SUNDAY = 6

    weekday = models.PositiveSmallIntegerField(choices=Weekday)
    opens_at = models.TimeField()
    closes_at = models.TimeField(help_text="00:00 means midnight (the end of the day).")

    class Meta:
        ordering = ["weekday", "opens_at"]
        verbose_name = "office hours"
        verbose_name_plural = "office hours"

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
            ]
        )
        if errors:
            raise ValidationError(errors[0])


class Holiday(models.Model):
    """A day the office is closed; `every_year` repeats it on the same date each year."""

    date = models.DateField(unique=True)
    name = models.CharField(max_length=100, blank=True)
    every_year = models.BooleanField(default=False)

    class Meta:
        ordering = ["date"]

    def __str__(self) -> str:
        return f"{self.date:%Y-%m-%d} {self.name}".strip()


class CallPlan(models.Model):
    """A planning phase done for a call: planning is once per phase, whatever events repeat.

    `start`: the caller is known (ring-time card, unknown-number scenario); `end`: the outcome's
    scenario. The unique constraint makes concurrent events plan a phase exactly once.
    """

    class Phase(models.TextChoices):
        START = "start"
        END = "end"

    call = models.ForeignKey("calls.Call", on_delete=models.CASCADE, related_name="plans")
    phase = models.CharField(max_length=8, choices=Phase)
    trigger = models.CharField(max_length=32, blank=True)
    office_open = models.BooleanField(null=True)
    planned_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["planned_at", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["call", "phase"], name="scenarios_plan_call_phase")
        ]

    def __str__(self) -> str:
        return f"{self.phase} of call {self.call_id}"


class RoundRobinCursor(models.Model):
    """Who got the last assignment from one set of users (row-locked while choosing)."""

    key = models.CharField(max_length=200, unique=True)
    last_user_id = models.PositiveIntegerField(null=True, blank=True)
    assignments = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.key} -> {self.last_user_id}"


class ActionRun(models.Model):
    """One planned piece of work for a call (the outbox).

    Written in the same transaction as the call event that caused it, so it can never be lost;
    Celery only carries the row's id. A run is claimed with a conditional update, so a duplicate
    message is a no-op, and a periodic dispatcher re-sends rows whose message went missing.
    """

    class Status(models.TextChoices):
        SCHEDULED = "scheduled"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"
        SKIPPED = "skipped"
        CANCELLED = "cancelled"

    call = models.ForeignKey("calls.Call", on_delete=models.CASCADE, related_name="action_runs")
    action_type = models.CharField(max_length=32)
    label = models.CharField(
        max_length=150, blank=True, help_text="Which scenario step planned it, for people."
    )
    params = models.JSONField(default=dict, blank=True)
    dedupe_key = models.CharField(
        max_length=200, unique=True, help_text="Planning the same work twice yields one row."
    )
    after = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="successors",
        help_text="Runs once this one has finished (a chain).",
    )
    delay_seconds = models.PositiveIntegerField(default=0)
    delay_in_working_time = models.BooleanField(default=False)
    status = models.CharField(max_length=16, choices=Status, default=Status.SCHEDULED)
    due_at = models.DateTimeField(
        null=True, blank=True, help_text="Empty while waiting on 'after'."
    )
    dispatched_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.TextField(blank=True)
    result = models.JSONField(default=dict, blank=True)
    done_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    # A run due for longer than this and not started is late (the admin, outbox_status, readyz).
    LATE_AFTER = timedelta(minutes=1)

    class Meta:
        ordering = ["due_at", "pk"]
        indexes = [models.Index(fields=["status", "due_at"], name="scenarios_run_due")]

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
        AGENT = "agent", "The device's agent (who carries the phone it rang on)"
        USER = "user", "A fixed user"

    class MissedTo(models.TextChoices):
        ROUTED = "routed", "The routed user"
        NEXT = "next", "The next member of the queue"

    singleton = models.PositiveSmallIntegerField(default=1, unique=True, editable=False)
    responsible_first = models.BooleanField(
        "route identified callers to their responsible user",
        default=True,
        help_text="As Bitrix24's own telephony: before the rules, a caller found in the CRM goes "
        "to the entity's responsible user when they are available.",
    )
    use_timeman = models.BooleanField(
        "use the work-day status for availability",
        default=False,
        help_text="Users whose Bitrix24 work day is closed, paused or expired (TIMEMAN_STATUS) "
        "count as unavailable. Read every minute; needs the 'timeman' scope.",
    )
    others_target = models.CharField(
        '"Others" target',
        max_length=8,
        choices=OthersTarget,
        default=OthersTarget.AGENT,
        help_text="Where callers go that match no rule (unknown numbers included).",
    )
    others_user_id = models.PositiveIntegerField(
        '"Others" user',
        null=True,
        blank=True,
        help_text="Bitrix24 user for 'A fixed user' (the device's agent if they are unavailable).",
    )
    missed_to = models.CharField(
        "missed calls go to",
        max_length=8,
        choices=MissedTo,
        default=MissedTo.ROUTED,
        help_text="Whom the missed-call scenario treats as the routed user (notifications, "
        "callback tasks) when the routed user did not answer.",
    )
    transfer_updates_responsible = models.BooleanField(
        "a transfer makes the answering agent the lead's responsible",
        default=False,
        help_text="When an incoming call is answered by an agent other than the lead's "
        "responsible user, that agent becomes the lead's responsible in Bitrix24.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "routing settings"
        verbose_name_plural = "routing settings"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(singleton=1), name="scenarios_routing_settings_singleton"
            )
        ]

    def __str__(self) -> str:
        return "Routing settings"

    def clean(self) -> None:
        if self.others_target == self.OthersTarget.USER and not self.others_user_id:
            raise ValidationError({"others_user_id": "Choose the user for 'A fixed user'."})


class RoutingRule(models.Model):
    """One rule: when all its conditions hold, the call goes to its target. Applied in order."""

    class Target(models.TextChoices):
        RESPONSIBLE = "responsible", "The responsible user of the matched entity or deal"
        USER = "user", "A specific user"
        ROUND_ROBIN = "round_robin", "Round-robin over users or a department"
        QUEUE = "queue", "A queue of users (the first available)"

    name = models.CharField(max_length=100, unique=True, help_text="Shown to the bridge.")
    position = models.PositiveIntegerField(default=0, help_text="Rules apply in this order.")
    enabled = models.BooleanField(default=True)
    target = models.CharField(max_length=16, choices=Target)
    users = models.JSONField(
        default=list,
        blank=True,
        help_text="Bitrix24 user ids: the specific user, the round-robin set or the queue (in "
        "order).",
    )
    department_id = models.PositiveIntegerField(
        "department",
        null=True,
        blank=True,
        help_text="Round-robin over the active members of this Bitrix24 department.",
    )
    broken_reason = models.TextField(
        blank=True,
        editable=False,
        help_text="Set when something the rule names no longer exists in Bitrix24; the rule is "
        "skipped until it is fixed.",
    )
    checked_at = models.DateTimeField(null=True, blank=True, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["position", "pk"]
        verbose_name = "routing rule"

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
        ENTITY_TYPE = "entity_type", "Caller type (contact, company or lead)"
        ENTITY = "entity", "A field of the caller's entity"
        DEAL = "deal", "A field of an open deal (any open deal matches)"

    class Operator(models.TextChoices):
        EQUALS = "equals", "equals"
        NOT_EQUALS = "not_equals", "does not equal"
        CONTAINS = "contains", "contains (every value given)"
        NOT_CONTAINS = "not_contains", "does not contain"
        EMPTY = "empty", "is empty"
        NOT_EMPTY = "not_empty", "is not empty"

    rule = models.ForeignKey(RoutingRule, on_delete=models.CASCADE, related_name="conditions")
    position = models.PositiveIntegerField(default=0)
    source = models.CharField(max_length=16, choices=Source)
    field = models.CharField(
        max_length=100,
        blank=True,
        help_text="responsible, type, source, status, a deal's pipeline or stage, or any field "
        "as Bitrix24 names it (UF_CRM_...). Empty for the caller type.",
    )
    operator = models.CharField(max_length=16, choices=Operator)
    values = models.JSONField(default=list, blank=True)
    broken_reason = models.TextField(blank=True, editable=False)

    class Meta:
        ordering = ["rule", "position", "pk"]

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
