"""Tenant provisioning: the one path by which a tenant comes to exist (command, admin, demo)."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db import connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.utils.translation import gettext
from django_tenants.utils import schema_context, schema_exists

from calls.services import support_group_ensure
from crm.services import (
    connection_set_events_token,
    connection_set_webhook,
    directory_sync_after_connect,
)
from crm.validators import validate_webhook_url
from scenarios.document import scenarios_install_defaults
from tenants.models import Domain, Tenant, TenantSchedule
from tenants.validators import (
    validate_country,
    validate_domain,
    validate_events_token,
    validate_schema_name,
    validate_timezone,
)

PUBLIC_DOMAINS = ("localhost",)


class ProvisioningError(Exception):
    """Input that cannot become a tenant; the message is meant for the operator."""


@dataclass(frozen=True)
class TenantSpec:
    schema: str
    name: str
    domain: str
    bitrix24_webhook: str = ""
    bitrix24_events_token: str = ""
    timezone: str = "UTC"
    country: str = "PL"
    language: str = "en"


def tenant_spec_validate(spec: TenantSpec) -> None:
    """Every check that can be made before anything is written."""

    if spec.language not in ("en", "pl"):
        raise ProvisioningError(f"--language must be en or pl, not {spec.language!r}.")
    checks = [
        (validate_schema_name, spec.schema),
        (validate_domain, spec.domain),
        (validate_timezone, spec.timezone),
        (validate_country, spec.country),
    ]
    if spec.bitrix24_webhook:
        checks.append((validate_webhook_url, spec.bitrix24_webhook))
    if spec.bitrix24_events_token:
        checks.append((validate_events_token, spec.bitrix24_events_token))
    for validator, value in checks:
        try:
            validator(value)
        except ValidationError as exc:
            raise ProvisioningError(exc.messages[0]) from exc
    if not spec.name.strip():
        raise ProvisioningError(gettext("The tenant name must not be empty."))
    if Tenant.objects.filter(schema_name=spec.schema).exists() or schema_exists(spec.schema):
        raise ProvisioningError(
            gettext("Schema %(schema)s already exists.") % {"schema": repr(spec.schema)}
        )
    if Domain.objects.filter(domain=spec.domain).exists():
        raise ProvisioningError(
            gettext("Domain %(domain)s is already used by another tenant.")
            % {"domain": repr(spec.domain)}
        )


def tenant_public_ensure() -> Tenant:
    """The public tenant (the operators' admin at localhost) exists once migrations have run."""
    with schema_context("public"):
        tenant, _ = Tenant.objects.get_or_create(
            schema_name="public", defaults={"name": "SIMtrix operators"}
        )
        for domain in PUBLIC_DOMAINS:
            Domain.objects.get_or_create(
                domain=domain, defaults={"tenant": tenant, "is_primary": True}
            )
    return tenant


def tenant_template_ensure() -> None:
    """Keeps the template schema that new tenants are cloned from at the latest migrations.

    Cloning with faked migrations is only correct while the template is fully migrated, so an
    upgrade that added a migration must reach the template before the next tenant is cloned.
    """
    template = settings.TENANT_BASE_SCHEMA
    if schema_exists(template):
        with schema_context(template):
            executor = MigrationExecutor(connection)
            pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
        if not pending:
            return
    else:
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE SCHEMA "{template}"')
    call_command(
        "migrate_schemas", schema_name=template, tenant=True, interactive=False, verbosity=0
    )


def tenant_provision(spec: TenantSpec) -> Tenant:
    """Creates the tenant's schema, domain, Bitrix24 connection and default configuration.

    Either all of it exists afterwards or none of it does.
    """
    tenant_spec_validate(spec)
    tenant_public_ensure()
    tenant_template_ensure()
    with transaction.atomic():
        tenant = Tenant(
            schema_name=spec.schema,
            name=spec.name.strip(),
            timezone=spec.timezone,
            default_country=spec.country,
            language=spec.language,
        )
        tenant.save(verbosity=0)
        Domain.objects.create(domain=spec.domain, tenant=tenant, is_primary=True)
        TenantSchedule.objects.create(tenant=tenant)
        with schema_context(spec.schema):
            tenant_defaults_install(
                bitrix24_webhook=spec.bitrix24_webhook,
                bitrix24_events_token=spec.bitrix24_events_token,
            )
    if spec.bitrix24_webhook:
        # The first call already shows users' names and routes by them (not the hourly sync).
        with schema_context(spec.schema):
            directory_sync_after_connect()
    return tenant


def tenant_defaults_install(*, bitrix24_webhook: str, bitrix24_events_token: str = "") -> None:
    """What every new tenant starts with; runs inside the tenant's schema."""

    if bitrix24_webhook:
        connection_set_webhook(webhook_url=bitrix24_webhook)
    if bitrix24_events_token:
        connection_set_events_token(token=bitrix24_events_token)
    support_group_ensure()
    scenarios_install_defaults()
