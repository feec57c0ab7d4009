from __future__ import annotations

from typing import Any

from django.db import transaction
from django_tenants.utils import get_public_schema_name, schema_context

from common.crypto import SecretUndecryptable, secrets_rotate_schema
from tenants.management.jsoncommand import JsonCommand
from tenants.models import Tenant


class Command(JsonCommand):
    help = (
        "Re-encrypts every stored secret, in every schema, with the first key of "
        "SIMTRIX_ENCRYPTION_KEY (run after putting a new key first; then drop the old one)."
    )

    def run(self, **options: Any) -> dict[str, Any]:
        # Inactive tenants too: their rows still hold secrets encrypted with the old key.
        schemas = [get_public_schema_name()]
        schemas += Tenant.objects.exclude(schema_name=get_public_schema_name()).values_list(
            "schema_name", flat=True
        )
        rows = secrets = reencrypted = 0
        try:
            # All or nothing: a value no key opens leaves every schema as it was.
            with transaction.atomic():
                for schema in schemas:
                    with schema_context(schema):
                        done = secrets_rotate_schema(schema=schema)
                    rows += done.rows
                    secrets += done.secrets
                    reencrypted += done.reencrypted
        except SecretUndecryptable as exc:
            raise self.fail(f"{exc} Nothing was changed.") from exc
        return {
            "schemas": len(schemas),
            "rows": rows,
            "secrets": secrets,
            "reencrypted": reencrypted,
        }
