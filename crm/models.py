from __future__ import annotations

from urllib.parse import urlsplit

from django.db import models
from django.utils.translation import gettext, pgettext_lazy
from django.utils.translation import gettext_lazy as _

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
        WEBHOOK = "webhook", _("Inbound webhook")
        OAUTH = "oauth", _("Local OAuth application")

    class RatePlan(models.TextChoices):
        STANDARD = "standard", _("Standard / Professional (2 requests/s, burst 50)")
        ENTERPRISE = "enterprise", _("Enterprise (5 requests/s, burst 250)")

    singleton = models.PositiveSmallIntegerField(
        _("single-row marker"), default=1, unique=True, editable=False
    )
    auth_mode = models.CharField(
        _("connection type"), max_length=16, choices=AuthMode, default=AuthMode.WEBHOOK
    )
    webhook_url = EncryptedTextField(
        max_length=500,
        blank=True,
        validators=[validate_webhook_url],
        verbose_name=_("webhook URL"),
    )

    # Local OAuth application ("API only"): the admin enters client id/secret, Bitrix24 posts the
    # first token pair to the install callback, refreshes rotate both tokens.
    oauth_client_id = models.CharField(_("client id"), max_length=128, blank=True)
    oauth_client_secret = EncryptedTextField(_("client secret"), max_length=256, blank=True)
    oauth_token_url = models.CharField(
        _("OAuth token URL"),
        max_length=300,
        validators=[validate_oauth_token_url],
        default=DEFAULT_OAUTH_TOKEN_URL,
        help_text=_("Where tokens are refreshed; Bitrix24 cloud uses oauth.bitrix.info."),
    )
    oauth_client_endpoint = models.CharField(
        _("portal REST endpoint"), max_length=300, blank=True, editable=False
    )
    oauth_access_token = EncryptedTextField(
        _("access token"), max_length=256, blank=True, editable=False
    )
    oauth_refresh_token = EncryptedTextField(
        _("refresh token"), max_length=256, blank=True, editable=False
    )
    oauth_expires_at = models.DateTimeField(
        _("access token expires at"), null=True, blank=True, editable=False
    )
    oauth_member_id = models.CharField(
        _("portal member ID"), max_length=64, blank=True, editable=False
    )
    oauth_application_token = EncryptedTextField(
        _("application token"), max_length=64, blank=True, editable=False
    )
    # What verifies Bitrix24's calls to SIMtrix (auth[application_token]) for a webhook-connected
    # tenant: the token of the portal's outbound webhook (an OAuth app's arrives with its install).
    events_token = EncryptedTextField(
        _("events token"),
        max_length=128,
        blank=True,
        editable=False,
        help_text=_("The application token Bitrix24 shows for the portal's outbound webhook."),
    )
    oauth_installed_at = models.DateTimeField(
        _("installed at"), null=True, blank=True, editable=False
    )
    # ONAPPUNINSTALL: the portal removed the application; its tokens no longer work.
    uninstalled_at = models.DateTimeField(
        _("uninstalled at"), null=True, blank=True, editable=False
    )
    # The SMS provider (crm.messageservice): registered when, or why not.
    sms_provider_at = models.DateTimeField(
        _("SMS provider registered at"), null=True, blank=True, editable=False
    )
    sms_provider_error = models.CharField(
        _("SMS provider error"), max_length=500, blank=True, editable=False
    )
    # Bitrix24 -> SIMtrix: the handlers bound with event.bind (OAuth), the last event received.
    events_bound = models.JSONField(_("events bound"), default=list, blank=True, editable=False)
    events_bound_at = models.DateTimeField(
        _("events bound at"), null=True, blank=True, editable=False
    )
    events_bind_error = models.TextField(_("event binding error"), blank=True, editable=False)
    last_event_at = models.DateTimeField(
        _("last event received at"), null=True, blank=True, editable=False
    )
    last_event_refused_at = models.DateTimeField(
        _("last event refused at"),
        null=True,
        blank=True,
        editable=False,
        help_text=_("The last time an event with a wrong application token was refused."),
    )
    # External lines (telephony.externalLine.*): the devices' numbers as last synced.
    lines = models.JSONField(
        _("external lines"),
        default=dict,
        blank=True,
        editable=False,
        help_text=_("Each line's number and name, as registered in Bitrix24."),
    )
    lines_synced_at = models.DateTimeField(
        _("external lines synced at"), null=True, blank=True, editable=False
    )
    lines_sync_error = models.TextField(_("external lines sync error"), blank=True, editable=False)

    # Settings.
    rate_plan = models.CharField(
        _("Bitrix24 plan"), max_length=16, choices=RatePlan, default=RatePlan.STANDARD
    )
    rate_limit_per_second = models.FloatField(
        _("requests per second"),
        null=True,
        blank=True,
        help_text=_(
            "Overrides the plan's steady request rate (self-hosted portals with their own limits)."
        ),
    )
    rate_limit_burst = models.PositiveIntegerField(
        _("request burst"),
        null=True,
        blank=True,
        help_text=_("Overrides how many requests the plan allows in a burst."),
    )
    lookup_budget_ms = models.PositiveIntegerField(
        _("caller lookup budget (ms)"),
        default=1500,
        help_text=_(
            "How long a ringing phone waits for the CRM; past it the lookup finishes "
            "in the background."
        ),
    )
    lookup_cache_ttl_s = models.PositiveIntegerField(
        _("caller lookup cache TTL (s)"),
        default=300,
        help_text=_("How long a caller found in the CRM is remembered, in seconds."),
    )

    # Health, shown in the admin.
    last_error_code = models.CharField(
        _("last error code"), max_length=64, blank=True, editable=False
    )
    last_error = models.TextField(_("last error"), blank=True, editable=False)
    last_error_at = models.DateTimeField(_("last error at"), null=True, blank=True, editable=False)
    last_ok_at = models.DateTimeField(_("last success at"), null=True, blank=True, editable=False)
    scopes = models.JSONField(_("scopes"), default=list, blank=True, editable=False)
    checked_at = models.DateTimeField(_("checked at"), null=True, blank=True, editable=False)
    directory_synced_at = models.DateTimeField(
        _("directory synced at"), null=True, blank=True, editable=False
    )
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("Bitrix24 connection")
        verbose_name_plural = _("Bitrix24 connections")
        constraints = [
            models.CheckConstraint(condition=models.Q(singleton=1), name="crm_connection_singleton")
        ]

    def __str__(self) -> str:
        if self.auth_mode == self.AuthMode.OAUTH:
            if not self.portal_domain:
                return gettext("OAuth app (not installed)")
            return gettext("OAuth app on %(portal)s") % {"portal": self.portal_domain}
        return self.webhook_url_masked or gettext("Bitrix24 connection (not configured)")

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

    created_at = models.DateTimeField(_("sent at"), auto_now_add=True, db_index=True)
    method = models.CharField(_("method"), max_length=100, db_index=True)
    parent = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="commands",
        verbose_name=_("batch request"),
        help_text=_("The batch request this command travelled in."),
    )
    is_batch = models.BooleanField(_("batch"), default=False)
    sub_methods = models.JSONField(_("methods in the batch"), default=list, blank=True)
    attempt = models.PositiveSmallIntegerField(_("attempt"), default=1)
    duration_ms = models.PositiveIntegerField(_("duration (ms)"), default=0)
    http_status = models.PositiveSmallIntegerField(_("HTTP status"), null=True, blank=True)
    error_code = models.CharField(_("error code"), max_length=64, blank=True, db_index=True)
    error_description = models.TextField(_("error description"), blank=True)
    auth_mode = models.CharField(_("connection type"), max_length=16, blank=True)
    # The SIMtrix call the request served (crm.context.crm_call_context); no FK on purpose.
    call_id = models.BigIntegerField(_("call ID"), null=True, blank=True, db_index=True)
    intent_key = models.CharField(_("intent key"), max_length=200, blank=True)
    params = models.JSONField(
        _("parameters"),
        default=dict,
        blank=True,
        help_text=_("A summary of the parameters, with secrets removed."),
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("Bitrix24 request")
        verbose_name_plural = _("Bitrix24 requests")

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
        NEW = "new", _("Not sent yet / safe to send")
        SENDING = "sending", _("Being sent")
        AMBIGUOUS = "ambiguous", _("Sent, outcome unknown")
        DONE = "done", _("Done")
        FAILED = "failed", _("Failed permanently")

    key = models.CharField(_("key"), max_length=200, unique=True)
    method = models.CharField(_("method"), max_length=100)
    status = models.CharField(_("status"), max_length=16, choices=Status, default=Status.NEW)
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0)
    claimed_until = models.DateTimeField(_("being sent until"), null=True, blank=True)
    result = models.JSONField(_("result"), null=True, blank=True)
    error = models.TextField(_("error"), blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = _("intent")
        verbose_name_plural = _("intents")

    def __str__(self) -> str:
        return f"{self.method} {self.key} ({self.status})"


class DirectoryRow(models.Model):
    """Bookkeeping shared by rows mirrored from the portal."""

    seen_at = models.DateTimeField(
        _("last seen"), help_text=_("Last sync that found this row in Bitrix24.")
    )
    removed = models.BooleanField(
        _("removed"),
        default=False,
        help_text=_("No longer exists in Bitrix24 (kept so settings can tell)."),
    )

    class Meta:
        abstract = True


class Department(DirectoryRow):
    id = models.PositiveIntegerField(_("Bitrix24 ID"), primary_key=True)
    name = models.CharField(_("name"), max_length=255)
    parent_id = models.PositiveIntegerField(_("parent department ID"), null=True, blank=True)
    head_user_id = models.PositiveIntegerField(
        _("head of department (Bitrix24 user ID)"), null=True, blank=True
    )

    class Meta:
        ordering = ["name"]
        verbose_name = _("department")
        verbose_name_plural = _("departments")

    def __str__(self) -> str:
        return self.name


class Bitrix24User(DirectoryRow):
    id = models.PositiveIntegerField(_("Bitrix24 ID"), primary_key=True)
    name = models.CharField(
        _("full name"), max_length=255, help_text=_("As Bitrix24 shows it (first and last name).")
    )
    first_name = models.CharField(_("first name"), max_length=100, blank=True)
    last_name = models.CharField(_("last name"), max_length=100, blank=True)
    email = models.CharField(_("email"), max_length=255, blank=True)
    position = models.CharField(_("position"), max_length=255, blank=True)
    active = models.BooleanField(_("active"), default=True)
    inner_phone = models.CharField(_("internal phone number"), max_length=32, blank=True)
    phones = models.JSONField(
        _("phone numbers"),
        default=list,
        blank=True,
        help_text=_(
            "The user's phone numbers in Bitrix24 (work, mobile, ...), each also in "
            "international format."
        ),
    )
    department_ids = models.JSONField(_("department IDs"), default=list, blank=True)
    timeman_status = models.CharField(
        _("work-day status"),
        max_length=16,
        blank=True,
        help_text=_(
            "From Bitrix24's work time tracking: OPENED (working), CLOSED (day ended), "
            "PAUSED (on a break) or EXPIRED (day not closed); empty when not known."
        ),
    )
    timeman_checked_at = models.DateTimeField(
        _("work-day status checked"), null=True, blank=True, editable=False
    )

    class Meta:
        ordering = ["name"]
        verbose_name = _("Bitrix24 user")
        verbose_name_plural = _("Bitrix24 users")

    def __str__(self) -> str:
        return self.name


class Pipeline(DirectoryRow):
    id = models.PositiveIntegerField(_("Bitrix24 category ID"), primary_key=True)
    name = models.CharField(_("name"), max_length=255)
    sort = models.IntegerField(_("sort order"), default=0)
    is_default = models.BooleanField(_("default"), default=False)

    class Meta:
        ordering = ["sort", "id"]
        verbose_name = _("deal pipeline")
        verbose_name_plural = _("deal pipelines")

    def __str__(self) -> str:
        return self.name


class Stage(DirectoryRow):
    class Semantics(models.TextChoices):
        PROCESS = "process", _("In progress")
        SUCCESS = "success", _("Won")
        FAILURE = "failure", _("Lost")

    stage_id = models.CharField(
        _("stage ID"),
        max_length=64,
        unique=True,
        help_text=_("As Bitrix24 names it, e.g. NEW or C1:NEW."),
    )
    pipeline = models.ForeignKey(
        Pipeline, on_delete=models.CASCADE, related_name="stages", verbose_name=_("pipeline")
    )
    name = models.CharField(_("name"), max_length=255)
    semantics = models.CharField(
        _("stage type"), max_length=16, choices=Semantics, default=Semantics.PROCESS
    )
    sort = models.IntegerField(_("sort order"), default=0)

    class Meta:
        ordering = ["pipeline__sort", "pipeline_id", "sort"]
        verbose_name = _("deal stage")
        verbose_name_plural = _("deal stages")

    def __str__(self) -> str:
        return f"{self.pipeline.name}: {self.name}"


class LeadStatus(DirectoryRow):
    status_id = models.CharField(_("status ID"), max_length=64, unique=True)
    name = models.CharField(_("name"), max_length=255)
    semantics = models.CharField(
        _("status type"), max_length=16, choices=Stage.Semantics, default=Stage.Semantics.PROCESS
    )
    sort = models.IntegerField(_("sort order"), default=0)

    class Meta:
        ordering = ["sort"]
        verbose_name = _("lead status")
        verbose_name_plural = _("lead statuses")

    def __str__(self) -> str:
        return self.name


class LeadSource(DirectoryRow):
    source_id = models.CharField(_("source ID"), max_length=64, unique=True)
    name = models.CharField(_("name"), max_length=255)
    sort = models.IntegerField(_("sort order"), default=0)

    class Meta:
        ordering = ["sort"]
        verbose_name = _("lead source")
        verbose_name_plural = _("lead sources")

    def __str__(self) -> str:
        return self.name


class EntityField(DirectoryRow):
    """A field of a CRM entity type as ``crm.*.fields`` describes it (custom UF_* fields too).

    Mirrored so that a setting naming a field (a routing condition) can tell when it was deleted
    in Bitrix24.
    """

    entity_type = models.CharField(
        _("entity type"), max_length=16, help_text=_("contact, company, lead or deal")
    )
    name = models.CharField(
        _("name"), max_length=100, help_text=_("As Bitrix24 names it, e.g. UF_CRM_REGION.")
    )
    title = models.CharField(
        _("label"), max_length=255, blank=True, help_text=_("The field's name in Bitrix24's forms.")
    )
    type = models.CharField(_("type"), max_length=32, blank=True)
    multiple = models.BooleanField(_("multiple"), default=False)
    custom = models.BooleanField(
        _("custom"), default=False, help_text=_("A custom field added in Bitrix24 (UF_*).")
    )

    class Meta:
        ordering = ["entity_type", "-custom", "name"]
        verbose_name = _("CRM field")
        verbose_name_plural = _("CRM fields")
        constraints = [
            models.UniqueConstraint(fields=["entity_type", "name"], name="crm_entityfield_unique")
        ]

    def __str__(self) -> str:
        return f"{self.entity_type}.{self.name}" + (f" ({self.title})" if self.title else "")


class InboundEvent(models.Model):
    """An event Bitrix24 posted to SIMtrix, verified, kept until its work is done."""

    class Status(models.TextChoices):
        PENDING = "pending", pgettext_lazy("Bitrix24 event", "pending")
        DONE = "done", pgettext_lazy("Bitrix24 event", "done")
        IGNORED = "ignored", _("ignored (nothing to do)")
        FAILED = "failed", _("failed")

    event = models.CharField(_("event"), max_length=64, db_index=True)
    handler_id = models.CharField(_("event handler ID"), max_length=32, blank=True)
    data = models.JSONField(
        _("data"), default=dict, blank=True, help_text=_("The event's data as Bitrix24 posted it.")
    )
    ts = models.CharField(
        _("portal timestamp"), max_length=20, blank=True, help_text=_("The portal's timestamp.")
    )
    status = models.CharField(_("status"), max_length=16, choices=Status, default=Status.PENDING)
    result = models.JSONField(_("result"), default=dict, blank=True)
    error = models.TextField(_("error"), blank=True)
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0)
    received_at = models.DateTimeField(_("received at"), auto_now_add=True)
    next_attempt_at = models.DateTimeField(_("next attempt at"), null=True, blank=True)
    done_at = models.DateTimeField(_("done at"), null=True, blank=True)

    class Meta:
        ordering = ["-received_at", "-pk"]
        verbose_name = _("Bitrix24 event")
        verbose_name_plural = _("Bitrix24 events")
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=models.Q(status="pending"),
                name="crm_event_pending",
            )
        ]

    def __str__(self) -> str:
        return f"{self.event} ({self.status})"
