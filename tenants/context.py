"""The current tenant's own settings, as every app reads them: one copy each, one fallback.

`connection.tenant` is the Tenant row when a request or a Celery task set the schema from it;
where only a schema name was set (`schema_context`, a fan-out job, a management command) the row
is read once a minute per process. A schema without a tenant row (the template, public) gets the
model's defaults, so a background job never fails for want of a clock or a country.
"""

from __future__ import annotations

from django.conf import settings
from django.db import connection
from django.utils import translation

from tenants.connection import tenant_connection
from tenants.memo import tenant_memo
from tenants.models import Domain, Tenant

_COUNTRY_DEFAULT: str = Tenant._meta.get_field("default_country").default
_TIMEZONE_DEFAULT: str = Tenant._meta.get_field("timezone").default
_LANGUAGE_DEFAULT: str = Tenant._meta.get_field("language").default


def _tenant_settings() -> tuple[str, str, str]:
    """(default_country, timezone, language) of the tenant whose schema is current."""
    # django-tenants sets tenant and schema together (set_schema: a FakeTenant of the name).
    tenant = getattr(connection, "tenant", None)
    if isinstance(tenant, Tenant):
        return tenant.default_country, tenant.timezone, tenant.language

    def load() -> tuple[str, str, str]:
        row = (
            Tenant.objects.filter(schema_name=tenant_connection.schema_name)
            .values_list("default_country", "timezone", "language")
            .first()
        )
        return row or ("", "", "")

    return tenant_memo("tenants.context", load, seconds=60)


def tenant_country() -> str:
    """The ISO country whose numbering plan reads a number typed without a country code."""
    return _tenant_settings()[0] or _COUNTRY_DEFAULT


def tenant_timezone() -> str:
    """The IANA timezone of the tenant's office hours, reports and admin."""
    return _tenant_settings()[1] or _TIMEZONE_DEFAULT


def tenant_language() -> str:
    """The language SIMtrix writes into the tenant's Bitrix24 in ("en", "pl")."""
    return _tenant_settings()[2] or _LANGUAGE_DEFAULT


def tenant_language_active() -> translation.override:
    """`with tenant_language_active():` what is written into Bitrix24 meanwhile (gettext) is in
    the tenant's language, whatever the request's or the worker's own."""
    return translation.override(tenant_language())


def tenant_public_url(path: str = "/") -> str:
    """`path` on the tenant's own address, as people and Bitrix24 reach it: its primary domain
    under SIMTRIX_PUBLIC_SCHEME and SIMTRIX_PUBLIC_PORT ("" when the tenant has no domain)."""
    domain = (
        Domain.objects.filter(tenant__schema_name=tenant_connection.schema_name)
        .order_by("-is_primary", "pk")
        .values_list("domain", flat=True)
        .first()
    )
    if not domain:
        return ""
    port = settings.SIMTRIX_PUBLIC_PORT
    host = f"{domain}:{port}" if port else domain
    return f"{settings.SIMTRIX_PUBLIC_SCHEME}://{host}{path}"
