from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser
from django_tenants.utils import schema_context

from calls.services import device_register, device_user_problem
from common.phones import InvalidPhoneNumber
from tenants.management.jsoncommand import JsonCommand
from tenants.models import Tenant


class Command(JsonCommand):
    help = "Registers a bridge device and prints its token (shown only here)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--schema", required=True)
        parser.add_argument("--name", required=True)
        parser.add_argument("--phone-number", required=True)
        parser.add_argument("--bitrix24-user-id", required=True, type=int)

    def run(self, **options: Any) -> dict[str, Any]:
        tenant = (
            Tenant.objects.exclude(schema_name="public")
            .filter(schema_name=options["schema"])
            .first()
        )
        if tenant is None:
            raise self.fail(f"No tenant with schema {options['schema']!r}.")
        if not options["name"].strip():
            raise self.fail("The device name must not be empty.")
        if options["bitrix24_user_id"] < 1:
            raise self.fail("--bitrix24-user-id must be a positive Bitrix24 user ID.")
        with schema_context(tenant.schema_name):
            problem = device_user_problem(user_id=options["bitrix24_user_id"])
            if problem:
                raise self.fail(problem)
            try:
                device, token = device_register(
                    name=options["name"].strip(),
                    phone_number=options["phone_number"],
                    bitrix24_user_id=options["bitrix24_user_id"],
                    country=tenant.default_country,
                )
            except InvalidPhoneNumber as exc:
                raise self.fail(str(exc)) from exc
        return {"device_id": device.pk, "token": token}
