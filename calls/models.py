from __future__ import annotations

from django.db import models

from tenants.connection import tenant_connection


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
    main = models.BooleanField(
        "main phone",
        default=False,
        help_text="Dials this user's clicks in Bitrix24 when no other rule picks one of their "
        "phones (the line they chose, the phone that last spoke with the number, one in the "
        "number's country).",
    )
    sms_default = models.BooleanField(
        "default SMS line",
        default=False,
        help_text="Sends the SMS Bitrix24 hands SIMtrix when the user it is for has no phone "
        "here. One phone at most.",
    )
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_seen_at = models.DateTimeField(null=True, blank=True, editable=False)
    app_version = models.CharField(max_length=32, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["sms_default"],
                condition=models.Q(sms_default=True),
                name="calls_one_default_sms_line",
                violation_error_message="Another phone is the default SMS line already: "
                "untick it there first.",
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
        INCOMING = "incoming"
        OUTGOING = "outgoing"

    class Status(models.TextChoices):
        RINGING = "ringing"
        IN_PROGRESS = "in_progress"
        ENDED = "ended"

    class LogMode(models.TextChoices):
        TELEPHONY = "telephony", "Telephony call (register/finish)"
        ACTIVITY = "activity", "CRM call activity (telephony refused)"

    class Outcome(models.TextChoices):
        ANSWERED = "answered"
        MISSED = "missed"
        REJECTED = "rejected"
        BUSY = "busy"
        NO_ANSWER = "no_answer"
        FAILED = "failed"
        CANCELLED = "cancelled"

    # Indexed by the (device, call_id) unique constraint: every bridge event finds its call by
    # it. No other index starts with the device, so the planner cannot pick one that scans all
    # of a device's calls (it did, on tables not yet analyzed, e.g. a new tenant's).
    device = models.ForeignKey(
        Device, on_delete=models.PROTECT, related_name="calls", db_index=False
    )
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
    crm_status = models.CharField(
        max_length=16,
        blank=True,
        db_index=True,
        help_text="found / not_found / pending / unavailable (copied from `crm` for filtering).",
    )
    route = models.JSONField(default=dict, blank=True, help_text="Routing result (bridge format).")
    # The Bitrix24 side of the call, written by the outbox handlers in calls/handlers.py.
    b24_user_id = models.PositiveIntegerField(
        null=True,
        blank=True,
        verbose_name="Bitrix24 user",
        help_text="Whom the call was logged for.",
    )
    b24_call_id = models.CharField(
        max_length=100, blank=True, verbose_name="Bitrix24 call ID", help_text="From register."
    )
    b24_entity_type = models.CharField(
        max_length=16, blank=True, verbose_name="CRM entity type", help_text="Bound at register."
    )
    b24_entity_id = models.PositiveIntegerField(null=True, blank=True, verbose_name="CRM entity ID")
    b24_registered_at = models.DateTimeField(null=True, blank=True, verbose_name="registered")
    b24_finished_at = models.DateTimeField(
        null=True, blank=True, verbose_name="logged", help_text="When the call was finished/logged."
    )
    b24_log_mode = models.CharField(
        max_length=16, choices=LogMode, blank=True, verbose_name="logged as"
    )
    b24_activity_id = models.PositiveIntegerField(
        null=True, blank=True, verbose_name="Bitrix24 activity ID"
    )
    b24_log_note = models.TextField(
        blank=True, verbose_name="logging note", help_text="Why the call was logged the way it was."
    )
    version = models.PositiveIntegerField(
        default=0,
        editable=False,
        help_text="Incremented by every bridge event and every write of the CRM lookup or route: "
        "an event is written only if the call is still the version it read.",
    )
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
    # No index of its own: nothing looks events up by device (the call log goes through calls),
    # and every event would pay for it.
    device = models.ForeignKey(
        Device, on_delete=models.PROTECT, related_name="events", db_index=False
    )
    call = models.ForeignKey(Call, on_delete=models.PROTECT, related_name="events")
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


class CallTransition(models.Model):
    """One change of a call's state, and what caused it: the audit trail support staff read."""

    class Source(models.TextChoices):
        BRIDGE = "bridge", "Bridge event"
        BITRIX24 = "bitrix24", "Bitrix24"
        RECORDING = "recording", "Recording"

    call = models.ForeignKey(Call, on_delete=models.PROTECT, related_name="transitions")
    # No index of its own: transitions are read by call, and events are never deleted.
    event = models.ForeignKey(
        CallEvent,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="transitions",
        db_index=False,
    )
    source = models.CharField(max_length=16, choices=Source, default=Source.BRIDGE)
    from_status = models.CharField(max_length=16, blank=True)
    to_status = models.CharField(max_length=16, blank=True)
    changes = models.JSONField(default=dict, blank=True, help_text="field: [before, after]")
    description = models.CharField(max_length=300, blank=True)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["at", "pk"]

    def __str__(self) -> str:
        return self.description or f"{self.from_status or '-'} -> {self.to_status}"


class CallNote(models.Model):
    """A note the agent typed on the phone; carried to the CRM by the post-call sync."""

    call = models.ForeignKey(Call, on_delete=models.PROTECT, related_name="notes")
    text = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    crm_synced_at = models.DateTimeField(
        null=True, blank=True, help_text="When the post-call sync carried it to Bitrix24."
    )

    class Meta:
        ordering = ["created_at", "pk"]

    def __str__(self) -> str:
        return self.text[:60]


def recording_upload_to(instance: CallRecording, filename: str) -> str:
    schema = tenant_connection.schema_name
    return f"recordings/{schema}/{instance.call_id}/{filename}"


class CallRecording(models.Model):
    """The call's audio as the phone sent it, and the MP3/WAV made of it for Bitrix24."""

    call = models.OneToOneField(Call, on_delete=models.PROTECT, related_name="recording")
    version = models.PositiveIntegerField(default=1, help_text="Incremented by every re-upload.")
    original = models.FileField(upload_to=recording_upload_to, max_length=300, blank=True)
    original_format = models.CharField(max_length=16, help_text="Detected from the content.")
    original_content_type = models.CharField(max_length=100, blank=True)
    original_name = models.CharField(max_length=200, blank=True)
    size = models.PositiveBigIntegerField(default=0)
    sha256 = models.CharField(max_length=64)
    converted = models.FileField(
        upload_to=recording_upload_to,
        max_length=300,
        blank=True,
        help_text="What Bitrix24 gets: the original when MP3/WAV, else an MP3 made from it.",
    )
    converted_at = models.DateTimeField(null=True, blank=True)
    conversion_error = models.TextField(blank=True)
    uploaded_at = models.DateTimeField()
    attached_version = models.PositiveIntegerField(null=True, blank=True)
    attached_at = models.DateTimeField(null=True, blank=True)
    b24_file_id = models.PositiveIntegerField(
        null=True, blank=True, verbose_name="Bitrix24 file ID"
    )
    deleted_at = models.DateTimeField(
        null=True, blank=True, help_text="When retention deleted the audio (metadata is kept)."
    )

    class Meta:
        ordering = ["-uploaded_at"]

    def __str__(self) -> str:
        return f"recording of call {self.call_id} (v{self.version}, {self.original_format})"

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

    singleton = models.PositiveSmallIntegerField(default=1, unique=True, editable=False)
    upload_limit_mb = models.PositiveIntegerField(
        default=50, verbose_name="recording upload limit (MB)"
    )
    retention_days = models.PositiveIntegerField(
        default=90,
        help_text="Audio stored here is deleted this many days after upload (0 = keep forever). "
        "The copy attached in Bitrix24 is not affected.",
    )
    silent_after_minutes = models.PositiveIntegerField(
        default=30, help_text="A device without a heartbeat for this long is shown as silent."
    )
    throttle_per_minute = models.PositiveIntegerField(
        default=600, help_text="Requests a single device may make per minute before a 429."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "call settings"
        verbose_name_plural = "call settings"
        constraints = [
            models.CheckConstraint(condition=models.Q(singleton=1), name="calls_settings_singleton")
        ]

    def __str__(self) -> str:
        return "Call settings"
