"""The tenant admin: scenarios with their actions, import/export, simulate, runs and Retry."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.core.exceptions import ValidationError
from django.test import Client
from django.utils import timezone

from calls.models import Device
from scenarios.document import DEFAULT_CONFIGURATION, config_export, scenario_config_export
from scenarios.models import ActionRun, RoundRobinCursor, Scenario, ScenarioAction
from scenarios.outbox import run_plan
from scenarios.tests.conftest import call_make
from tenants.models import Tenant

Status = ActionRun.Status


@pytest.fixture
def admin(alpha: Tenant) -> Client:
    User.objects.create_superuser("alpha-admin", password="pw")
    client = Client(HTTP_HOST="alpha.localhost")
    assert client.login(username="alpha-admin", password="pw")
    return client


def _inline_post(scenario: Scenario, actions: list[dict[str, Any]]) -> dict[str, Any]:
    """The change form of a scenario as the browser would post it."""
    data: dict[str, Any] = {
        "name": scenario.name,
        "trigger": scenario.trigger,
        "is_active": "on",
        "description": "",
        "actions-TOTAL_FORMS": str(len(actions)),
        "actions-INITIAL_FORMS": str(sum(1 for a in actions if a.get("id"))),
        "actions-MIN_NUM_FORMS": "0",
        "actions-MAX_NUM_FORMS": "1000",
    }
    for index, action in enumerate(actions):
        for key, value in action.items():
            if isinstance(value, bool):
                if value:
                    data[f"actions-{index}-{key}"] = "on"
            elif isinstance(value, list):
                data[f"actions-{index}-{key}"] = value
            else:
                data[f"actions-{index}-{key}"] = "" if value is None else str(value)
        data[f"actions-{index}-scenario"] = str(scenario.pk)
    return data


def _existing(scenario: Scenario) -> list[dict[str, Any]]:
    rows = []
    for action in scenario.actions.all():
        row = {"id": action.pk, "position": action.position, **action.as_config()}
        row["users"] = ", ".join(map(str, action.users))
        rows.append(row)
    return rows


def test_every_page_of_the_engine_opens(admin: Client, device: Device) -> None:
    scenario = Scenario.objects.get(trigger="incoming_missed")
    call = call_make(device)
    run = run_plan(call_id=call.pk, action_type="notify", dedupe_key="x", due_at=timezone.now())
    for url in (
        "/admin/scenarios/scenario/",
        f"/admin/scenarios/scenario/{scenario.pk}/change/",
        "/admin/scenarios/scenario/simulate/",
        "/admin/scenarios/scenario/import/",
        "/admin/scenarios/officehours/",
        "/admin/scenarios/holiday/",
        "/admin/scenarios/actionrun/",
        f"/admin/scenarios/actionrun/?call={call.pk}",
        f"/admin/scenarios/actionrun/{run.pk}/change/",
        "/admin/scenarios/roundrobincursor/",
    ):
        assert admin.get(url).status_code == 200, url


def test_an_action_is_added_in_the_scenario_form_and_validated(admin: Client) -> None:
    scenario = Scenario.objects.get(trigger="incoming_missed")
    url = f"/admin/scenarios/scenario/{scenario.pk}/change/"
    new = {
        "position": 40, "action_type": "notify", "is_active": True, "timing": "delay",
        "delay_minutes": 10, "hours": "closed", "responsible": "", "users": "11, 3",
        "recipients": [], "card_for": "", "text_template": "Still waiting: {caller}",
        "skip_if_reached": True,
    }  # fmt: skip
    bad = admin.post(url, _inline_post(scenario, [*_existing(scenario), {**new, "users": "x"}]))
    assert bad.status_code == 200
    assert "is not a Bitrix24 user id" in bad.content.decode()
    response = admin.post(url, _inline_post(scenario, [*_existing(scenario), new]))
    assert response.status_code == 302, response.content.decode()[:3000]
    added = scenario.actions.get(position=40)
    assert (added.users, added.hours, added.delay_minutes) == ([11, 3], "closed", 10)


def test_an_invalid_action_is_refused_with_the_reason(admin: Client) -> None:
    scenario = Scenario.objects.get(trigger="incoming_rejected")
    url = f"/admin/scenarios/scenario/{scenario.pk}/change/"
    wrong = {
        "position": 20, "action_type": "create_lead", "is_active": True, "timing": "immediately",
        "delay_minutes": 0, "hours": "always", "responsible": "crm", "users": "", "recipients": [],
        "title_template": "Lead {nope}", "skip_if_reached": True,
    }  # fmt: skip
    response = admin.post(url, _inline_post(scenario, [*_existing(scenario), wrong]))
    text = response.content.decode()
    assert response.status_code == 200
    assert "leads and deals are created only by the unknown-number scenario" in text
    assert "unknown placeholder {nope}" in text
    assert scenario.actions.count() == 1


def test_export_from_the_list_action_and_the_button(admin: Client) -> None:
    by_button = admin.get("/admin/scenarios/scenario/export/")
    assert by_button["Content-Type"] == "application/json"
    assert "attachment" in by_button["Content-Disposition"]
    selected = Scenario.objects.first()
    assert selected is not None
    by_action = admin.post(
        "/admin/scenarios/scenario/",
        {"action": "export_configuration", "_selected_action": [selected.pk]},
    )
    for response in (by_button, by_action):
        data = json.loads(response.content)
        data.pop("exported_at")
        expected = config_export()
        expected.pop("exported_at")
        assert data == expected
        assert data["routing"]["rules"] == []  # the whole document, routing included


def test_import_page_shows_every_problem_and_changes_nothing(admin: Client) -> None:
    before = scenario_config_export()
    bad = {**DEFAULT_CONFIGURATION, "scenarios": [{"trigger": "sometimes", "name": ""}]}
    response = admin.post("/admin/scenarios/scenario/import/", {"text": json.dumps(bad)})
    text = response.content.decode()
    assert response.status_code == 200
    assert "scenarios[0].trigger: must be one of" in text
    assert "scenarios[0].name: must be non-empty text" in text
    after = scenario_config_export()
    before.pop("exported_at")
    after.pop("exported_at")
    assert before == after

    good = {**DEFAULT_CONFIGURATION, "scenarios": DEFAULT_CONFIGURATION["scenarios"][:1]}
    response = admin.post("/admin/scenarios/scenario/import/", {"text": json.dumps(good)})
    assert response.status_code == 302
    assert list(Scenario.objects.values_list("trigger", flat=True)) == ["incoming_answered"]


def test_simulate_shows_the_actions_their_due_times_and_users(
    admin: Client, device: Device
) -> None:
    ScenarioAction.objects.filter(action_type="callback_task").update(delay_in_working_time=True)
    response = admin.post(
        "/admin/scenarios/scenario/simulate/",
        {
            "outcome": "incoming:missed", "phone_number": "600 111 222",
            "at": "2026-11-20T17:50", "duration_seconds": "0", "device": str(device.pk),
            "caller": "known", "responsible_id": "5",
        },
    )  # fmt: skip
    text = re.sub(r"\s+", " ", response.content.decode())
    assert response.status_code == 200
    assert "Incoming call missed" in text
    assert "during office hours" in text
    rows = re.findall(r"<tr class=\"planned\">(.*?)</tr>", text)
    cells = [re.findall(r"<td>(.*?)</td>", row) for row in rows]
    by_action = {re.sub(r" <small>.*", "", c[3]): c for c in cells}
    callback = by_action["Incoming call missed: Callback task"]
    # 10 minutes left on Friday (the call rang 20 s), 20 on Monday morning.
    assert callback[1] == "Mon 2026-11-23 09:20:20"
    # Routed to the caller's responsible (routing's default), who the actions are for.
    assert "user 5 - routed user" in callback[5]
    assert "user 5 - routed user" in by_action["Incoming call missed: Bitrix24 notification"][5]
    # The card opens for the routed user and for the agent whose phone rings.
    assert by_action["While it rings: open the CRM card"][5] == "user 5, user 9"
    assert not ActionRun.objects.exists()


def test_failed_runs_can_be_retried_from_the_list_and_nothing_else(
    admin: Client, device: Device
) -> None:
    call = call_make(device)
    failed = run_plan(call_id=call.pk, action_type="notify", dedupe_key="a", due_at=None)
    done = run_plan(call_id=call.pk, action_type="notify", dedupe_key="b", due_at=None)
    ActionRun.objects.filter(pk=failed.pk).update(status=Status.FAILED, last_error="Access denied")
    ActionRun.objects.filter(pk=done.pk).update(status=Status.DONE)
    response = admin.post(
        "/admin/scenarios/actionrun/",
        {"action": "retry", "_selected_action": [failed.pk, done.pk]},
        follow=True,
    )
    assert "1 run(s) scheduled again." in response.content.decode()
    assert ActionRun.objects.get(pk=failed.pk).status == Status.SCHEDULED
    assert ActionRun.objects.get(pk=done.pk).status == Status.DONE
    # The run page itself is read-only.
    page = admin.get(f"/admin/scenarios/actionrun/{failed.pk}/change/").content.decode()
    assert 'name="_save"' not in page


def test_support_staff_see_runs_but_cannot_retry(alpha: Tenant, device: Device) -> None:
    user = User.objects.create_user("support", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_actionrun"))
    client = Client(HTTP_HOST="alpha.localhost")
    assert client.login(username="support", password="pw")
    call = call_make(device)
    run = run_plan(call_id=call.pk, action_type="notify", dedupe_key="a", due_at=None)
    ActionRun.objects.filter(pk=run.pk).update(status=Status.FAILED)
    page = client.get("/admin/scenarios/actionrun/")
    assert page.status_code == 200
    assert 'value="retry"' not in page.content.decode()
    client.post("/admin/scenarios/actionrun/", {"action": "retry", "_selected_action": [run.pk]})
    assert ActionRun.objects.get(pk=run.pk).status == Status.FAILED


def test_configuration_naming_what_bitrix24_no_longer_has_is_flagged(
    admin: Client, portal: Any
) -> None:
    scenario = Scenario.objects.get(trigger="unknown_number")
    scenario.actions.update(lead_status_id="GONE")
    ScenarioAction.objects.create(
        scenario=Scenario.objects.get(trigger="incoming_missed"), position=50,
        action_type="notify", recipients=[], users=[7], text_template="x",
    )  # fmt: skip
    listing = admin.get("/admin/scenarios/scenario/", follow=True).content.decode()
    assert "lead status &#x27;GONE&#x27; no longer exists" in listing
    assert "Bitrix24 user 7 is inactive" in listing
    page = admin.get(f"/admin/scenarios/scenario/{scenario.pk}/change/").content.decode()
    assert "Skipped when it runs: lead status &#x27;GONE&#x27; no longer exists" in page


@pytest.fixture
def portal(alpha_portal: Any, alpha: Tenant) -> Any:
    return alpha_portal


def test_simulating_an_unknown_number_shows_the_lead_first_and_who_gets_it(
    alpha: Tenant, device: Device
) -> None:
    from zoneinfo import ZoneInfo

    from scenarios.simulate import simulate

    scenario = Scenario.objects.get(trigger="incoming_missed")
    scenario.actions.filter(action_type="notify").update(hours="open")
    saturday = datetime(2026, 11, 21, 11, 0, tzinfo=ZoneInfo("Europe/Warsaw"))
    result = simulate(
        direction="incoming", outcome="missed", phone_number="+48600999000", at=saturday,
        duration_seconds=0, device=device, caller="auto",
    )  # fmt: skip
    assert result.caller == "never seen by SIMtrix: treated as not in the CRM"
    assert not result.office_open
    planned = [(s.phase, s.action_type, s.waits_for) for s in result.steps if s.planned]
    lead_label = "Unknown number (caller not in the CRM): Create a lead"
    assert planned == [
        ("while ringing", "create_lead", ""),
        ("while ringing", "register_call", lead_label),
        ("after the call", "log_call", "While it rings: open the CRM card"),
        ("after the call", "callback_task", lead_label),
    ]
    lead = result.steps[0]
    assert lead.users == ["user 9 - round-robin"]
    callback = next(s for s in result.steps if s.action_type == "callback_task")
    # The unknown caller is routed to "Others" (the agent), whom the task is for, 30 minutes
    # after the end (plain time).
    assert callback.users == ["user 9 - routed user"]
    assert callback.offset == "+30min 20s"
    [left_out] = [s for s in result.steps if not s.planned]
    assert (left_out.action_type, left_out.notes) == ("notify", ["only during office hours"])
    assert not RoundRobinCursor.objects.exists()  # peeking takes no turn


def test_users_are_shown_by_name_typed_by_name_and_an_unknown_one_is_flagged(
    admin: Client,
) -> None:
    from crm.models import Bitrix24User
    from scenarios.forms import UserIdsField

    seen = timezone.now()
    Bitrix24User.objects.create(id=5, name="Marta Nowak", active=True, seen_at=seen)
    Bitrix24User.objects.create(id=9, name="Ewa Lewandowska", active=True, seen_at=seen)
    Bitrix24User.objects.create(id=7, name="Jan Odszedł", active=False, seen_at=seen)
    field = UserIdsField(required=False)
    assert field.prepare_value([9, 5, 42]) == (
        "Ewa Lewandowska (#9), Marta Nowak (#5), User #42 (not in Bitrix24)"
    )
    # What is shown reads back as it was; names and ids typed are read too, in order.
    assert field.clean("Ewa Lewandowska (#9), Marta Nowak (#5)") == [9, 5]
    assert field.clean("marta nowak, 9") == [5, 9]
    for typed, message in [
        ("Jan Odszedł", "Not an active Bitrix24 user: Jan Odszedł (#7, deactivated)"),
        ("42", "Not an active Bitrix24 user: User #42 (not in Bitrix24)"),
        ("Nobody Here", "is not a Bitrix24 user id, nor a Bitrix24 user's name"),
    ]:
        with pytest.raises(ValidationError) as caught:
            field.clean(typed)
        assert message in str(caught.value)


def test_lead_statuses_sources_pipelines_and_stages_are_picked_by_name(
    admin: Client, portal: Any
) -> None:
    from crm.services import directory_sync

    directory_sync()
    scenario = Scenario.objects.get(trigger="unknown_number")
    url = f"/admin/scenarios/scenario/{scenario.pk}/change/"
    page = admin.get(url).content.decode()
    assert '<option value="IN_PROCESS">In Progress (IN_PROCESS)</option>' in page
    assert '<option value="CALL" selected>Call (CALL)</option>' in page  # the default's source
    assert '<option value="1">Contracts (1)</option>' in page
    assert '<option value="C1:NEGOTIATION">Contracts: ' in page

    rows = _existing(scenario)
    rows[0].update(lead_status_id="IN_PROCESS", lead_source_id="WEB")
    response = admin.post(url, _inline_post(scenario, rows))
    assert response.status_code == 302, response.content.decode()[:3000]
    action = scenario.actions.get(pk=rows[0]["id"])
    assert (action.lead_status_id, action.lead_source_id) == ("IN_PROCESS", "WEB")

    # Not in the directory (any more): kept, shown flagged, never silently changed.
    scenario.actions.update(lead_status_id="GONE")
    page = admin.get(url).content.decode()
    assert '<option value="GONE" selected>GONE (not in Bitrix24)</option>' in page
    response = admin.post(url, _inline_post(scenario, _existing(scenario)))
    assert response.status_code == 302
    assert scenario.actions.get(pk=rows[0]["id"]).lead_status_id == "GONE"
    # A value typed past the picker is refused.
    rows = _existing(scenario)
    rows[0].update(lead_source_id="NOPE")
    refused = admin.post(url, _inline_post(scenario, rows))
    assert refused.status_code == 200
    assert "Select a valid choice" in refused.content.decode()
    assert scenario.actions.get(pk=rows[0]["id"]).lead_source_id == "WEB"
