"""Work the server gives a phone (commands), and the click-to-call requests that make them."""

from __future__ import annotations

import uuid

from django.db import models

from calls.models import Call, Device


class Command(models.Model):
    """One piece of work for one device, delivered on every poll until acknowledged or expired.

    A row first, in the transaction that decides it: Redis only wakes the waiting poll, so a
    command survives a Redis restart and is never delivered to a device it is not for."""

    class Type(models.TextChoices):
        DIAL = "dial"
        SEND_SMS = "send_sms", "send SMS"

    class Status(models.TextChoices):
        PENDING = "pending"
        DONE = "done"
        FAILED = "failed"
        REJECTED = "rejected", "rejected by the agent"
        EXPIRED = "expired"

    command_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    # Indexed by the partial index below: a poll reads the device's pending commands only.
    device = models.ForeignKey(
        Device, on_delete=models.PROTECT, related_name="commands", db_index=False
    )
    type = models.CharField(max_length=16, choices=Type)
    status = models.CharField(max_length=16, choices=Status, default=Status.PENDING)
    phone_number = models.CharField(max_length=32, help_text="E.164: whom to call or text.")
    payload = models.JSONField(
        default=dict, blank=True, help_text="The type's own fields (call_id and crm; sms_id, text)."
    )
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    first_delivered_at = models.DateTimeField(null=True, blank=True)
    delivery_count = models.PositiveIntegerField(default=0)
    acked_at = models.DateTimeField(null=True, blank=True, verbose_name="acknowledged")
    error = models.CharField(max_length=500, blank=True, help_text="What the phone said.")

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [
            models.Index(
                fields=["device", "created_at"],
                condition=models.Q(status="pending"),
                name="commands_pending_by_device",
            ),
            models.Index(
                fields=["expires_at"],
                condition=models.Q(status="pending"),
                name="commands_pending_by_expiry",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_type_display()} {self.phone_number} ({self.status})"


class Dial(models.Model):
    """A Bitrix24 user clicked a number (ONEXTERNALCALLSTART): which phone dials it, and how it
    ended. Bitrix24 registered the call already; its CALL_ID is finished, never registered again."""

    class Status(models.TextChoices):
        SENT = "sent", "sent to the phone"
        DIALLED = "dialled", "dialled by the phone"
        NO_PHONE = "no_phone", "no usable phone"
        EXPIRED = "expired", "not picked up by the phone"
        REJECTED = "rejected", "declined by the agent"
        FAILED = "failed", "the phone could not dial"

    FAILURES = (Status.NO_PHONE, Status.EXPIRED, Status.REJECTED, Status.FAILED)

    b24_call_id = models.CharField(max_length=100, unique=True, verbose_name="Bitrix24 call ID")
    b24_user_id = models.PositiveIntegerField(
        verbose_name="Bitrix24 user", help_text="Who clicked."
    )
    phone_number = models.CharField(max_length=32, help_text="The number clicked (E.164).")
    line_number = models.CharField(
        max_length=64, blank=True, help_text="The outgoing line the user chose in Bitrix24."
    )
    crm_entity_type = models.CharField(max_length=16, blank=True, verbose_name="CRM entity type")
    crm_entity_id = models.PositiveIntegerField(null=True, blank=True, verbose_name="CRM entity ID")
    device = models.ForeignKey(
        Device, null=True, blank=True, on_delete=models.PROTECT, related_name="dials"
    )
    line_reason = models.CharField(
        max_length=300, blank=True, help_text="Why this phone was chosen (or why none was)."
    )
    command = models.OneToOneField(
        Command, null=True, blank=True, on_delete=models.PROTECT, related_name="dial"
    )
    call = models.OneToOneField(
        Call, null=True, blank=True, on_delete=models.PROTECT, related_name="dial"
    )
    status = models.CharField(max_length=16, choices=Status, default=Status.SENT)
    failure = models.CharField(max_length=300, blank=True, help_text="Why it did not connect.")
    closed_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When a failed dial's call was finished in Bitrix24 and the user told why.",
    )
    attempts = models.PositiveSmallIntegerField(default=0, editable=False)
    next_attempt_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_error = models.CharField(max_length=300, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name = "click-to-call"
        verbose_name_plural = "click-to-calls"
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=models.Q(closed_at__isnull=True, next_attempt_at__isnull=False),
                name="commands_dial_to_close",
            ),
            models.Index(fields=["phone_number", "-created_at"], name="commands_dial_by_number"),
        ]

    def __str__(self) -> str:
        return f"{self.phone_number} by user {self.b24_user_id} ({self.get_status_display()})"
