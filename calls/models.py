from __future__ import annotations

from django.db import models
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from tenants.connection import tenant_connection


class Device(models.Model):
    """A phone running the bridge app: one SIM line, carried by one Bitrix24 user."""

    name = models.CharField(_("name"), max_length=100)
    phone_number = models.CharField(
        _("phone number"), max_length=20, help_text=_("The SIM line number (E.164).")
    )
    bitrix24_user_id = models.PositiveIntegerField(
        verbose_name=_("Bitrix24 user ID"), help_text=_("The Bitrix24 user who carries this phone.")
    )
    token_hash = models.CharField(_("token hash"), max_length=64, unique=True, editable=False)
    token_hint = models.CharField(
        _("token hint"),
        max_length=12,
        editable=False,
        help_text=_("The token's first characters, to recognise it."),
    )
    main = models.BooleanField(
        _("main phone"),
        default=False,
        help_text=_(
            "Dials this user's clicks in Bitrix24 when no other rule picks one of their "
            "phones (the line they chose, the phone that last spoke with the number, one in the "
            "number's country)."
        ),
    )
    sms_default = models.BooleanField(
        _("default SMS line"),
        default=False,
        help_text=_(
            "Sends the SMS Bitrix24 hands SIMtrix when the user it is for has no phone "
            "here. One phone at most."
        ),
    )
    revoked_at = models.DateTimeField(_("revoked at"), null=True, blank=True, editable=False)
    last_seen_at = models.DateTimeField(_("last seen at"), null=True, blank=True, editable=False)
    app_version = models.CharField(_("app version"), max_length=32, blank=True, editable=False)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("device")
        verbose_name_plural = _("devices")
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["sms_default"],
                condition=models.Q(sms_default=True),
                name="calls_one_default_sms_line",
                violation_error_message=_(
                    "Another phone is the default SMS line already: untick it there first."
                ),
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.phone_number})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class Call(models.Model):
    """One physical call as the bridge reported it; identified by (device, call_id)."""

    class Direction(models.TextChoices):
        INCOMING = "incoming", _("incoming")
        OUTGOING = "outgoing", _("outgoing")

    class Status(models.TextChoices):
        RINGING = "ringing", _("ringing")
        IN_PROGRESS = "in_progress", _("in progress")
        ENDED = "ended", _("ended")

    class LogMode(models.TextChoices):
        TELEPHONY = "telephony", _("Telephony call (register/finish)")
        ACTIVITY = "activity", _("CRM call activity (telephony refused)")

    class Outcome(models.TextChoices):
        ANSWERED = "answered", _("answered")
        MISSED = "missed", _("missed")
        REJECTED = "rejected", _("rejected")
        BUSY = "busy", _("busy")
        NO_ANSWER = "no_answer", _("no answer")
        FAILED = "failed", _("failed")
        CANCELLED = "cancelled", _("cancelled")

    # Indexed by the (device, call_id) unique constraint: every bridge event finds its call by
    # it. No other index starts with the device, so the planner cannot pick one that scans all
    # of a device's calls (it did, on tables not yet analyzed, e.g. a new tenant's).
    device = models.ForeignKey(
        Device,
        on_delete=models.PROTECT,
        related_name="calls",
        db_index=False,
        verbose_name=_("device"),
    )
    call_id = models.CharField(
        _("call ID"), max_length=64, help_text=_("The id the SIMtrix Bridge app gave the call.")
    )
    direction = models.CharField(_("direction"), max_length=16, choices=Direction, blank=True)
    phone_number = models.CharField(
        _("phone number"),
        max_length=32,
        blank=True,
        db_index=True,
        help_text=_("The other party's number, in international format when it could be read."),
    )
    phone_raw = models.CharField(
        _("number as shown"), max_length=32, blank=True, help_text=_("As the phone showed it.")
    )
    status = models.CharField(_("status"), max_length=16, choices=Status, default=Status.RINGING)
    outcome = models.CharField(_("outcome"), max_length=16, choices=Outcome, blank=True)
    started_at = models.DateTimeField(_("started at"), null=True, blank=True, db_index=True)
    answered_at = models.DateTimeField(_("answered at"), null=True, blank=True)
    ended_at = models.DateTimeField(_("ended at"), null=True, blank=True)
    duration_seconds = models.PositiveIntegerField(_("duration (s)"), null=True, blank=True)
    crm = models.JSONField(
        _("CRM lookup"),
        default=dict,
        blank=True,
        help_text=_("What the CRM lookup found about the caller."),
    )
    crm_status = models.CharField(
        _("CRM lookup status"),
        max_length=16,
        blank=True,
        db_index=True,
        help_text=_(
            "Whether the caller was found in the CRM: found, not found, pending, or "
            "unavailable (Bitrix24 did not answer)."
        ),
    )
    route = models.JSONField(
        _("route"),
        default=dict,
        blank=True,
        help_text=_("Whom the call was routed to, and by which rule."),
    )
    # The Bitrix24 side of the call, written by the outbox handlers in calls/handlers.py.
    b24_user_id = models.PositiveIntegerField(
        null=True,
        blank=True,
        verbose_name=_("Bitrix24 user"),
        help_text=_("Whom the call was logged for."),
    )
    b24_call_id = models.CharField(
        max_length=100,
        blank=True,
        verbose_name=_("Bitrix24 call ID"),
        help_text=_("The id Bitrix24 gave the call when it was registered."),
    )
    b24_entity_type = models.CharField(
        max_length=16,
        blank=True,
        verbose_name=_("CRM entity type"),
        help_text=_("The kind of CRM record the call was bound to when it was registered."),
    )
    b24_entity_id = models.PositiveIntegerField(
        null=True, blank=True, verbose_name=_("CRM entity ID")
    )
    b24_registered_at = models.DateTimeField(null=True, blank=True, verbose_name=_("registered"))
    b24_finished_at = models.DateTimeField(
        null=True,
        blank=True,
        verbose_name=_("logged"),
        help_text=_("When the call was finished or logged in Bitrix24."),
    )
    b24_log_mode = models.CharField(
        max_length=16, choices=LogMode, blank=True, verbose_name=_("logged as")
    )
    b24_activity_id = models.PositiveIntegerField(
        null=True, blank=True, verbose_name=_("Bitrix24 activity ID")
    )
    b24_log_note = models.TextField(
        blank=True,
        verbose_name=_("logging note"),
        help_text=_("Why the call was logged the way it was."),
    )
    version = models.PositiveIntegerField(
        _("version"),
        default=0,
        editable=False,
        help_text=_("Goes up with every change to the call from the phone or from the CRM lookup."),
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("call")
        verbose_name_plural = _("calls")
        ordering = ["-started_at", "-pk"]
        constraints = [
            models.UniqueConstraint(fields=["device", "call_id"], name="calls_call_device_call_id")
        ]
        indexes = [
            # "Was the caller reached since?": the first answered call with a number after a
            # moment (the callback task's skip_if_reached, the reports' returned calls).
            models.Index(
                fields=["phone_number", "started_at"],
                condition=models.Q(outcome="answered") | models.Q(answered_at__isnull=False),
                name="calls_call_reached",
            ),
        ]

    def __str__(self) -> str:
        kind = self.get_direction_display() if self.direction else gettext("call")
        return f"{kind} {self.phone_number or self.phone_raw} ({self.call_id})"


class CallEvent(models.Model):
    """A bridge event exactly as received, with the answer it got (idempotency by event_id)."""

    event_id = models.UUIDField(_("event ID"), unique=True)
    # No index of its own: nothing looks events up by device (the call log goes through calls),
    # and every event would pay for it.
    device = models.ForeignKey(
        Device,
        on_delete=models.PROTECT,
        related_name="events",
        db_index=False,
        verbose_name=_("device"),
    )
    call = models.ForeignKey(
        Call, on_delete=models.PROTECT, related_name="events", verbose_name=_("call")
    )
    type = models.CharField(_("type"), max_length=32)
    occurred_at = models.DateTimeField(_("occurred at"))
    body = models.JSONField(_("body"), help_text=_("The event as the phone sent it."))
    body_hash = models.CharField(_("body hash"), max_length=64)
    response_status = models.PositiveSmallIntegerField(_("response status"), null=True, blank=True)
    response_body = models.JSONField(_("response body"), null=True, blank=True)
    received_at = models.DateTimeField(_("received at"), auto_now_add=True)

    class Meta:
        verbose_name = _("call event")
        verbose_name_plural = _("call events")
        ordering = ["received_at", "pk"]

    def __str__(self) -> str:
        return f"{self.type} {self.event_id}"


class CallTransition(models.Model):
    """One change of a call's state, and what caused it: the audit trail support staff read."""

    class Source(models.TextChoices):
        BRIDGE = "bridge", _("Bridge event")
        BITRIX24 = "bitrix24", _("Bitrix24")
        RECORDING = "recording", _("Recording")

    call = models.ForeignKey(
        Call, on_delete=models.PROTECT, related_name="transitions", verbose_name=_("call")
    )
    # No index of its own: transitions are read by call, and events are never deleted.
    event = models.ForeignKey(
        CallEvent,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="transitions",
        db_index=False,
        verbose_name=_("event"),
    )
    source = models.CharField(_("source"), max_length=16, choices=Source, default=Source.BRIDGE)
    from_status = models.CharField(_("from status"), max_length=16, blank=True)
    to_status = models.CharField(_("to status"), max_length=16, blank=True)
    changes = models.JSONField(
        _("changes"),
        default=dict,
        blank=True,
        help_text=_("Each changed field, with its value before and after."),
    )
    description = models.CharField(_("description"), max_length=300, blank=True)
    at = models.DateTimeField(_("time"), auto_now_add=True)

    class Meta:
        verbose_name = _("call transition")
        verbose_name_plural = _("call transitions")
        ordering = ["at", "pk"]

    def __str__(self) -> str:
        return self.description or f"{self.from_status or '-'} -> {self.to_status}"


class CallNote(models.Model):
    """A note the agent typed on the phone; carried to the CRM by the post-call sync."""

    call = models.ForeignKey(
        Call, on_delete=models.PROTECT, related_name="notes", verbose_name=_("call")
    )
    text = models.TextField(_("text"))
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    crm_synced_at = models.DateTimeField(
        _("synced to Bitrix24"),
        null=True,
        blank=True,
        help_text=_("When the post-call sync carried it to Bitrix24."),
    )

    class Meta:
        verbose_name = _("call note")
        verbose_name_plural = _("call notes")
        ordering = ["created_at", "pk"]

    def __str__(self) -> str:
        return self.text[:60]


def recording_upload_to(instance: CallRecording, filename: str) -> str:
    schema = tenant_connection.schema_name
    return f"recordings/{schema}/{instance.call_id}/{filename}"


class CallRecording(models.Model):
    """The call's audio as the phone sent it, and the MP3/WAV made of it for Bitrix24."""

    call = models.OneToOneField(
        Call, on_delete=models.PROTECT, related_name="recording", verbose_name=_("call")
    )
    version = models.PositiveIntegerField(
        _("version"), default=1, help_text=_("Goes up with every new upload of the recording.")
    )
    original = models.FileField(
        _("original file"), upload_to=recording_upload_to, max_length=300, blank=True
    )
    original_format = models.CharField(
        _("original format"), max_length=16, help_text=_("Detected from the content.")
    )
    original_content_type = models.CharField(_("original content type"), max_length=100, blank=True)
    original_name = models.CharField(_("original file name"), max_length=200, blank=True)
    size = models.PositiveBigIntegerField(_("size (bytes)"), default=0)
    sha256 = models.CharField(_("SHA-256 checksum"), max_length=64)
    converted = models.FileField(
        _("converted file"),
        upload_to=recording_upload_to,
        max_length=300,
        blank=True,
        help_text=_("What Bitrix24 gets: the original when MP3/WAV, else an MP3 made from it."),
    )
    converted_at = models.DateTimeField(_("converted at"), null=True, blank=True)
    conversion_error = models.TextField(_("conversion error"), blank=True)
    uploaded_at = models.DateTimeField(_("uploaded at"))
    attached_version = models.PositiveIntegerField(_("attached version"), null=True, blank=True)
    attached_at = models.DateTimeField(_("attached at"), null=True, blank=True)
    b24_file_id = models.PositiveIntegerField(
        null=True, blank=True, verbose_name=_("Bitrix24 file ID")
    )
    deleted_at = models.DateTimeField(
        _("deleted at"),
        null=True,
        blank=True,
        help_text=_("When retention deleted the audio (metadata is kept)."),
    )

    class Meta:
        verbose_name = _("call recording")
        verbose_name_plural = _("call recordings")
        ordering = ["-uploaded_at"]

    def __str__(self) -> str:
        return gettext("recording of call %(call)s (v%(version)s, %(format)s)") % {
            "call": self.call_id,
            "version": self.version,
            "format": self.original_format,
        }

    @property
    def playable(self) -> models.fields.files.FieldFile | None:
        """The file a browser can play: the MP3/WAV when made, else the original."""
        if self.deleted_at is not None:
            return None
        if self.converted:
            return self.converted
        return self.original or None


class CallSettings(models.Model):
    """The tenant's settings for the bridge and its calls. Exactly one row per tenant schema."""

    singleton = models.PositiveSmallIntegerField(
        _("singleton"), default=1, unique=True, editable=False
    )
    upload_limit_mb = models.PositiveIntegerField(
        default=50, verbose_name=_("recording upload limit (MB)")
    )
    retention_days = models.PositiveIntegerField(
        _("retention (days)"),
        default=90,
        help_text=_(
            "Audio stored here is deleted this many days after upload (0 = keep forever). "
            "The copy attached in Bitrix24 is not affected."
        ),
    )
    silent_after_minutes = models.PositiveIntegerField(
        _("silent after (minutes)"),
        default=30,
        help_text=_("A device without a heartbeat for this long is shown as silent."),
    )
    throttle_per_minute = models.PositiveIntegerField(
        _("requests per minute per device"),
        default=600,
        help_text=_(
            "How many requests one phone may send per minute; beyond that it is told to wait "
            "(HTTP 429)."
        ),
    )
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("call settings")
        verbose_name_plural = _("call settings")
        constraints = [
            models.CheckConstraint(condition=models.Q(singleton=1), name="calls_settings_singleton")
        ]

    def __str__(self) -> str:
        return gettext("Call settings")
