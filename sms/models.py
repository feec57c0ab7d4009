"""SMS through the agents' SIMs: every message both ways, the bridge's events about them, and
the tenant's SMS settings."""

from __future__ import annotations

import uuid

from django.db import models
from django.utils.translation import gettext, pgettext_lazy
from django.utils.translation import gettext_lazy as _

from calls.models import Call, Device
from commands.models import Command


def _sms_id() -> str:
    return str(uuid.uuid4())


class SmsSettings(models.Model):
    """One row per tenant: the guards of the scenarios' SMS and what a text from an unknown
    number does."""

    class Unknown(models.TextChoices):
        IGNORE = "ignore", _("Ignore it (kept in the SMS list only)")
        NOTIFY_AGENT = "notify_agent", _("Notify the agent whose line it came to")
        CREATE_LEAD = "create_lead", _("Create a lead, as the unknown-number scenario would")

    singleton = models.PositiveSmallIntegerField(
        _("singleton"), default=1, unique=True, editable=False
    )
    mobile_only = models.BooleanField(
        _("only to mobile numbers"),
        default=True,
        help_text=_(
            "A scenario never texts a number that cannot receive SMS (landlines, short "
            "codes, numbers whose type is not known to be mobile)."
        ),
    )
    once_per_hours = models.PositiveIntegerField(
        _("at most once per number within (hours)"),
        default=24,
        help_text=_(
            "A scenario does not text a number it texted less than this long ago "
            "(0: no limit). SMS sent from Bitrix24 itself are not limited."
        ),
    )
    unknown_sender = models.CharField(
        _("a text from an unknown number"),
        max_length=16,
        choices=Unknown,
        default=Unknown.NOTIFY_AGENT,
    )

    class Meta:
        verbose_name = verbose_name_plural = _("SMS settings")

    def __str__(self) -> str:
        return gettext("SMS settings")


class SmsMessage(models.Model):
    """One SMS: sent through an agent's phone (for Bitrix24's SMS provider or a scenario), or
    received by one. Sent ones are a `send_sms` command first; the bridge's events move them on."""

    class Direction(models.TextChoices):
        OUTGOING = "outgoing", pgettext_lazy("SMS", "outgoing")
        INCOMING = "incoming", pgettext_lazy("SMS", "incoming")

    class Source(models.TextChoices):
        BITRIX24 = "bitrix24", _("Bitrix24 (SMS provider)")
        SCENARIO = "scenario", _("Scenario action")
        PHONE = "phone", _("Received by the phone")

    class Status(models.TextChoices):
        QUEUED = "queued", _("queued (waiting for the phone)")
        SENT = "sent", pgettext_lazy("SMS", "sent")
        DELIVERED = "delivered", pgettext_lazy("SMS", "delivered")
        FAILED = "failed", pgettext_lazy("SMS", "failed")
        RECEIVED = "received", pgettext_lazy("SMS", "received")

    sms_id = models.CharField(
        _("SMS ID"), max_length=64, unique=True, default=_sms_id, editable=False
    )
    direction = models.CharField(_("direction"), max_length=16, choices=Direction)
    source = models.CharField(_("source"), max_length=16, choices=Source)
    device = models.ForeignKey(
        Device,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="sms_messages",
        verbose_name=_("device"),
    )
    phone_number = models.CharField(
        _("phone number"),
        max_length=32,
        db_index=True,
        help_text=_("The other party's number, in international format when it could be read."),
    )
    text = models.TextField(_("text"))
    status = models.CharField(_("status"), max_length=16, choices=Status)
    error = models.CharField(_("error"), max_length=500, blank=True)
    # Who and what it is about.
    b24_user_id = models.PositiveIntegerField(
        _("Bitrix24 user"),
        null=True,
        blank=True,
        help_text=_("Whom it was sent for, or who was told of it."),
    )
    crm_entity_type = models.CharField(_("CRM entity type"), max_length=16, blank=True)
    crm_entity_id = models.PositiveIntegerField(_("CRM entity ID"), null=True, blank=True)
    call = models.ForeignKey(
        Call,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="sms_messages",
        verbose_name=_("call"),
    )
    command = models.OneToOneField(
        Command,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="sms",
        verbose_name=_("command"),
    )
    # What made it, once: "b24:<message_id>", "run:<action run>"; blank for received ones.
    intent_key = models.CharField(_("intent key"), max_length=100, blank=True, editable=False)
    b24_message_id = models.CharField(
        _("Bitrix24 message ID"), max_length=64, blank=True, db_index=True
    )
    b24_status = models.CharField(
        _("Bitrix24 status"),
        max_length=16,
        blank=True,
        help_text=_("The status Bitrix24 was last told."),
    )
    comment_id = models.PositiveIntegerField(
        _("comment ID"),
        null=True,
        blank=True,
        help_text=_("The timeline comment that shows it in the CRM."),
    )
    notified_user_id = models.PositiveIntegerField(_("notified user"), null=True, blank=True)
    outcome = models.CharField(
        _("outcome"),
        max_length=300,
        blank=True,
        help_text=_("What SIMtrix did with it in Bitrix24."),
    )
    # The Bitrix24 follow-up (status, comment, notification): due, tried, why not.
    sync_due_at = models.DateTimeField(
        _("Bitrix24 follow-up due at"), null=True, blank=True, editable=False
    )
    sync_attempts = models.PositiveSmallIntegerField(
        _("Bitrix24 follow-up attempts"), default=0, editable=False
    )
    sync_error = models.CharField(
        _("Bitrix24 follow-up error"), max_length=300, blank=True, editable=False
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    sent_at = models.DateTimeField(_("sent at"), null=True, blank=True)
    delivered_at = models.DateTimeField(_("delivered at"), null=True, blank=True)
    failed_at = models.DateTimeField(_("failed at"), null=True, blank=True)
    received_at = models.DateTimeField(
        _("received at"),
        null=True,
        blank=True,
        help_text=_("When the phone received it (incoming)."),
    )

    class Meta:
        verbose_name = _("SMS")
        verbose_name_plural = _("SMS")
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
        values = {"number": self.phone_number, "status": self.get_status_display()}
        if self.direction == self.Direction.OUTGOING:
            return gettext("SMS to %(number)s (%(status)s)") % values
        return gettext("SMS from %(number)s (%(status)s)") % values


class SmsEvent(models.Model):
    """A bridge SMS event as received: idempotent by event_id, kept for the audit."""

    event_id = models.UUIDField(_("event ID"), unique=True)
    device = models.ForeignKey(
        Device,
        on_delete=models.PROTECT,
        related_name="sms_events",
        db_index=False,
        verbose_name=_("device"),
    )
    sms = models.ForeignKey(
        SmsMessage, on_delete=models.CASCADE, related_name="events", verbose_name=_("SMS")
    )
    type = models.CharField(_("type"), max_length=16)
    occurred_at = models.DateTimeField(_("occurred at"))
    body = models.JSONField(_("body"))
    body_hash = models.CharField(_("body hash"), max_length=64)
    applied = models.BooleanField(
        _("applied"),
        default=True,
        help_text=_("Unticked: it came after a later status and changed nothing."),
    )
    received_at = models.DateTimeField(_("received at"), auto_now_add=True)

    class Meta:
        verbose_name = _("SMS event")
        verbose_name_plural = _("SMS events")
        ordering = ["occurred_at", "pk"]

    def __str__(self) -> str:
        return f"{self.type} {self.event_id}"
