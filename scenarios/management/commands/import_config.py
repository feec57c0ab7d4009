from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import CommandParser
from django_tenants.utils import schema_context

from scenarios.document import config_import
from scenarios.validation import ConfigError
from tenants.management.jsoncommand import JsonCommand
from tenants.models import Tenant


class Command(JsonCommand):
    help = (
        "Replaces a tenant's whole configuration (scenarios, office hours, routing) with a JSON "
        "file (or '-' for stdin). A file without 'routing' leaves routing as it is. Invalid "
        "input changes nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--schema", required=True)
        parser.add_argument("file", help="Path of the JSON configuration, '-' for stdin.")

    def run(self, **options: Any) -> dict[str, Any]:
        schema = options["schema"]
        if schema == "public" or not Tenant.objects.filter(schema_name=schema).exists():
            raise self.fail(f"No tenant with schema {schema!r}.")
        try:
            raw = sys.stdin.read() if options["file"] == "-" else Path(options["file"]).read_text()
        except OSError as exc:
            raise self.fail(f"Cannot read {options['file']}: {exc.strerror}.") from exc
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise self.fail(f"Not valid JSON: {exc}.") from exc
        with schema_context(schema):
            try:
                counts = config_import(data=data)
            except ConfigError as exc:
                raise self.fail(
                    f"Invalid configuration ({len(exc.errors)} problems): " + "; ".join(exc.errors)
                ) from exc
        return {"schema": schema, **counts}
