from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from tenants.management.jsoncommand import JsonCommand
from tenants.services import ProvisioningError, TenantSpec, tenant_provision


class Command(JsonCommand):
    help = "Creates a tenant: schema, domain, Bitrix24 connection and default scenarios."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--schema", required=True)
        parser.add_argument("--name", required=True)
        parser.add_argument("--domain", required=True)
        parser.add_argument("--bitrix24-webhook", default="")
        parser.add_argument("--timezone", default="UTC")
        parser.add_argument("--country", default="PL")

    def run(self, **options: Any) -> dict[str, Any]:
        spec = TenantSpec(
            schema=options["schema"],
            name=options["name"],
            domain=options["domain"].lower(),
            bitrix24_webhook=options["bitrix24_webhook"],
            timezone=options["timezone"],
            country=options["country"].upper(),
        )
        try:
            tenant = tenant_provision(spec)
        except ProvisioningError as exc:
            raise self.fail(str(exc)) from exc
        return {"schema": tenant.schema_name, "domain": spec.domain}
