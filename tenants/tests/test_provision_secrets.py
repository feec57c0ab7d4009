"""Secrets off the command line: provision_tenant and demo_setup read them from stdin or the
environment; the encryption key is required in production and checked at start-up."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django_tenants.utils import schema_context, schema_exists

from conftest import subprocess_database_url
from crm.models import Bitrix24Connection
from tenants.models import Tenant
from tenants.tests.test_settings import settings_start

REPO = Path(__file__).resolve().parents[2]
EVENTS_TOKEN = "0f3c9a7d2b1e4c5f8a6d9e0b1c2d3e4f"
BASE = ["--name", "Gamma", "--domain", "gamma.localhost"]


def _provision(*args: str, stdin: str | None = None) -> dict:
    out = io.StringIO()
    extra = {"stdin": io.StringIO(stdin)} if stdin is not None else {}
    call_command("provision_tenant", "--schema", "gamma", *BASE, *args, stdout=out, **extra)
    return json.loads(out.getvalue())


@pytest.fixture
def webhook(sandbox_portal: Any) -> str:
    # A reachable portal: provisioning syncs the directory from it at once.
    sandbox_portal.reset()
    return sandbox_portal.webhook_url(1)


def _gamma_connection() -> Bitrix24Connection:
    with schema_context("gamma"):
        return Bitrix24Connection.objects.get()


def test_the_webhook_from_stdin(tenants: dict, db: None, webhook: str) -> None:
    assert _provision("--bitrix24-webhook", "-", stdin=f"{webhook}\n") == {
        "schema": "gamma",
        "domain": "gamma.localhost",
    }
    assert _gamma_connection().webhook_url == webhook


def test_events_token_from_stdin_beside_a_webhook_from_the_environment(
    tenants: dict, db: None, webhook: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIMTRIX_BITRIX24_WEBHOOK", webhook)
    _provision("--bitrix24-events-token", "-", stdin=f"{EVENTS_TOKEN}\n")
    conn = _gamma_connection()
    assert (conn.webhook_url, conn.events_token) == (webhook, EVENTS_TOKEN)


def test_secrets_from_the_environment_when_the_options_are_absent(
    tenants: dict, db: None, webhook: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIMTRIX_BITRIX24_WEBHOOK", webhook)
    monkeypatch.setenv("SIMTRIX_BITRIX24_EVENTS_TOKEN", EVENTS_TOKEN)
    _provision()
    conn = _gamma_connection()
    assert (conn.webhook_url, conn.events_token) == (webhook, EVENTS_TOKEN)


def test_an_option_on_the_command_line_still_works_and_wins_over_the_environment(
    tenants: dict, db: None, webhook: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIMTRIX_BITRIX24_WEBHOOK", "https://other.example.com/rest/2/x/")
    _provision("--bitrix24-webhook", webhook, "--bitrix24-events-token", EVENTS_TOKEN)
    conn = _gamma_connection()
    assert (conn.webhook_url, conn.events_token) == (webhook, EVENTS_TOKEN)


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["--bitrix24-webhook", "-"], "", "expected the Bitrix24 webhook URL on stdin"),
        (["--bitrix24-webhook", "-"], "\n", "expected the Bitrix24 webhook URL on stdin"),
        (
            ["--bitrix24-webhook", "-", "--bitrix24-events-token", "-"],
            f"https://portal.example.com/rest/1/x/\n{EVENTS_TOKEN}\n",
            r"Only one secret can be read from stdin.*\$SIMTRIX_BITRIX24_EVENTS_TOKEN",
        ),
        (
            ["--bitrix24-events-token", "-"],
            "has spaces and <tags>\n",
            "Invalid Bitrix24 events token",
        ),
        (["--bitrix24-events-token", "short"], None, "Invalid Bitrix24 events token"),
    ],
)
def test_bad_secret_input_is_refused_and_changes_nothing(
    tenants: dict, db: None, args: list[str], stdin: str | None, message: str
) -> None:
    before = Tenant.objects.count()
    with pytest.raises(CommandError, match=message) as refused:
        _provision(*args, stdin=stdin)
    assert "<tags>" not in str(refused.value)  # what was typed is never echoed
    assert Tenant.objects.count() == before
    assert not schema_exists("gamma")


def test_provision_reads_stdin_in_a_real_process_and_never_echoes_the_secret(
    tenants: dict,
) -> None:
    # Fails on the webhook's form after reading it (so nothing is committed by this process).
    secret = "plainhttp5ecret"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "simtrix.settings"}
    env["DATABASE_URL"] = subprocess_database_url()
    result = subprocess.run(
        [sys.executable, "manage.py", "provision_tenant", "--schema", "delta", "--name", "D",
         "--domain", "delta.localhost", "--bitrix24-webhook", "-"],
        input=f"http://portal.example.com/rest/1/{secret}/\n", cwd=REPO, env=env,
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "Invalid Bitrix24 webhook URL 'http://portal.example.com/rest/1/****/'" in (
        result.stderr
    )
    assert secret not in result.stderr + result.stdout


def test_demo_setup_takes_the_webhook_from_the_environment(
    tenants: dict, db: None, webhook: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SIMTRIX_BITRIX24_WEBHOOK", webhook)
    out = io.StringIO()
    call_command("demo_setup", "--state-file", str(tmp_path / "demo.json"), stdout=out)
    assert json.loads(out.getvalue())["schema"] == "demo"
    with schema_context("demo"):
        assert Bitrix24Connection.objects.get().webhook_url == webhook
        # What the demo shows beyond the defaults: a routing rule to try, missed calls texted.
        from scenarios.models import RoutingRule, ScenarioAction

        rule = RoutingRule.objects.get(name="Companies to Marta")
        assert list(rule.conditions.values_list("source", "values")) == [
            ("entity_type", ["company"])
        ]
        assert ScenarioAction.objects.filter(
            scenario__trigger="incoming_missed", action_type="send_sms"
        ).exists()
    # Run again (a second `make run`): nothing doubled.
    call_command("demo_setup", "--state-file", str(tmp_path / "demo.json"), stdout=out)
    with schema_context("demo"):
        assert RoutingRule.objects.filter(name="Companies to Marta").count() == 1
        assert ScenarioAction.objects.filter(action_type="send_sms").count() == 1
    monkeypatch.delenv("SIMTRIX_BITRIX24_WEBHOOK")
    with pytest.raises(CommandError, match="The demo needs a webhook"):
        call_command("demo_setup", "--state-file", str(tmp_path / "demo.json"), stdout=out)


# --- The key at start-up ----------------------------------------------------------------------

SHOW_KEYS = (
    "import django; django.setup(); from django.conf import settings; "
    "print(','.join(settings.SIMTRIX_ENCRYPTION_KEYS))"
)


def _start(**overrides: str) -> subprocess.CompletedProcess[str]:
    return settings_start(SHOW_KEYS, **overrides)


def test_refuses_to_start_without_an_encryption_key_when_debug_is_off() -> None:
    result = _start(SIMTRIX_ENCRYPTION_KEY="", DJANGO_DEBUG="0", DJANGO_SECRET_KEY="a-real-one")
    assert result.returncode != 0
    assert "SIMTRIX_ENCRYPTION_KEY is not set" in result.stderr
    assert result.stdout == ""


def test_derives_a_key_from_the_secret_key_in_development() -> None:
    result = _start(SIMTRIX_ENCRYPTION_KEY="", DJANGO_DEBUG="1", DJANGO_SECRET_KEY="dev-secret")
    assert result.returncode == 0, result.stderr
    derived = base64.urlsafe_b64encode(hashlib.sha256(b"simtrix-encryption:dev-secret").digest())
    assert result.stdout.strip() == derived.decode()


def test_takes_several_keys_and_refuses_a_malformed_one_without_printing_it() -> None:
    first, second = (base64.urlsafe_b64encode(bytes([n]) * 32).decode() for n in (1, 2))
    result = _start(SIMTRIX_ENCRYPTION_KEY=f"{first}, {second}", DJANGO_DEBUG="0")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{first},{second}"

    result = _start(SIMTRIX_ENCRYPTION_KEY=f"{first},not-a-fernet-key", DJANGO_DEBUG="0")
    assert result.returncode != 0
    assert "key 2 is not a Fernet key" in result.stderr
    assert "not-a-fernet-key" not in result.stderr
