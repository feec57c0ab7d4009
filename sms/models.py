"""SMS through the agents' SIMs: every message both ways, the bridge's events about them, and
the tenant's SMS settings."""

from __future__ import annotations

import uuid

from django.db import models

from calls.models import Call, Device
from commands.models import Command


def _sms_id() -> str:
    return str(uuid.uuid4())


class SmsSettings(models.Model):
    """One row per tenant: the guards of the scenarios' SMS and what a text from an unknown
    number does."""

    class Unknown(models.TextChoices):
        IGNORE = "ignore", "Ignore it (kept in the SMS list only)"
        NOTIFY_AGENT = "notify_agent", "Notify the agent whose line it came to"
        CREATE_LEAD = "create_lead", "Create a lead, as the unknown-number scenario would"

    singleton = models.PositiveSmallIntegerField(default=1, unique=True, editable=False)
    mobile_only = models.BooleanField(
        default=True,
        verbose_name="only to mobile numbers",
        help_text="A scenario never texts a number that cannot receive SMS (landlines, short "
        "codes, numbers whose type is not known to be mobile).",
    )
    once_per_hours = models.PositiveIntegerField(
        default=24,
        verbose_name="at most once per number within (hours)",
        help_text="A scenario does not text a number it texted less than this long ago "
        "(0: no limit). SMS sent from Bitrix24 itself are not limited.",
    )
    unknown_sender = models.CharField(
        max_length=16,
        choices=Unknown,
        default=Unknown.NOTIFY_AGENT,
        verbose_name="a text from an unknown number",
    )

    class Meta:
        verbose_name = verbose_name_plural = "SMS settings"

    def __str__(self) -> str:
        return "SMS settings"


class SmsMessage(models.Model):
    """One SMS: sent through an agent's phone (for Bitrix24's SMS provider or a scenario), or
    received by one. Sent ones are a `send_sms` command first; the bridge's events move them on."""

    class Direction(models.TextChoices):
        OUTGOING = "outgoing"
        INCOMING = "incoming"

    class Source(models.TextChoices):
        BITRIX24 = "bitrix24", "Bitrix24 (SMS provider)"
        SCENARIO = "scenario", "Scenario action"
        PHONE = "phone", "Received by the phone"

    class Status(models.TextChoices):
        QUEUED = "queued", "queued (waiting for the phone)"
        SENT = "sent"
        DELIVERED = "delivered"
        FAILED = "failed"
        RECEIVED = "received"

    sms_id = models.CharField(max_length=64, unique=True, default=_sms_id, editable=False)
    direction = models.CharField(max_length=16, choices=Direction)
    source = models.CharField(max_length=16, choices=Source)
    device = models.ForeignKey(
        Device, null=True, blank=True, on_delete=models.PROTECT, related_name="sms_messages"
    )
    phone_number = models.CharField(
        max_length=32, db_index=True, help_text="The other party (E.164 when it parses)."
    )
    text = models.TextField()
    status = models.CharField(max_length=16, choices=Status)
    error = models.CharField(max_length=500, blank=True)
    # Who and what it is about.
    b24_user_id = models.PositiveIntegerField(
        null=True, blank=True, verbose_name="Bitrix24 user", help_text="Sent for, or told."
    )
    crm_entity_type = models.CharField(max_length=16, blank=True, verbose_name="CRM entity type")
    crm_entity_id = models.PositiveIntegerField(null=True, blank=True, verbose_name="CRM entity ID")
    call = models.ForeignKey(
        Call, null=True, blank=True, on_delete=models.SET_NULL, related_name="sms_messages"
    )
    command = models.OneToOneField(
        Command, null=True, blank=True, on_delete=models.SET_NULL, related_name="sms"
    )
    # What made it, once: "b24:<message_id>", "run:<action run>"; blank for received ones.
    intent_key = models.CharField(max_length=100, blank=True, editable=False)
    b24_message_id = models.CharField(
        max_length=64, blank=True, verbose_name="Bitrix24 message ID", db_index=True
    )
    b24_status = models.CharField(
        max_length=16, blank=True, help_text="The status Bitrix24 was last told."
    )
    comment_id = models.PositiveIntegerField(
        null=True, blank=True, help_text="The timeline comment that shows it in the CRM."
    )
    notified_user_id = models.PositiveIntegerField(null=True, blank=True)
    outcome = models.CharField(
        max_length=300, blank=True, help_text="What SIMtrix did with it in Bitrix24."
    )
    # The Bitrix24 follow-up (status, comment, notification): due, tried, why not.
    sync_due_at = models.DateTimeField(null=True, blank=True, editable=False)
    sync_attempts = models.PositiveSmallIntegerField(default=0, editable=False)
    sync_error = models.CharField(max_length=300, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    received_at = models.DateTimeField(
        null=True, blank=True, help_text="When the phone received it (incoming)."
    )

    class Meta:
        verbose_name = "SMS"
        verbose_name_plural = "SMS"
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["intent_key"],
                condition=~models.Q(intent_key=""),
                name="sms_one_message_per_intent",
            )
        ]
        indexes = [
            models.Index(
                fields=["sync_due_at"],
                condition=models.Q(sync_due_at__isnull=False),
                name="sms_sync_due",
            ),
            models.Index(
                fields=["phone_number", "-created_at"],
                condition=models.Q(source="scenario"),
                name="sms_scenario_by_number",
            ),
        ]

    def __str__(self) -> str:
        arrow = "to" if self.direction == self.Direction.OUTGOING else "from"
        return f"SMS {arrow} {self.phone_number} ({self.status})"


class SmsEvent(models.Model):
    """A bridge SMS event as received: idempotent by event_id, kept for the audit."""

    event_id = models.UUIDField(unique=True)
    device = models.ForeignKey(
        Device, on_delete=models.PROTECT, related_name="sms_events", db_index=False
    )
    sms = models.ForeignKey(SmsMessage, on_delete=models.CASCADE, related_name="events")
    type = models.CharField(max_length=16)
    occurred_at = models.DateTimeField()
    body = models.JSONField()
    body_hash = models.CharField(max_length=64)
    applied = models.BooleanField(
        default=True, help_text="False: it came after a later status and changed nothing."
    )
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "SMS event"
        ordering = ["occurred_at", "pk"]

    def __str__(self) -> str:
        return f"{self.type} {self.event_id}"
