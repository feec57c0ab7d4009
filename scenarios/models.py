from __future__ import annotations

from django.db import models


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

    class Meta:
        ordering = ["due_at", "pk"]
        indexes = [models.Index(fields=["status", "due_at"], name="scenarios_run_due")]

    def __str__(self) -> str:
        return f"{self.action_type} for call {self.call_id} ({self.status})"
