"""``manage.py bitrix24_sandbox``: run the local Bitrix24 sandbox portal in the foreground.

All logic lives in ``bitrix24_sandbox`` (stand-alone, no Django); this is only the CLI wrapper.
Prints one JSON line ``{"url", "webhook_url", "ca_cert_path"}`` and serves until SIGINT/SIGTERM.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from bitrix24_sandbox.cli import add_arguments, serve


class Command(BaseCommand):
    help = "Run a local HTTPS fake of the Bitrix24 REST API (sandbox portal)."

    def add_arguments(self, parser: CommandParser) -> None:
        add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        no_limit = options["no_rate_limit"]
        serve(
            host=options["host"],
            port=options["port"],
            seed=not options["no_seed"],
            state_file=options["state_file"],
            drain_per_second=None if no_limit else options["drain_per_second"],
            bucket_size=None if no_limit else options["bucket_size"],
            out=self.stdout,  # type: ignore[arg-type]  # OutputWrapper writes and flushes
        )
