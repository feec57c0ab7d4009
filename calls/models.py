from __future__ import annotations

from django.db import models


class Device(models.Model):
    """A phone running the bridge app: one SIM line, carried by one Bitrix24 user."""

    name = models.CharField(max_length=100)
    phone_number = models.CharField(max_length=20, help_text="The SIM line number (E.164).")
    bitrix24_user_id = models.PositiveIntegerField(
        verbose_name="Bitrix24 user ID", help_text="The Bitrix24 user who carries this phone."
    )
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    token_hint = models.CharField(
        max_length=12, editable=False, help_text="The token's first characters, to recognise it."
    )
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_seen_at = models.DateTimeField(null=True, blank=True, editable=False)
    app_version = models.CharField(max_length=32, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.phone_number})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class Call(models.Model):
    """One physical call as the bridge reported it; identified by (device, call_id)."""

    class Direction(models.TextChoices):
        INCOMING = "incoming"
        OUTGOING = "outgoing"

    class Status(models.TextChoices):
        RINGING = "ringing"
        IN_PROGRESS = "in_progress"
        ENDED = "ended"

    class Outcome(models.TextChoices):
        ANSWERED = "answered"
        MISSED = "missed"
        REJECTED = "rejected"
        BUSY = "busy"
        NO_ANSWER = "no_answer"
        FAILED = "failed"
        CANCELLED = "cancelled"

    device = models.ForeignKey(Device, on_delete=models.PROTECT, related_name="calls")
    call_id = models.CharField(max_length=64, help_text="The bridge's own id of the call.")
    direction = models.CharField(max_length=16, choices=Direction, blank=True)
    phone_number = models.CharField(
        max_length=32, blank=True, db_index=True, help_text="The other party, E.164 when readable."
    )
    phone_raw = models.CharField(max_length=32, blank=True, help_text="As the phone showed it.")
    status = models.CharField(max_length=16, choices=Status, default=Status.RINGING)
    outcome = models.CharField(max_length=16, choices=Outcome, blank=True)
    started_at = models.DateTimeField(null=True, blank=True, db_index=True)
    answered_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    duration_seconds = models.PositiveIntegerField(null=True, blank=True)
    crm = models.JSONField(default=dict, blank=True, help_text="CRM lookup result (bridge format).")
    route = models.JSONField(default=dict, blank=True, help_text="Routing result (bridge format).")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-started_at", "-pk"]
        constraints = [
            models.UniqueConstraint(fields=["device", "call_id"], name="calls_call_device_call_id")
        ]

    def __str__(self) -> str:
        return f"{self.direction or 'call'} {self.phone_number or self.phone_raw} ({self.call_id})"


class CallEvent(models.Model):
    """A bridge event exactly as received, with the answer it got (idempotency by event_id)."""

    event_id = models.UUIDField(unique=True)
    device = models.ForeignKey(Device, on_delete=models.PROTECT, related_name="events")
    call = models.ForeignKey(Call, on_delete=models.CASCADE, related_name="events")
    type = models.CharField(max_length=32)
    occurred_at = models.DateTimeField()
    body = models.JSONField(help_text="The event as the bridge sent it.")
    body_hash = models.CharField(max_length=64)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True)
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["received_at", "pk"]

    def __str__(self) -> str:
        return f"{self.type} {self.event_id}"
