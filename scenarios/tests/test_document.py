"""The configuration as JSON: export, import (all or nothing), validation, the commands."""

from __future__ import annotations

import copy
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from conftest import REPO, subprocess_database_url
from scenarios.document import (
    DEFAULT_CONFIGURATION,
    config_errors,
    scenario_config_export,
    scenario_config_import,
)
from scenarios.models import Holiday, OfficeHours, Scenario, ScenarioAction
from scenarios.validation import ConfigError, template_errors, template_render
from tenants.models import Tenant


def _snapshot() -> dict[str, Any]:
    data = scenario_config_export()
    data.pop("exported_at")
    return data


def test_export_then_import_gives_back_the_same_configuration(alpha: Tenant) -> None:
    scenario = Scenario.objects.get(trigger="incoming_missed")
    ScenarioAction.objects.create(
        scenario=scenario, position=50, action_type="trigger_automation", timing="after_previous",
        delay_minutes=2, hours="closed", automation_code="missed_call", automation_target="deal",
    )  # fmt: skip
    Holiday.objects.create(date="2026-12-25", name="Christmas", every_year=True)
    before = _snapshot()
    counts = scenario_config_import(data=json.loads(json.dumps(scenario_config_export())))
    assert counts == {"scenarios": 6, "actions": 13, "office_hours": 5, "holidays": 1}
    assert _snapshot() == before
    exported = next(s for s in before["scenarios"] if s["trigger"] == "incoming_missed")
    # Only what differs from the defaults is written, so the file reads like the form.
    assert exported["actions"][-1] == {
        "action_type": "trigger_automation", "timing": "after_previous", "delay_minutes": 2,
        "hours": "closed", "automation_code": "missed_call", "automation_target": "deal",
    }  # fmt: skip


def test_an_invalid_import_changes_nothing_and_says_everything_that_is_wrong(
    alpha: Tenant,
) -> None:
    before = _snapshot()
    bad = copy.deepcopy(DEFAULT_CONFIGURATION)
    bad["office_hours"]["weekly"].append(
        {"weekday": "monday", "opens_at": "17:00", "closes_at": "19:30"}
    )
    bad["scenarios"][1]["actions"].append({"action_type": "notify", "text_template": "{who}"})
    bad["scenarios"][2]["trigger"] = "incoming_answered"
    bad["scenarios"][5]["actions"][0]["colour"] = "red"
    with pytest.raises(ConfigError) as raised:
        scenario_config_import(data=bad)
    assert raised.value.errors == [
        "office_hours.weekly: monday: opening periods overlap",
        "scenarios[1].actions[3].text_template: unknown placeholder {who}; use one of {caller}, "
        "{number}, {time}, {outcome}, {direction}, {call_kind}, {duration}, {link}, {agent}, "
        "{line}",
        "scenarios[1].actions[3].recipients: choose at least one recipient (or list user ids)",
        "scenarios[2].trigger: 'incoming_answered' appears twice (one scenario per outcome)",
        "scenarios[5].actions[0]: unknown keys ['colour']",
    ]
    assert _snapshot() == before


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ([], "the configuration must be a JSON object"),
        ({"format": "simtrix-configuration", "version": 2}, "version: must be 1"),
        (
            {**DEFAULT_CONFIGURATION, "office_hours": {"weekly": [{"weekday": "funday",
             "opens_at": "9", "closes_at": "17:00"}]}},
            "office_hours.weekly[0].weekday: must be one of",
        ),
        (
            {**DEFAULT_CONFIGURATION, "office_hours": {"holidays": [{"date": "2026-02-30"}]}},
            "office_hours.holidays[0].date: must be YYYY-MM-DD",
        ),
        (
            {**DEFAULT_CONFIGURATION, "scenarios": [{"trigger": "incoming_missed", "name": "x",
             "actions": [{"action_type": "create_lead", "title_template": "t",
                          "responsible": "crm"}]}]},
            "leads and deals are created only by the unknown-number scenario",
        ),
        (
            {**DEFAULT_CONFIGURATION, "scenarios": [{"trigger": "unknown_number", "name": "x",
             "actions": [{"action_type": "callback_task", "title_template": "t",
                          "responsible": "fixed", "users": []}]}]},
            "a fixed responsible needs exactly one user id",
        ),
        (
            {**DEFAULT_CONFIGURATION, "scenarios": [{"trigger": "incoming_missed", "name": "x",
             "actions": [{"action_type": "log_call", "timing": "delay", "delay_minutes": 5}]}]},
            "the call is logged when it ends",
        ),
    ],
)  # fmt: skip
def test_validation_messages_point_at_the_problem(data: Any, error: str) -> None:
    assert any(error in message for message in config_errors(data)), config_errors(data)


def test_templates_fill_known_placeholders_and_never_evaluate_anything() -> None:
    values = {"caller": "Anna", "number": "+48600111222"}
    assert template_render("Call {caller} at {number} {{x}}", values) == (
        "Call Anna at +48600111222 {x}"
    )
    assert template_errors("{caller.__class__}")
    assert template_errors("{caller!r}")
    assert template_errors("{") == [
        "malformed template (Single '{' encountered in format string); write a literal brace "
        "as {{ or }}"
    ]


def test_export_command_prints_the_configuration(alpha: Tenant) -> None:
    out = io.StringIO()
    call_command("export_config", "--schema", "alpha", stdout=out)
    data = json.loads(out.getvalue())
    assert data["format"] == "simtrix-configuration"
    assert {s["trigger"] for s in data["scenarios"]} == set(Scenario.objects.values_list(
        "trigger", flat=True))  # fmt: skip


def test_import_command_replaces_the_configuration(alpha: Tenant, tmp_path: Path) -> None:
    config = copy.deepcopy(DEFAULT_CONFIGURATION)
    config["scenarios"] = config["scenarios"][:2]
    config["office_hours"] = {"weekly": [], "holidays": [{"date": "2026-12-24", "name": "Eve"}]}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    out = io.StringIO()
    call_command("import_config", "--schema", "alpha", str(path), stdout=out)
    assert json.loads(out.getvalue()) == {
        "schema": "alpha", "scenarios": 2, "actions": 6, "office_hours": 0, "holidays": 1,
    }  # fmt: skip
    assert Scenario.objects.count() == 2
    assert OfficeHours.objects.count() == 0
    assert list(Holiday.objects.values_list("name", flat=True)) == ["Eve"]


def test_import_command_refuses_an_invalid_file_and_changes_nothing(
    alpha: Tenant, tmp_path: Path
) -> None:
    before = _snapshot()
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**DEFAULT_CONFIGURATION, "scenarios": "all of them"}))
    with pytest.raises(CommandError, match=r"Invalid configuration .*scenarios: must be a list"):
        call_command("import_config", "--schema", "alpha", str(path))
    path.write_text("{not json")
    with pytest.raises(CommandError, match="Not valid JSON"):
        call_command("import_config", "--schema", "alpha", str(path))
    with pytest.raises(CommandError, match="No tenant with schema 'nobody'"):
        call_command("import_config", "--schema", "nobody", str(path))
    assert _snapshot() == before


def test_the_command_line_contract_exit_1_with_one_line_on_stderr(
    tenants: dict, tmp_path: Path, django_db_blocker: Any
) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"format": "simtrix-configuration", "version": 1, "scenarios": [
        {"trigger": "nope", "name": "x"}]}))  # fmt: skip
    with django_db_blocker.unblock():
        env = {"DATABASE_URL": subprocess_database_url()}
    done = subprocess.run(
        [sys.executable, "manage.py", "import_config", "--schema", "alpha", str(path)],
        cwd=REPO, env={**__import__("os").environ, **env}, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert "scenarios[0].trigger: must be one of" in done.stderr
