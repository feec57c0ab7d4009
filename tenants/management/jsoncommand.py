"""Base for operator commands: one JSON object on stdout, or exit 1 with a one-line reason."""

from __future__ import annotations

import json
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser


class _ExitOneParser(CommandParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse exits 2 on bad usage; the operations contract says every failure exits 1.
        sys.stderr.write(f"error: {message}\n")
        sys.exit(1)


class JsonCommand(BaseCommand):
    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.__class__ = _ExitOneParser
        return parser

    def run(self, **options: Any) -> dict[str, Any]:
        raise NotImplementedError

    def handle(self, *args: Any, **options: Any) -> None:
        result = self.run(**options)
        self.stdout.write(json.dumps(result))

    def fail(self, message: str) -> CommandError:
        return CommandError(message.replace("\n", " "))
