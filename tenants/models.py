from __future__ import annotations

from django.db import models
from django_tenants.models import DomainMixin, TenantMixin

from tenants.validators import validate_country, validate_schema_name, validate_timezone


class Tenant(TenantMixin):
    """A customer of SIMtrix: one Bitrix24 portal, one PostgreSQL schema."""

    name = models.CharField(max_length=100)
    timezone = models.CharField(max_length=64, default="UTC", validators=[validate_timezone])
    default_country = models.CharField(
        max_length=2,
        default="PL",
        validators=[validate_country],
        help_text="Region used to read phone numbers written without a country code.",
    )
    language = models.CharField(
        max_length=8,
        choices=[("en", "English"), ("pl", "Polski")],
        default="en",
        help_text="The language of what SIMtrix writes into Bitrix24 (notifications, tasks, "
        "leads, call activities) and of a new tenant's default templates. Each admin user "
        "picks their own language for these pages.",
    )
    is_active = models.BooleanField(
        default=True, help_text="Inactive tenants are not served and their API tokens stop working."
    )
    require_two_factor = models.BooleanField(
        "require two-factor",
        default=False,
        help_text="Every admin of this tenant must log in with an authenticator app's code; "
        "one who has none is sent to set it up before anything else.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    auto_create_schema = True
    auto_drop_schema = False

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.schema_name})"

    def clean_fields(self, exclude: list[str] | None = None) -> None:
        super().clean_fields(exclude=exclude)
        if self._state.adding and self.schema_name != "public":
            validate_schema_name(self.schema_name)


class Domain(DomainMixin):
    class Meta:
        ordering = ["domain"]

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

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+", db_index=False)
    at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["at"], name="tenants_wake_at")]

    def __str__(self) -> str:
        return f"{self.tenant_id} at {self.at:%Y-%m-%d %H:%M:%S}"


class TenantSchedule(models.Model):
    """One row per tenant: its periodic needs, and its outbox as the dispatcher last saw it."""

    tenant = models.OneToOneField(
        Tenant, on_delete=models.CASCADE, primary_key=True, related_name="schedule"
    )
    availability_refresh = models.BooleanField(
        default=False, help_text="Routes by the Bitrix24 work-day status: read every minute."
    )
    outbox_visited_at = models.DateTimeField(null=True, blank=True)
    outbox_oldest_due_at = models.DateTimeField(
        null=True, blank=True, help_text="The oldest run that was due and not started."
    )
    outbox_late = models.PositiveIntegerField(
        default=0, help_text="Runs due for more than a minute and not started."
    )

    def __str__(self) -> str:
        return f"schedule of {self.tenant_id}"
