"""Work the server gives a phone (commands), and the click-to-call requests that make them."""

from __future__ import annotations

import uuid

from django.db import models
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from calls.models import Call, Device


class Command(models.Model):
    """One piece of work for one device, delivered on every poll until acknowledged or expired.

    A row first, in the transaction that decides it: Redis only wakes the waiting poll, so a
    command survives a Redis restart and is never delivered to a device it is not for."""

    class Type(models.TextChoices):
        DIAL = "dial", _("dial")
        SEND_SMS = "send_sms", _("send SMS")

    class Status(models.TextChoices):
        PENDING = "pending", _("pending")
        DONE = "done", _("done")
        FAILED = "failed", _("failed")
        REJECTED = "rejected", _("rejected by the agent")
        EXPIRED = "expired", _("expired")

    command_id = models.UUIDField(_("command ID"), default=uuid.uuid4, unique=True, editable=False)
    # Indexed by the partial index below: a poll reads the device's pending commands only.
    device = models.ForeignKey(
        Device,
        on_delete=models.PROTECT,
        related_name="commands",
        db_index=False,
        verbose_name=_("device"),
    )
    type = models.CharField(_("type"), max_length=16, choices=Type)
    status = models.CharField(_("status"), max_length=16, choices=Status, default=Status.PENDING)
    phone_number = models.CharField(
        _("phone number"),
        max_length=32,
        help_text=_("The number to call or text, in international format (+48…)."),
    )
    payload = models.JSONField(
        _("command data"),
        default=dict,
        blank=True,
        help_text=_(
            "What the phone was sent with the command: for a dial, the call and the CRM "
            "record; for an SMS, its text."
        ),
    )
    created_at = models.DateTimeField(_("created at"))
    expires_at = models.DateTimeField(_("expires at"))
    first_delivered_at = models.DateTimeField(_("first delivered at"), null=True, blank=True)
    delivery_count = models.PositiveIntegerField(_("delivery count"), default=0)
    acked_at = models.DateTimeField(_("acknowledged"), null=True, blank=True)
    error = models.CharField(
        _("error"), max_length=500, blank=True, help_text=_("What the phone said.")
    )

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name = _("command")
        verbose_name_plural = _("commands")
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
        return gettext("%(type)s %(number)s (%(status)s)") % {
            "type": self.get_type_display(),
            "number": self.phone_number,
            "status": self.get_status_display(),
        }


class Dial(models.Model):
    """A Bitrix24 user clicked a number (ONEXTERNALCALLSTART): which phone dials it, and how it
    ended. Bitrix24 registered the call already; its CALL_ID is finished, never registered again."""

    class Status(models.TextChoices):
        SENT = "sent", _("sent to the phone")
        DIALLED = "dialled", _("dialled by the phone")
        NO_PHONE = "no_phone", _("no usable phone")
        EXPIRED = "expired", _("not picked up by the phone")
        REJECTED = "rejected", _("declined by the agent")
        FAILED = "failed", _("the phone could not dial")

    FAILURES = (Status.NO_PHONE, Status.EXPIRED, Status.REJECTED, Status.FAILED)

    b24_call_id = models.CharField(_("Bitrix24 call ID"), max_length=100, unique=True)
    b24_user_id = models.PositiveIntegerField(_("Bitrix24 user"), help_text=_("Who clicked."))
    phone_number = models.CharField(
        _("phone number"), max_length=32, help_text=_("The number that was clicked.")
    )
    line_number = models.CharField(
        _("line number"),
        max_length=64,
        blank=True,
        help_text=_("The outgoing line the user chose in Bitrix24."),
    )
    crm_entity_type = models.CharField(_("CRM entity type"), max_length=16, blank=True)
    crm_entity_id = models.PositiveIntegerField(_("CRM entity ID"), null=True, blank=True)
    device = models.ForeignKey(
        Device,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="dials",
        verbose_name=_("device"),
    )
    line_reason = models.CharField(
        _("why this phone"),
        max_length=300,
        blank=True,
        help_text=_("Why this phone was chosen (or why none was)."),
    )
    command = models.OneToOneField(
        Command,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="dial",
        verbose_name=_("command"),
    )
    call = models.OneToOneField(
        Call,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="dial",
        verbose_name=_("call"),
    )
    status = models.CharField(_("status"), max_length=16, choices=Status, default=Status.SENT)
    failure = models.CharField(
        _("failure"), max_length=300, blank=True, help_text=_("Why it did not connect.")
    )
    closed_at = models.DateTimeField(
        _("closed at"),
        null=True,
        blank=True,
        help_text=_("When a failed dial's call was finished in Bitrix24 and the user told why."),
    )
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0, editable=False)
    next_attempt_at = models.DateTimeField(
        _("next attempt at"), null=True, blank=True, editable=False
    )
    last_error = models.CharField(_("last error"), max_length=300, blank=True, editable=False)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name = _("click-to-call")
        verbose_name_plural = _("click-to-calls")
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=models.Q(closed_at__isnull=True, next_attempt_at__isnull=False),
                name="commands_dial_to_close",
            ),
            models.Index(fields=["phone_number", "-created_at"], name="commands_dial_by_number"),
        ]

    def __str__(self) -> str:
        return gettext("%(number)s by user %(user)s (%(status)s)") % {
            "number": self.phone_number,
            "user": self.b24_user_id,
            "status": self.get_status_display(),
        }
