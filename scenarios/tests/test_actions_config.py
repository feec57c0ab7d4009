"""Issue 18's actions, conditions, "before a date" and per-line scenarios as configuration: the
document (refused whole when it names what Bitrix24 or the tenant does not have), the admin
forms (the webhook's secret never shown again), export and import."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from pytest_django import Settings

from calls.models import Device
from calls.services import device_register
from common.crypto import secret_is_encrypted
from scenarios.document import (
    DEFAULT_CONFIGURATION,
    config_errors,
    config_export,
    config_import,
    scenario_config_export,
)
from scenarios.models import Scenario, ScenarioAction, ScenarioSettings
from scenarios.tests.test_admin import _existing, _inline_post
from scenarios.validation import ConfigError
from tenants.models import Tenant

MISSED = 1  # DEFAULT_CONFIGURATION["scenarios"][MISSED] is the missed call's scenario


def _with_actions(*actions: dict[str, Any], **scenario: Any) -> dict[str, Any]:
    """The default document, the missed call's scenario given these actions (and settings)."""
    data = copy.deepcopy(DEFAULT_CONFIGURATION)
    data["scenarios"][MISSED]["actions"] += list(actions)
    data["scenarios"][MISSED].update(scenario)
    return data


def _snapshot() -> dict[str, Any]:
    data = config_export()
    data.pop("exported_at")
    return data


@pytest.fixture
def synced(alpha_portal: Any, alpha: Tenant) -> Any:
    """alpha connected to the sandbox, its directory (users, stages, CRM fields) synced."""
    return alpha_portal


@pytest.fixture
def admin(alpha: Tenant) -> Client:
    User.objects.create_superuser("alpha-admin", password="pw")
    client = Client(HTTP_HOST="alpha.localhost")
    assert client.login(username="alpha-admin", password="pw")
    return client


# Long enough never to turn up by chance in its ciphertext's base64 (as "s3" did, 1 in ~40).
SECRET = "hook-signing-secret-s3"
WEBHOOK = {"action_type": "webhook", "url": "https://hooks.example.com/calls", "secret": SECRET}


def test_every_new_action_type_imports_and_exports_under_its_documented_names(
    synced: Any,
) -> None:
    actions: list[dict[str, Any]] = [
        {"action_type": "set_status", "target": "entity", "status_id": "IN_PROCESS"},
        {"action_type": "set_status", "target": "deal", "pipeline_id": 1,
         "status_id": "C1:WON"},
        {"action_type": "set_responsible", "target": "deal", "responsible": "fixed",
         "users": [3]},
        {"action_type": "schedule_call", "title_template": "Call {caller} back",
         "deadline_minutes": 60, "responsible": "routed"},
        {"action_type": "update_fields", "target": "deal",
         "fields": {"UF_CRM_SIM_LINE": "{outcome} {number}", "OPPORTUNITY": 100}},
        WEBHOOK,
        {"action_type": "timeline_comment", "text_template": "x", "timing": "before_date",
         "delay_minutes": 1440, "date_field": "CLOSEDATE", "date_of": "deal",
         "conditions": [{"source": "deal", "field": "pipeline", "operator": "equals",
                         "values": ["1"]}]},
    ]  # fmt: skip
    config_import(data=_with_actions(*actions))
    exported = next(s for s in _snapshot()["scenarios"] if s["trigger"] == "incoming_missed")
    written = exported["actions"][3:]
    # As imported, but the webhook's secret: an export never carries it.
    assert written == [*actions[:5], {k: v for k, v in WEBHOOK.items() if k != "secret"},
                       actions[6]]  # fmt: skip
    stored = ScenarioAction.objects.get(action_type="webhook")
    assert stored.secret == SECRET
    with connection.cursor() as cursor:
        cursor.execute("SELECT secret FROM scenarios_scenarioaction WHERE id = %s", [stored.pk])
        raw = cursor.fetchone()[0]
    assert secret_is_encrypted(raw)
    assert SECRET not in raw

    # Imported again as exported: the webhook keeps the secret stored for its URL.
    before = _snapshot()
    config_import(data=json.loads(json.dumps(config_export())))
    assert _snapshot() == before
    assert ScenarioAction.objects.get(action_type="webhook").secret == SECRET


@pytest.mark.parametrize(
    ("action", "error"),
    [
        ({"action_type": "update_fields", "target": "deal", "fields": {"UF_CRM_NOPE": "x"}},
         "actions[3].fields: UF_CRM_NOPE is not a field of deals in Bitrix24"),
        ({"action_type": "update_fields", "target": "entity",
          "fields": {"UF_CRM_SIM_LINE": "x"}},
         "UF_CRM_SIM_LINE is not a field of contacts, companies or leads in Bitrix24"),
        ({"action_type": "set_status", "target": "deal", "pipeline_id": 0,
          "status_id": "C1:WON"},
         "actions[3].status_id: C1:WON is a stage of the pipeline Contracts (1), not of "
         "General (0)"),
        ({"action_type": "set_status", "target": "entity", "status_id": "UC_INBOUND"},
         "UC_INBOUND is not a lead status in Bitrix24"),
        ({"action_type": "set_status", "target": "deal", "status_id": "C9:NEW"},
         "C9:NEW is not a deal stage in Bitrix24"),
        ({"action_type": "notify", "recipients": ["agent"], "text_template": "x",
          "conditions": [{"source": "entity", "field": "UF_CRM_GONE", "operator": "empty"}]},
         "actions[3].conditions: UF_CRM_GONE is not a field of contacts"),
        ({"action_type": "notify", "recipients": ["agent"], "text_template": "x",
          "timing": "before_date", "date_field": "UF_CRM_NO_DATE", "date_of": "deal"},
         "actions[3].date_field: UF_CRM_NO_DATE is not a field of deals"),
        ({**WEBHOOK, "url": "https://127.0.0.1/hook"},
         "127.0.0.1 is a loopback address"),
        ({**WEBHOOK, "url": "https://10.1.2.3/hook"}, "10.1.2.3 is a private address"),
        ({**WEBHOOK, "url": "https://localhost:8000/hook"}, "localhost is this server"),
        ({**WEBHOOK, "url": "http://hooks.example.com/calls"}, "it must start with https://"),
        ({**WEBHOOK, "url": "https://user:pw@hooks.example.com/"},
         "a user name or password (user@host) is not allowed"),
        ({**WEBHOOK, "secret": ""},
         "actions[3].secret: a webhook needs a secret to sign its requests"),
    ],
)  # fmt: skip
def test_a_document_naming_what_is_not_there_is_refused_whole(
    synced: Any, settings: Settings, action: dict[str, Any], error: str
) -> None:
    settings.SIMTRIX_ALLOW_PRIVATE_ADDRESSES = False  # the operator's default
    before = _snapshot()
    with pytest.raises(ConfigError) as raised:
        config_import(data=_with_actions(action))
    assert any(error in message for message in raised.value.errors), raised.value.errors
    assert _snapshot() == before


def test_private_addresses_and_http_are_allowed_only_when_the_operator_and_tenant_say_so(
    synced: Any, settings: Settings
) -> None:
    local = {**WEBHOOK, "url": "http://127.0.0.1:8765/hook"}
    settings.SIMTRIX_ALLOW_PRIVATE_ADDRESSES = True
    with pytest.raises(ConfigError) as raised:
        config_import(data=_with_actions(local))
    assert raised.value.errors == [
        f"scenarios[{MISSED}].actions[3].url: not an address SIMtrix posts to: it must start "
        "with https://"
    ]
    # The tenant allows http (in the same document or its settings): then it is accepted.
    config_import(data={**_with_actions(local), "settings": {"webhooks_allow_http": True}})
    assert ScenarioSettings.objects.get().webhooks_allow_http is True
    assert ScenarioAction.objects.get(action_type="webhook").url == local["url"]
    settings.SIMTRIX_ALLOW_PRIVATE_ADDRESSES = False
    with pytest.raises(ConfigError):
        config_import(data=_with_actions(local))


@pytest.mark.parametrize(
    ("action", "error"),
    [
        ({"action_type": "set_status", "status_id": "NEW"},
         "target: choose what it works on"),
        ({"action_type": "update_fields", "target": "entity", "fields": {"STATUS_ID": "NEW"}},
         "STATUS_ID cannot be set here"),
        ({"action_type": "update_fields", "target": "entity", "fields": {"X": "{nope}"}},
         "fields: X: unknown placeholder {nope}"),
        ({"action_type": "update_fields", "target": "entity", "fields": {}},
         "fields: name at least one field"),
        ({"action_type": "set_responsible", "target": "deal"},
         "responsible: choose how the responsible user is found"),
        ({"action_type": "schedule_call", "responsible": "routed"},
         "title_template: this action needs it"),
        ({"action_type": "notify", "recipients": ["agent"], "text_template": "x",
          "timing": "before_date"}, "date_field: name the date field"),
        ({"action_type": "notify", "recipients": ["agent"], "text_template": "x",
          "conditions": [{"source": "deal", "field": "stage", "operator": "between",
                          "values": ["1"]}]}, "conditions: [0].operator: must be one of"),
        ({"action_type": "notify", "recipients": ["agent"], "text_template": "x",
          "conditions": [{"source": "entity", "operator": "equals", "values": ["1"]}]},
         "conditions: [0].field: name the field"),
        ({"action_type": "log_call", "conditions": [{"source": "entity_type",
                                                       "operator": "not_empty"}]},
         "conditions: the call is always logged"),
    ],
)  # fmt: skip
def test_what_each_new_setting_needs_is_said_without_reading_the_database(
    action: dict[str, Any], error: str
) -> None:
    errors = config_errors(_with_actions(action))
    assert any(error in message for message in errors), errors


def test_a_scenario_limited_to_lines_imports_exports_and_is_checked(alpha: Tenant) -> None:
    ewa, _ = device_register(
        name="Ewa's phone", phone_number="+48500100300", bitrix24_user_id=9, country="PL"
    )
    marta, _ = device_register(
        name="Marta's phone", phone_number="+48500100500", bitrix24_user_id=5, country="PL"
    )
    sales = {
        "trigger": "incoming_missed",
        "name": "Missed on the sales line",
        "devices": ["+48500100500"],
        "actions": [{"action_type": "notify", "recipients": ["agent"], "text_template": "x"}],
    }
    data = copy.deepcopy(DEFAULT_CONFIGURATION)
    data["scenarios"].append(sales)
    config_import(data=data)
    line = Scenario.objects.get(name="Missed on the sales line")
    assert list(line.devices.all()) == [marta]
    exported = [s for s in _snapshot()["scenarios"] if s["trigger"] == "incoming_missed"]
    # The tenant-wide one first, then the line's, named by its number.
    assert [(s["name"], s.get("devices")) for s in exported] == [
        ("Incoming call missed", None),
        ("Missed on the sales line", ["+48500100500"]),
    ]

    for change, error in [
        ({"devices": ["+48500999999"]}, "+48500999999 is not the line of an active device"),
        ({"devices": []}, "'incoming_missed' appears twice (one scenario per outcome)"),
    ]:
        bad = copy.deepcopy(data)
        bad["scenarios"][-1].update(change)
        with pytest.raises(ConfigError) as raised:
            config_import(data=bad)
        assert any(error in message for message in raised.value.errors), raised.value.errors
    twice = copy.deepcopy(data)
    twice["scenarios"].append({**sales, "name": "Another for the same line"})
    with pytest.raises(ConfigError) as raised:
        config_import(data=twice)
    assert raised.value.errors == [
        "scenarios[7].devices: +48500100500 is already in scenarios[6] for this trigger"
    ]
    assert ewa.scenarios.count() == 0


def test_the_admin_keeps_one_scenario_for_every_phone_per_trigger_and_a_phone_in_one(
    admin: Client,
) -> None:
    phone, _ = device_register(
        name="Marta's phone", phone_number="+48500100500", bitrix24_user_id=5, country="PL"
    )
    add = "/admin/scenarios/scenario/add/"
    form = {
        "trigger": "incoming_missed", "name": "Second", "is_active": "on", "description": "",
        "actions-TOTAL_FORMS": "0", "actions-INITIAL_FORMS": "0",
        "actions-MIN_NUM_FORMS": "0", "actions-MAX_NUM_FORMS": "1000",
    }  # fmt: skip
    refused = admin.post(add, form)
    assert refused.status_code == 200
    assert "There is a scenario for every phone for this trigger already" in (
        refused.content.decode()
    )
    assert admin.post(add, {**form, "devices": [str(phone.pk)]}).status_code == 302
    again = admin.post(add, {**form, "name": "Third", "devices": [str(phone.pk)]})
    assert "Marta&#x27;s phone has the scenario Second for this trigger already." in (
        again.content.decode()
    )
    assert list(Scenario.objects.filter(devices=phone).values_list("name", flat=True)) == ["Second"]
    listing = admin.get("/admin/scenarios/scenario/").content.decode()
    assert "every phone" in listing
    assert "Marta&#x27;s phone" in listing


def test_the_webhook_secret_is_never_shown_after_saving_and_empty_keeps_it(
    admin: Client, settings: Settings
) -> None:
    scenario = Scenario.objects.get(trigger="incoming_missed")
    url = f"/admin/scenarios/scenario/{scenario.pk}/change/"
    new = {
        "position": 40, "action_type": "webhook", "is_active": True, "timing": "immediately",
        "delay_minutes": 0, "hours": "always", "users": "", "recipients": [],
        "skip_if_reached": True, "url": "https://hooks.example.com/calls?token=abc",
        "secret": "very-secret-value",
    }  # fmt: skip
    assert admin.post(url, _inline_post(scenario, [*_existing(scenario), new])).status_code == 302
    hook = scenario.actions.get(action_type="webhook")
    assert hook.secret == "very-secret-value"
    page = admin.get(url).content.decode()
    assert "very-secret-value" not in page
    assert "stored (hidden)" in page
    # Saved again with the secret left empty (as the form shows it): kept.
    rows = _existing(scenario)
    for row in rows:
        row["secret"] = ""
    assert admin.post(url, _inline_post(scenario, rows)).status_code == 302
    assert scenario.actions.get(action_type="webhook").secret == "very-secret-value"
    exported = json.loads(admin.get("/admin/scenarios/scenario/export/").content)
    assert "very-secret-value" not in json.dumps(exported)
    # An address SIMtrix will not post to is refused in the form too.
    settings.SIMTRIX_ALLOW_PRIVATE_ADDRESSES = False
    rows = _existing(scenario)
    rows[-1].update(url="https://192.168.1.10/hook", secret="")
    refused = admin.post(url, _inline_post(scenario, rows))
    assert refused.status_code == 200
    assert "192.168.1.10 is a private address" in refused.content.decode()


def test_fields_are_typed_one_per_line_and_checked_against_the_crm(
    admin: Client, synced: Any
) -> None:
    scenario = Scenario.objects.get(trigger="incoming_missed")
    url = f"/admin/scenarios/scenario/{scenario.pk}/change/"
    new = {
        "position": 40, "action_type": "update_fields", "is_active": True,
        "timing": "immediately", "delay_minutes": 0, "hours": "always", "users": "",
        "recipients": [], "skip_if_reached": True, "target": "deal",
        "fields": "UF_CRM_SIM_LINE = {line}\nCOMMENTS = Missed at {time}",
        "conditions": '[{"source": "deal", "field": "pipeline", "operator": "equals", '
                      '"values": ["1"]}]',
    }  # fmt: skip
    response = admin.post(url, _inline_post(scenario, [*_existing(scenario), new]))
    assert response.status_code == 302, response.content.decode()[:2000]
    action = scenario.actions.get(action_type="update_fields")
    assert action.fields == {"UF_CRM_SIM_LINE": "{line}", "COMMENTS": "Missed at {time}"}
    assert action.conditions == [
        {"source": "deal", "field": "pipeline", "operator": "equals", "values": ["1"]}
    ]
    page = admin.get(url).content.decode()
    assert "UF_CRM_SIM_LINE = {line}" in page
    rows = _existing(scenario)
    rows[-1]["fields"] = "UF_CRM_TYPO = x"
    refused = admin.post(url, _inline_post(scenario, rows))
    assert "UF_CRM_TYPO is not a field of deals in Bitrix24" in refused.content.decode()
    assert scenario.actions.get(action_type="update_fields").fields == action.fields


def test_devices_keep_their_scenario_through_an_export_and_import(alpha: Tenant) -> None:
    phone, _ = device_register(
        name="Marta's phone", phone_number="+48500100500", bitrix24_user_id=5, country="PL"
    )
    Scenario.objects.create(trigger="incoming_missed", name="Sales line").devices.add(phone)
    before = scenario_config_export()
    before.pop("exported_at")
    config_import(data=config_export())
    after = scenario_config_export()
    after.pop("exported_at")
    assert after == before
    assert Device.objects.get(pk=phone.pk).scenarios.get().name == "Sales line"


# --- The simulator: which scenario applies, conditions, "before a date" ----------------------


def _simulate(device: Device, *, caller: str = "lookup", number: str = "+48600111222") -> Any:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from scenarios.simulate import simulate

    wednesday = datetime(2026, 11, 18, 10, 0, tzinfo=ZoneInfo("Europe/Warsaw"))
    return simulate(
        direction="incoming", outcome="missed", phone_number=number, at=wednesday,
        duration_seconds=0, device=device, caller=caller,
    )  # fmt: skip


def test_the_simulator_names_the_scenario_that_applies_to_the_phone(alpha: Tenant) -> None:
    ewa, _ = device_register(
        name="Ewa's phone", phone_number="+48500100300", bitrix24_user_id=9, country="PL"
    )
    marta, _ = device_register(
        name="Marta's phone", phone_number="+48500100500", bitrix24_user_id=5, country="PL"
    )
    line = Scenario.objects.create(trigger="incoming_missed", name="Sales line")
    line.devices.add(marta)
    ScenarioAction.objects.create(
        scenario=line, position=10, action_type="notify", recipients=["agent"], text_template="x"
    )
    on_ewa = _simulate(ewa, caller="unknown")
    on_marta = _simulate(marta, caller="unknown")
    assert on_ewa.scenario == "Incoming call missed, the scenario of every phone"
    assert on_marta.scenario == "Sales line, the scenario of this phone"
    # The line's scenario logs nothing: its card is closed instead.
    assert [s.action_type for s in on_marta.steps if s.phase == "after the call"] == [
        "notify",
        "hide_card",
    ]
    assert "callback_task" in [s.action_type for s in on_ewa.steps if s.planned]
    assert "callback_task" not in [s.action_type for s in on_marta.steps]
    line.is_active = False
    line.save()
    # An inactive line's scenario gives way to the tenant-wide one.
    assert _simulate(marta, caller="unknown").scenario == (
        "Incoming call missed, the scenario of every phone"
    )


def test_the_simulator_shows_each_condition_with_its_result_on_the_caller_looked_up_now(
    synced: Any,
) -> None:
    device, _ = device_register(
        name="Ewa's phone", phone_number="+48500100300", bitrix24_user_id=9, country="PL"
    )
    config_import(
        data=_with_actions(
            {"action_type": "timeline_comment", "text_template": "x", "conditions": [
                {"source": "entity", "field": "type", "operator": "equals", "values": ["CLIENT"]},
                {"source": "deal", "field": "pipeline", "operator": "equals", "values": ["0"]},
            ]},
            {"action_type": "set_status", "target": "deal", "status_id": "C1:WON",
             "timing": "before_date", "delay_minutes": 60, "date_field": "CLOSEDATE",
             "date_of": "deal"},
        )
    )  # fmt: skip
    result = _simulate(device)
    assert result.caller == "looked up now: contact Anna Kowalska"
    comment = next(s for s in result.steps if s.action_type == "timeline_comment")
    assert comment.notes == [
        "if entity.type equals CLIENT: holds (value: ['CLIENT'])",
        "if deal.pipeline equals 0: does not hold (open deals' values: [['1']])",
        "would be skipped: its conditions do not hold",
    ]
    status = next(s for s in result.steps if s.action_type == "set_status")
    assert status.notes == [
        "moves the open deal to the stage C1:WON",
        "60 min before deal.CLOSEDATE, read from Bitrix24 once the call is over (skipped if "
        "the date is missing or past)",
    ]
    # Without a look-up the fields are not known: said so.
    stored = _simulate(device, caller="known")
    comment = next(s for s in stored.steps if s.action_type == "timeline_comment")
    assert comment.notes[-1] == (
        "the caller's fields are read when it runs; look the number up now to see them"
    )
