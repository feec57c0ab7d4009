from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser
from django_tenants.utils import schema_context

from scenarios.document import config_export
from tenants.management.jsoncommand import JsonCommand
from tenants.models import Tenant


class Command(JsonCommand):
    help = (
        "Prints a tenant's whole configuration (scenarios, office hours, routing) as JSON "
        "(see docs/configuration.md)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--schema", required=True)

    def run(self, **options: Any) -> dict[str, Any]:
        schema = options["schema"]
        if schema == "public" or not Tenant.objects.filter(schema_name=schema).exists():
            raise self.fail(f"No tenant with schema {schema!r}.")
        with schema_context(schema):
            return config_export()
