from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import CommandParser

from tenants.management.jsoncommand import JsonCommand
from tenants.management.secret_input import SecretOption, secret_options_read
from tenants.services import ProvisioningError, TenantSpec, tenant_provision

SECRETS = [
    SecretOption("--bitrix24-webhook", "SIMTRIX_BITRIX24_WEBHOOK", "Bitrix24 webhook URL"),
    SecretOption(
        "--bitrix24-events-token", "SIMTRIX_BITRIX24_EVENTS_TOKEN", "Bitrix24 events token"
    ),
]


class Command(JsonCommand):
    help = "Creates a tenant: schema, domain, Bitrix24 connection and default scenarios."
    stealth_options = ("stdin",)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--schema", required=True)
        parser.add_argument("--name", required=True)
        parser.add_argument("--domain", required=True)
        for secret in SECRETS:
            parser.add_argument(secret.option, default=None, help=secret.help)
        parser.add_argument("--timezone", default="UTC")
        parser.add_argument("--country", default="PL")
        parser.add_argument(
            "--language",
            default="en",
            choices=["en", "pl"],
            help="What SIMtrix writes into Bitrix24, and the default templates, in this language.",
        )

    def run(self, **options: Any) -> dict[str, Any]:
        secrets = secret_options_read(options, SECRETS, stdin=options.get("stdin") or sys.stdin)
        spec = TenantSpec(
            schema=options["schema"],
            name=options["name"],
            domain=options["domain"].lower(),
            bitrix24_webhook=secrets["bitrix24_webhook"],
            bitrix24_events_token=secrets["bitrix24_events_token"],
            timezone=options["timezone"],
            country=options["country"].upper(),
            language=options["language"],
        )
        try:
            tenant = tenant_provision(spec)
        except ProvisioningError as exc:
            raise self.fail(str(exc)) from exc
        return {"schema": tenant.schema_name, "domain": spec.domain}
