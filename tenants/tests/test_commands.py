from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.core.management.base import CommandError
from django_tenants.utils import schema_context, schema_exists

from calls.models import Device
from calls.selectors import device_for_token
from calls.tokens import token_hash
from crm.models import Bitrix24Connection
from tenants.models import Domain, Tenant

REPO = Path(__file__).resolve().parents[2]
WEBHOOK = "https://portal.example.com/rest/1/s3cr3tvalue/"


def _run(command: str, *args: str) -> dict:
    out = io.StringIO()
    call_command(command, *args, stdout=out)
    return json.loads(out.getvalue())


def _counts() -> tuple[int, int]:
    with schema_context("public"):
        return Tenant.objects.count(), Domain.objects.count()


def test_provision_tenant_creates_schema_domain_connection_and_support_group(
    tenants: dict, db: None
) -> None:
    result = _run(
        "provision_tenant", "--schema", "gamma", "--name", "Gamma", "--domain", "gamma.localhost",
        "--bitrix24-webhook", WEBHOOK, "--timezone", "Europe/Berlin", "--country", "de",
    )  # fmt: skip
    assert result == {"schema": "gamma", "domain": "gamma.localhost"}
    tenant = Tenant.objects.get(schema_name="gamma")
    assert (tenant.name, tenant.timezone, tenant.default_country) == (
        "Gamma",
        "Europe/Berlin",
        "DE",
    )
    assert schema_exists("gamma")
    assert tenant.get_primary_domain().domain == "gamma.localhost"
    with schema_context("gamma"):
        assert Bitrix24Connection.objects.get().webhook_url == WEBHOOK
        support = Group.objects.get(name="Support")
        codenames = set(support.permissions.values_list("codename", flat=True))
        assert codenames
        assert all(code.startswith("view_") for code in codenames)


def test_a_polish_tenant_gets_its_default_scenarios_and_bitrix24_texts_in_polish(
    tenants: dict, db: None
) -> None:
    from django.utils import translation

    from scenarios.models import Scenario, ScenarioAction
    from tenants.context import tenant_language, tenant_language_active

    _run(
        "provision_tenant", "--schema", "epsilon", "--name", "Epsilon", "--domain",
        "epsilon.localhost", "--language", "pl", "--timezone", "Europe/Warsaw",
    )  # fmt: skip
    assert Tenant.objects.get(schema_name="epsilon").language == "pl"
    with schema_context("epsilon"):
        assert tenant_language() == "pl"
        missed = Scenario.objects.get(trigger="incoming_missed")
        assert missed.name == "Połączenie przychodzące nieodebrane"
        notify = ScenarioAction.objects.get(scenario=missed, action_type="notify")
        assert notify.text_template == (
            "Nieodebrane połączenie od {caller} ({number}) o {time}. {link}"
        )
        task = ScenarioAction.objects.get(scenario=missed, action_type="callback_task")
        assert task.title_template == "Oddzwoń do {caller} ({number})"
        # What the worker writes into Bitrix24 for this tenant, whatever its own language.
        with translation.override("en"), tenant_language_active():
            from crm.services import _activity_subject

            subject = _activity_subject(direction="incoming", outcome="missed", e164="+48600")
            assert subject == "Nieodebrane połączenie przychodzące od +48600"
    with schema_context("alpha"):
        assert tenant_language() == "en"
        assert Scenario.objects.get(trigger="incoming_missed").name == "Incoming call missed"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--schema", "alpha", "--domain", "new.localhost"], "Schema 'alpha' already exists"),
        (["--schema", "delta", "--domain", "beta.localhost"], "Domain 'beta.localhost' is already"),
        (["--schema", "Bad-Name", "--domain", "d.localhost"], "Invalid schema name"),
        (["--schema", "public", "--domain", "d.localhost"], "Invalid schema name"),
        (["--schema", "pg_x", "--domain", "d.localhost"], "Invalid schema name"),
        (["--schema", "delta", "--domain", "not a host"], "Invalid domain"),
        (
            ["--schema", "delta", "--domain", "d.localhost", "--timezone", "Mars/Base"],
            "Unknown timezone",
        ),
        (["--schema", "delta", "--domain", "d.localhost", "--country", "XX"], "Unknown country"),
        (
            [
                "--schema",
                "delta",
                "--domain",
                "d.localhost",
                "--bitrix24-webhook",
                "http://portal.example.com/rest/1/abc/",
            ],
            "Invalid Bitrix24 webhook URL",
        ),
    ],
)
def test_provision_tenant_refuses_bad_input_and_changes_nothing(
    tenants: dict, db: None, args: list[str], message: str
) -> None:
    before = _counts()
    with pytest.raises(CommandError, match=message):
        _run("provision_tenant", "--name", "Delta", *args)
    assert _counts() == before
    assert not schema_exists("delta")


def test_provision_failure_exits_1_with_one_line_on_stderr() -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "simtrix.settings"}
    result = subprocess.run(
        [sys.executable, "manage.py", "provision_tenant", "--schema", "x", "--name", "X",
         "--domain", "x.localhost", "--timezone", "Nowhere/City"],
        cwd=REPO, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Unknown timezone 'Nowhere/City'" in result.stderr


def test_missing_argument_exits_1() -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "simtrix.settings"}
    result = subprocess.run(
        [sys.executable, "manage.py", "issue_device_token", "--schema", "alpha"],
        cwd=REPO, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "--name" in result.stderr


def test_issue_device_token_prints_token_once_and_stores_only_its_hash(
    tenants: dict, db: None
) -> None:
    result = _run(
        "issue_device_token", "--schema", "alpha", "--name", "Reception", "--phone-number",
        "600 111 222", "--bitrix24-user-id", "5",
    )  # fmt: skip
    token = result["token"]
    assert token.startswith("stx_")
    assert len(token) > 40
    with schema_context("alpha"):
        device = Device.objects.get(pk=result["device_id"])
        assert device.phone_number == "+48600111222"
        assert device.bitrix24_user_id == 5
        assert device.token_hash == token_hash(token)
        stored = [
            str(value) for value in Device.objects.filter(pk=device.pk).values().get().values()
        ]
        assert token not in stored
        assert device_for_token(token=token) == device
    with schema_context("beta"):
        assert device_for_token(token=token) is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--schema", "nope", "--phone-number", "+48600111222", "--bitrix24-user-id", "5"],
            "No tenant with schema 'nope'",
        ),
        (
            ["--schema", "public", "--phone-number", "+48600111222", "--bitrix24-user-id", "5"],
            "No tenant with schema 'public'",
        ),
        (
            ["--schema", "alpha", "--phone-number", "call me", "--bitrix24-user-id", "5"],
            "not a phone number",
        ),
        (
            ["--schema", "alpha", "--phone-number", "+48600111222", "--bitrix24-user-id", "0"],
            "positive",
        ),
    ],
)
def test_issue_device_token_refuses_bad_input(
    tenants: dict, db: None, args: list[str], message: str
) -> None:
    with pytest.raises(CommandError, match=message):
        _run("issue_device_token", "--name", "Phone", *args)
    with schema_context("alpha"):
        assert not Device.objects.exists()
