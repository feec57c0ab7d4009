from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _
from django_tenants.models import DomainMixin, TenantMixin
from django_tenants.postgresql_backend.base import _check_schema_name

from tenants.validators import validate_country, validate_schema_name, validate_timezone


class Tenant(TenantMixin):
    """A customer of SIMtrix: one Bitrix24 portal, one PostgreSQL schema."""

    # TenantMixin's, as it defines it, with a name for the admin.
    schema_name = models.CharField(
        _("schema name"),
        max_length=63,
        unique=True,
        db_index=True,
        validators=[_check_schema_name],
    )
    name = models.CharField(_("name"), max_length=100)
    timezone = models.CharField(
        _("timezone"), max_length=64, default="UTC", validators=[validate_timezone]
    )
    default_country = models.CharField(
        _("default country"),
        max_length=2,
        default="PL",
        validators=[validate_country],
        help_text=_("Region used to read phone numbers written without a country code."),
    )
    language = models.CharField(
        _("language"),
        max_length=8,
        # Each language named in itself, as language pickers do: not translated.
        choices=[("en", "English"), ("pl", "Polski")],
        default="en",
        help_text=_(
            "The language of what SIMtrix writes into Bitrix24 (notifications, tasks, "
            "leads, call activities) and of a new tenant's default templates. Each admin user "
            "picks their own language for these pages."
        ),
    )
    is_active = models.BooleanField(
        _("is active"),
        default=True,
        help_text=_("Inactive tenants are not served and their API tokens stop working."),
    )
    require_two_factor = models.BooleanField(
        _("require two-factor"),
        default=False,
        help_text=_(
            "Every admin of this tenant must log in with an authenticator app's code; "
            "one who has none is sent to set it up before anything else."
        ),
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    auto_create_schema = True
    auto_drop_schema = False

    class Meta:
        ordering = ["name"]
        verbose_name = _("tenant")
        verbose_name_plural = _("tenants")

    def __str__(self) -> str:
        return f"{self.name} ({self.schema_name})"

    def clean_fields(self, exclude: list[str] | None = None) -> None:
        super().clean_fields(exclude=exclude)
        if self._state.adding and self.schema_name != "public":
            validate_schema_name(self.schema_name)


class Domain(DomainMixin):
    # DomainMixin's, as it defines them, with names for the admin.
    domain = models.CharField(_("domain"), max_length=253, unique=True, db_index=True)
    tenant = models.ForeignKey(
        Tenant,
        on_delete=models.CASCADE,
        db_index=True,
        related_name="domains",
        verbose_name=_("tenant"),
    )
    is_primary = models.BooleanField(_("is primary"), default=True, db_index=True)

    class Meta:
        ordering = ["domain"]
        verbose_name = _("domain")
        verbose_name_plural = _("domains")

    def __str__(self) -> str:
        return self.domain


# --- What the scheduler knows without entering a tenant's schema (public) ---------------------


class OutboxWake(models.Model):
    """ "Look at this tenant's outbox at `at`": the index the dispatcher reads, in public.

    Whoever makes a run need attention sooner (planned, retried, released, sent) inserts a row in
    the same transaction; the dispatcher deletes a tenant's due rows when it visits it, then adds
    one for the tenant's next need. Rows are only inserted and deleted, never updated, so
    concurrent writers never wait for one another and a row written by a transaction that has
    not committed yet is never lost: the dispatcher cannot delete what it cannot see.
    """

    tenant = models.ForeignKey(
        Tenant,
        on_delete=models.CASCADE,
        related_name="+",
        db_index=False,
        verbose_name=_("tenant"),
    )
    at = models.DateTimeField(_("visit at"))

    class Meta:
        indexes = [models.Index(fields=["at"], name="tenants_wake_at")]
        verbose_name = _("outbox wake-up")
        verbose_name_plural = _("outbox wake-ups")

    def __str__(self) -> str:
        return f"{self.tenant_id} at {self.at:%Y-%m-%d %H:%M:%S}"


class TenantSchedule(models.Model):
    """One row per tenant: its periodic needs, and its outbox as the dispatcher last saw it."""

    tenant = models.OneToOneField(
        Tenant,
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="schedule",
        verbose_name=_("tenant"),
    )
    availability_refresh = models.BooleanField(
        _("availability refresh"),
        default=False,
        help_text=_(
            "The tenant routes calls by the Bitrix24 work-day status, so it is read every minute."
        ),
    )
    alerts = models.BooleanField(
        _("alerts"),
        default=False,
        help_text=_(
            "The tenant has alerts on and someone to tell, so they are checked every minute."
        ),
    )
    outbox_visited_at = models.DateTimeField(_("outbox visited at"), null=True, blank=True)
    outbox_oldest_due_at = models.DateTimeField(
        _("oldest due run at"),
        null=True,
        blank=True,
        help_text=_("The oldest run that was due and not started."),
    )
    outbox_late = models.PositiveIntegerField(
        _("late runs"), default=0, help_text=_("Runs due for more than a minute and not started.")
    )

    class Meta:
        verbose_name = _("tenant schedule")
        verbose_name_plural = _("tenant schedules")

    def __str__(self) -> str:
        return f"schedule of {self.tenant_id}"
