"""Secrets for operator commands without the command line (`ps` and shell history show it).

An option's value `-` reads the secret from stdin (without echo at a terminal); without the
option, an environment variable is used. A value on the command line still works (the
operations contract fixes the options) but the README recommends the other two.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from typing import TextIO

from django.core.management.base import CommandError

STDIN = "-"


@dataclass(frozen=True)
class SecretOption:
    option: str  # "--bitrix24-webhook"
    variable: str  # "SIMTRIX_BITRIX24_WEBHOOK"
    what: str  # "Bitrix24 webhook URL", for prompts and errors

    @property
    def dest(self) -> str:
        return self.option.lstrip("-").replace("-", "_")

    @property
    def help(self) -> str:
        return (
            f"The {self.what}; `-` reads it from stdin. Without the option, ${self.variable} "
            "is used (either keeps it out of `ps` and the shell's history)."
        )


def secret_options_read(
    options: dict[str, object], secret_options: list[SecretOption], *, stdin: TextIO
) -> dict[str, str]:
    """Each secret by its option's dest: from the option, stdin or the environment ("" if none)."""
    from_stdin = [s for s in secret_options if options.get(s.dest) == STDIN]
    if len(from_stdin) > 1:
        raise CommandError(
            f"Only one secret can be read from stdin: pass the {from_stdin[1].what} in "
            f"${from_stdin[1].variable} instead."
        )
    return {s.dest: _secret_read(s, options.get(s.dest), stdin) for s in secret_options}


def _secret_read(secret: SecretOption, value: object, stdin: TextIO) -> str:
    if value is None:
        return os.environ.get(secret.variable, "").strip()
    if value != STDIN:
        return str(value).strip()
    # Typed or pasted at a terminal: not echoed.
    line = getpass.getpass(f"{secret.what}: ") if stdin.isatty() else stdin.readline()
    if not line.strip():
        raise CommandError(f"{secret.option} -: expected the {secret.what} on stdin, got nothing.")
    return line.strip()
