from __future__ import annotations

from urllib.parse import urlsplit

from django.db import models

from common.crypto import EncryptedTextField
from crm.validators import (
    WEBHOOK_URL_RE,
    mask_webhook_url,
    validate_oauth_token_url,
    validate_webhook_url,
)

# Bitrix24's published request-rate limits (REFERENCE 2): (drain per second, bucket size).
RATE_PLANS = {"standard": (2.0, 50), "enterprise": (5.0, 250)}
DEFAULT_OAUTH_TOKEN_URL = "https://oauth.bitrix.info/oauth/token/"  # noqa: S105 - a URL


class Bitrix24Connection(models.Model):
    """How this tenant reaches its Bitrix24 portal. Exactly one row per tenant schema.

    Its secrets (webhook URL, OAuth client secret and tokens, events token) are stored encrypted
    (common.crypto): the database cannot filter on them.
    """

    class AuthMode(models.TextChoices):
        WEBHOOK = "webhook", "Inbound webhook"
        OAUTH = "oauth", "Local OAuth application"

    class RatePlan(models.TextChoices):
        STANDARD = "standard", "Standard / Professional (2 requests/s, burst 50)"
        ENTERPRISE = "enterprise", "Enterprise (5 requests/s, burst 250)"

    singleton = models.PositiveSmallIntegerField(default=1, unique=True, editable=False)
    auth_mode = models.CharField(max_length=16, choices=AuthMode, default=AuthMode.WEBHOOK)
    webhook_url = EncryptedTextField(
        max_length=500, blank=True, validators=[validate_webhook_url], verbose_name="webhook URL"
    )

    # Local OAuth application ("API only"): the admin enters client id/secret, Bitrix24 posts the
    # first token pair to the install callback, refreshes rotate both tokens.
    oauth_client_id = models.CharField("client id", max_length=128, blank=True)
    oauth_client_secret = EncryptedTextField("client secret", max_length=256, blank=True)
    oauth_token_url = models.CharField(
        "OAuth token URL",
        max_length=300,
        validators=[validate_oauth_token_url],
        default=DEFAULT_OAUTH_TOKEN_URL,
        help_text="Where tokens are refreshed; Bitrix24 cloud uses oauth.bitrix.info.",
    )
    oauth_client_endpoint = models.CharField(
        "portal REST endpoint", max_length=300, blank=True, editable=False
    )
    oauth_access_token = EncryptedTextField(max_length=256, blank=True, editable=False)
    oauth_refresh_token = EncryptedTextField(max_length=256, blank=True, editable=False)
    oauth_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    oauth_member_id = models.CharField(max_length=64, blank=True, editable=False)
    oauth_application_token = EncryptedTextField(max_length=64, blank=True, editable=False)
    # What verifies Bitrix24's calls to SIMtrix (auth[application_token]) for a webhook-connected
    # tenant: the token of the portal's outbound webhook (an OAuth app's arrives with its install).
    events_token = EncryptedTextField(
        "events token",
        max_length=128,
        blank=True,
        editable=False,
        help_text="The application_token of the portal's outbound webhook.",
    )
    oauth_installed_at = models.DateTimeField(null=True, blank=True, editable=False)
    # ONAPPUNINSTALL: the portal removed the application; its tokens no longer work.
    uninstalled_at = models.DateTimeField(null=True, blank=True, editable=False)
    # The SMS provider (crm.messageservice): registered when, or why not.
    sms_provider_at = models.DateTimeField(null=True, blank=True, editable=False)
    sms_provider_error = models.CharField(max_length=500, blank=True, editable=False)
    # Bitrix24 -> SIMtrix: the handlers bound with event.bind (OAuth), the last event received.
    events_bound = models.JSONField(default=list, blank=True, editable=False)
    events_bound_at = models.DateTimeField(null=True, blank=True, editable=False)
    events_bind_error = models.TextField(blank=True, editable=False)
    last_event_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_event_refused_at = models.DateTimeField(
        null=True,
        blank=True,
        editable=False,
        help_text="The last time an event with a wrong application token was refused.",
    )
    # External lines (telephony.externalLine.*): the devices' numbers as last synced.
    lines = models.JSONField(
        default=dict, blank=True, editable=False, help_text="number -> name, as registered."
    )
    lines_synced_at = models.DateTimeField(null=True, blank=True, editable=False)
    lines_sync_error = models.TextField(blank=True, editable=False)

    # Settings.
    rate_plan = models.CharField(max_length=16, choices=RatePlan, default=RatePlan.STANDARD)
    rate_limit_per_second = models.FloatField(
        null=True,
        blank=True,
        help_text="Overrides the plan's drain rate (self-hosted portals with their own limits).",
    )
    rate_limit_burst = models.PositiveIntegerField(
        null=True, blank=True, help_text="Overrides the plan's bucket size."
    )
    lookup_budget_ms = models.PositiveIntegerField(
        "caller lookup budget (ms)",
        default=1500,
        help_text="How long a ringing phone waits for the CRM; past it the lookup finishes "
        "in the background.",
    )
    lookup_cache_ttl_s = models.PositiveIntegerField("caller lookup cache TTL (s)", default=300)

    # Health, shown in the admin.
    last_error_code = models.CharField(max_length=64, blank=True, editable=False)
    last_error = models.TextField(blank=True, editable=False)
    last_error_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_ok_at = models.DateTimeField(null=True, blank=True, editable=False)
    scopes = models.JSONField(default=list, blank=True, editable=False)
    checked_at = models.DateTimeField(null=True, blank=True, editable=False)
    directory_synced_at = models.DateTimeField(null=True, blank=True, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "Bitrix24 connection"
        constraints = [
            models.CheckConstraint(condition=models.Q(singleton=1), name="crm_connection_singleton")
        ]

    def __str__(self) -> str:
        if self.auth_mode == self.AuthMode.OAUTH:
            return f"OAuth app on {self.portal_domain or '(not installed)'}"
        return self.webhook_url_masked or "Bitrix24 connection (not configured)"

    @property
    def webhook_url_masked(self) -> str:
        return mask_webhook_url(self.webhook_url) if self.webhook_url else ""

    @property
    def portal_domain(self) -> str:
        """host[:port] of the portal, from whichever auth mode is in use."""
        if self.auth_mode == self.AuthMode.OAUTH:
            return urlsplit(self.oauth_client_endpoint).netloc if self.oauth_client_endpoint else ""
        match = WEBHOOK_URL_RE.match(self.webhook_url or "")
        return match["host"] if match else ""

    @property
    def portal_url(self) -> str:
        return f"https://{self.portal_domain}" if self.portal_domain else ""

    @property
    def rate_limit(self) -> tuple[float, int]:
        drain, burst = RATE_PLANS.get(self.rate_plan, RATE_PLANS["standard"])
        return (self.rate_limit_per_second or drain, self.rate_limit_burst or burst)


class RequestLog(models.Model):
    """One HTTP request to Bitrix24 (each retry is its own row). Secrets never reach this table."""

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    method = models.CharField(max_length=100, db_index=True)
    parent = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="commands",
        help_text="The batch request this command travelled in.",
    )
    is_batch = models.BooleanField(default=False)
    sub_methods = models.JSONField(default=list, blank=True)
    attempt = models.PositiveSmallIntegerField(default=1)
    duration_ms = models.PositiveIntegerField(default=0)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    error_code = models.CharField(max_length=64, blank=True, db_index=True)
    error_description = models.TextField(blank=True)
    auth_mode = models.CharField(max_length=16, blank=True)
    # The SIMtrix call the request served (crm.context.crm_call_context); no FK on purpose.
    call_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    intent_key = models.CharField(max_length=200, blank=True)
    params = models.JSONField(default=dict, blank=True, help_text="Redacted summary.")

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "Bitrix24 request"

    def __str__(self) -> str:
        return f"{self.method} {self.http_status or '-'} {self.error_code}".strip()

    @property
    def ok(self) -> bool:
        return not self.error_code


class Intent(models.Model):
    """One intended non-idempotent write (a lead, a task, a registered call) and its outcome.

    The unique key is what makes a retried intent safe: the row says whether it was already done
    (and with which result) or whether an earlier attempt ended without an answer, in which case
    the portal is searched for the object before anything is sent again.
    """

    class Status(models.TextChoices):
        NEW = "new", "Not sent yet / safe to send"
        SENDING = "sending", "Being sent"
        AMBIGUOUS = "ambiguous", "Sent, outcome unknown"
        DONE = "done", "Done"
        FAILED = "failed", "Failed permanently"

    key = models.CharField(max_length=200, unique=True)
    method = models.CharField(max_length=100)
    status = models.CharField(max_length=16, choices=Status, default=Status.NEW)
    attempts = models.PositiveSmallIntegerField(default=0)
    claimed_until = models.DateTimeField(null=True, blank=True)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.method} {self.key} ({self.status})"


class DirectoryRow(models.Model):
    """Bookkeeping shared by rows mirrored from the portal."""

    seen_at = models.DateTimeField(help_text="Last sync that found this row in Bitrix24.")
    removed = models.BooleanField(
        default=False, help_text="No longer exists in Bitrix24 (kept so settings can tell)."
    )

    class Meta:
        abstract = True


class Department(DirectoryRow):
    id = models.PositiveIntegerField(primary_key=True, verbose_name="Bitrix24 ID")
    name = models.CharField(max_length=255)
    parent_id = models.PositiveIntegerField(null=True, blank=True)
    head_user_id = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Bitrix24User(DirectoryRow):
    id = models.PositiveIntegerField(primary_key=True, verbose_name="Bitrix24 ID")
    name = models.CharField(max_length=255, help_text="Display name.")
    first_name = models.CharField(max_length=100, blank=True)
    last_name = models.CharField(max_length=100, blank=True)
    email = models.CharField(max_length=255, blank=True)
    position = models.CharField(max_length=255, blank=True)
    active = models.BooleanField(default=True)
    inner_phone = models.CharField(max_length=32, blank=True)
    phones = models.JSONField(
        default=list, blank=True, help_text='[{"kind": "WORK_PHONE", "value": ..., "e164": ...}]'
    )
    department_ids = models.JSONField(default=list, blank=True)
    timeman_status = models.CharField(
        "work-day status",
        max_length=16,
        blank=True,
        help_text="TIMEMAN_STATUS: OPENED, CLOSED, PAUSED, EXPIRED (empty = not known).",
    )
    timeman_checked_at = models.DateTimeField(
        "work-day status checked", null=True, blank=True, editable=False
    )

    class Meta:
        ordering = ["name"]
        verbose_name = "Bitrix24 user"

    def __str__(self) -> str:
        return self.name


class Pipeline(DirectoryRow):
    id = models.PositiveIntegerField(primary_key=True, verbose_name="Bitrix24 category ID")
    name = models.CharField(max_length=255)
    sort = models.IntegerField(default=0)
    is_default = models.BooleanField(default=False)

    class Meta:
        ordering = ["sort", "id"]
        verbose_name = "deal pipeline"

    def __str__(self) -> str:
        return self.name


class Stage(DirectoryRow):
    class Semantics(models.TextChoices):
        PROCESS = "process", "In progress"
        SUCCESS = "success", "Won"
        FAILURE = "failure", "Lost"

    stage_id = models.CharField(max_length=64, unique=True, help_text="e.g. NEW or C1:NEW")
    pipeline = models.ForeignKey(Pipeline, on_delete=models.CASCADE, related_name="stages")
    name = models.CharField(max_length=255)
    semantics = models.CharField(max_length=16, choices=Semantics, default=Semantics.PROCESS)
    sort = models.IntegerField(default=0)

    class Meta:
        ordering = ["pipeline__sort", "pipeline_id", "sort"]
        verbose_name = "deal stage"

    def __str__(self) -> str:
        return f"{self.pipeline.name}: {self.name}"


class LeadStatus(DirectoryRow):
    status_id = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=255)
    semantics = models.CharField(
        max_length=16, choices=Stage.Semantics, default=Stage.Semantics.PROCESS
    )
    sort = models.IntegerField(default=0)

    class Meta:
        ordering = ["sort"]
        verbose_name_plural = "lead statuses"

    def __str__(self) -> str:
        return self.name


class LeadSource(DirectoryRow):
    source_id = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=255)
    sort = models.IntegerField(default=0)

    class Meta:
        ordering = ["sort"]

    def __str__(self) -> str:
        return self.name


class EntityField(DirectoryRow):
    """A field of a CRM entity type as ``crm.*.fields`` describes it (custom UF_* fields too).

    Mirrored so that a setting naming a field (a routing condition) can tell when it was deleted
    in Bitrix24.
    """

    entity_type = models.CharField(max_length=16, help_text="contact, company, lead or deal")
    name = models.CharField(max_length=100, help_text="As Bitrix24 names it, e.g. UF_CRM_REGION.")
    title = models.CharField(max_length=255, blank=True)
    type = models.CharField(max_length=32, blank=True)
    multiple = models.BooleanField(default=False)
    custom = models.BooleanField(default=False, help_text="A user field (UF_*).")

    class Meta:
        ordering = ["entity_type", "-custom", "name"]
        verbose_name = "CRM field"
        constraints = [
            models.UniqueConstraint(fields=["entity_type", "name"], name="crm_entityfield_unique")
        ]

    def __str__(self) -> str:
        return f"{self.entity_type}.{self.name}" + (f" ({self.title})" if self.title else "")


class InboundEvent(models.Model):
    """An event Bitrix24 posted to SIMtrix, verified, kept until its work is done."""

    class Status(models.TextChoices):
        PENDING = "pending"
        DONE = "done"
        IGNORED = "ignored", "ignored (nothing to do)"
        FAILED = "failed"

    event = models.CharField(max_length=64, db_index=True)
    handler_id = models.CharField(max_length=32, blank=True, verbose_name="event handler ID")
    data = models.JSONField(default=dict, blank=True, help_text="data[...] as posted.")
    ts = models.CharField(max_length=20, blank=True, help_text="The portal's timestamp.")
    status = models.CharField(max_length=16, choices=Status, default=Status.PENDING)
    result = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    received_at = models.DateTimeField(auto_now_add=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    done_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-received_at", "-pk"]
        verbose_name = "Bitrix24 event"
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=models.Q(status="pending"),
                name="crm_event_pending",
            )
        ]

    def __str__(self) -> str:
        return f"{self.event} ({self.status})"
