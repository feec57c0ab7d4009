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
    is_active = models.BooleanField(
        default=True, help_text="Inactive tenants are not served and their API tokens stop working."
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
