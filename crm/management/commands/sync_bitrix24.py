from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser
from django_tenants.utils import schema_context

from crm.directory import directory_sync
from crm.errors import Bitrix24Error
from tenants.management.jsoncommand import JsonCommand
from tenants.models import Tenant


class Command(JsonCommand):
    help = "Mirrors a tenant's Bitrix24 users, departments, pipelines, stages and lead statuses."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--schema", required=True)

    def run(self, **options: Any) -> dict[str, Any]:
        tenant = (
            Tenant.objects.exclude(schema_name="public")
            .filter(schema_name=options["schema"])
            .first()
        )
        if tenant is None:
            raise self.fail(f"No tenant with schema {options['schema']!r}.")
        with schema_context(tenant.schema_name):
            try:
                result = directory_sync()
            except Bitrix24Error as exc:
                raise self.fail(f"Bitrix24 sync failed: {exc.display()}") from exc
        return {"schema": tenant.schema_name, **result.as_dict()}
