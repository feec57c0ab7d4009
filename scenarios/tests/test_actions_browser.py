"""A tenant admin edits issue 18's actions in Chromium: a deal's stage picked by name, fields one
per line, a webhook whose secret is never shown again; then simulates a call on the caller
looked up now, each condition with its result."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django_tenants.utils import schema_context

from calls.services import device_register
from crm.services import directory_sync
from scenarios.models import Scenario, ScenarioAction
from scenarios.tests.e2e import alpha_wipe

pytestmark = pytest.mark.browser
SHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"


def _wipe() -> None:
    alpha_wipe()
    with schema_context("alpha"):
        User.objects.filter(username="actions-admin").delete()


def test_an_admin_sets_a_stage_fields_and_a_webhook_and_simulates_the_conditions(
    committed_db: Callable, alpha_portal: Any, web_server: int, browser: Callable[[], Any]
) -> None:
    from playwright.sync_api import expect

    committed_db(_wipe)
    _wipe()
    with schema_context("alpha"):
        User.objects.create_superuser("actions-admin", password="pw")
        directory_sync()
        device_register(
            name="Ewa's phone", phone_number="+48500100300", bitrix24_user_id=9, country="PL"
        )
        missed = Scenario.objects.get(trigger="incoming_missed")
        stage = ScenarioAction.objects.create(
            scenario=missed, position=40, action_type="set_status", target="deal",
            status_id="C1:NEGOTIATION",
            conditions=[{"source": "deal", "field": "pipeline", "operator": "equals",
                         "values": ["1"]}],
        )  # fmt: skip
        hook = ScenarioAction.objects.create(
            scenario=missed, position=50, action_type="webhook",
            url="https://hooks.example.com/calls", secret="kept-secret",
        )  # fmt: skip
        order = list(missed.actions.order_by("position", "pk"))
        at_stage, at_hook = order.index(stage), order.index(hook)
    base = f"http://alpha.localhost:{web_server}"
    SHOTS.mkdir(parents=True, exist_ok=True)

    with browser() as page:
        page.goto(f"{base}/admin/scenarios/scenario/")
        page.fill("#id_username", "actions-admin")
        page.fill("#id_password", "pw")
        page.click("input[type=submit]")
        page.goto(f"{base}/admin/scenarios/scenario/{missed.pk}/change/")
        # The secret is not in the page; the form says one is stored.
        expect(page.locator(f"#id_actions-{at_hook}-secret")).to_have_value("")
        assert "kept-secret" not in page.content()
        page.select_option(
            f"#id_actions-{at_stage}-status_id", label="Contracts: Contract signed (C1:WON)"
        )
        page.select_option(f"#id_actions-{at_hook}-action_type", "update_fields")
        page.select_option(f"#id_actions-{at_hook}-target", "deal")
        page.fill(f"#id_actions-{at_hook}-fields", "UF_CRM_SIM_LINE = {line}\nCOMMENTS = {time}")
        page.click("input[name=_continue]")
        expect(page.locator(".messagelist")).to_contain_text("was changed successfully")
        # One per line as typed (PostgreSQL's jsonb keeps its own order of the names).
        typed = page.locator(f"#id_actions-{at_hook}-fields").input_value().splitlines()
        assert sorted(typed) == ["COMMENTS = {time}", "UF_CRM_SIM_LINE = {line}"]
        page.screenshot(path=str(SHOTS / "scenario-new-actions.png"), full_page=True)

        page.goto(f"{base}/admin/scenarios/scenario/simulate/")
        page.select_option("#id_outcome", "incoming:missed")
        page.fill("#id_phone_number", "600 111 222")
        page.select_option("#id_caller", "lookup")
        page.click("input[type=submit]")
        expect(page.locator("#simulation-scenario")).to_contain_text(
            "Incoming call missed, the scenario of every phone"
        )
        row = page.locator("#simulation tr", has_text="Change the lead status or the deal stage")
        expect(row).to_contain_text("if deal.pipeline equals 1: holds (deal 71 matches)")
        expect(row).to_contain_text("moves the open deal to the stage C1:WON")
        page.screenshot(path=str(SHOTS / "simulate-conditions.png"), full_page=True)
    with schema_context("alpha"):
        stage.refresh_from_db()
        hook.refresh_from_db()
    assert stage.status_id == "C1:WON"
    assert (hook.action_type, hook.fields) == (
        "update_fields",
        {"UF_CRM_SIM_LINE": "{line}", "COMMENTS": "{time}"},
    )
    # The secret typed before stays stored (empty kept it).
    assert hook.secret == "kept-secret"
