from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SETUP = "import django; django.setup(); print('started')"


def settings_start(code: str = SETUP, **overrides: str) -> subprocess.CompletedProcess[str]:
    """Runs `code` after django.setup() in a fresh process, with `overrides` in its environment
    ("" unsets a variable)."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "simtrix.settings", **overrides}
    for name, value in overrides.items():
        if value == "":
            env.pop(name)
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
        check=False,
    )  # fmt: skip


def test_refuses_to_start_without_secret_key_when_debug_is_off() -> None:
    result = settings_start(DJANGO_SECRET_KEY="", DJANGO_DEBUG="0")
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY is not set" in result.stderr
    assert "started" not in result.stdout


def test_starts_without_secret_key_in_debug() -> None:
    result = settings_start(DJANGO_SECRET_KEY="", DJANGO_DEBUG="1")
    assert result.returncode == 0, result.stderr
    assert "started" in result.stdout


def test_starts_with_secret_key_when_debug_is_off() -> None:
    result = settings_start(DJANGO_SECRET_KEY="a-real-secret", DJANGO_DEBUG="0")
    assert result.returncode == 0, result.stderr


def test_refuses_to_start_without_database_url() -> None:
    result = settings_start(DJANGO_SECRET_KEY="a-real-secret", DATABASE_URL="")
    assert result.returncode != 0
    assert "DATABASE_URL is not set" in result.stderr
