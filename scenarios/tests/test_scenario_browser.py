"""A tenant admin sets up who hears of missed calls and checks routing, in Chromium: Bitrix24
users typed by name in a scenario action, an unknown one refused, the routing test box."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django_tenants.utils import schema_context

from crm.services import directory_sync
from scenarios.models import Scenario
from scenarios.tests.e2e import alpha_wipe

pytestmark = pytest.mark.browser
SHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"


def _wipe() -> None:
    alpha_wipe()  # the default scenarios back
    with schema_context("alpha"):
        User.objects.filter(username="setup-admin").delete()


def test_an_admin_names_users_in_a_scenario_and_tests_routing(
    committed_db: Callable, alpha_portal: Any, web_server: int, browser: Callable[[], Any]
) -> None:
    from playwright.sync_api import expect

    committed_db(_wipe)
    _wipe()
    with schema_context("alpha"):
        User.objects.create_superuser("setup-admin", password="pw")
        directory_sync()  # Marta Nowak (5), Ewa Lewandowska (9), ... from the sandbox portal
        missed = Scenario.objects.get(trigger="incoming_missed")
        notify = missed.actions.get(action_type="notify")
        index = list(missed.actions.order_by("position", "pk")).index(notify)
    base = f"http://alpha.localhost:{web_server}"
    SHOTS.mkdir(parents=True, exist_ok=True)
    users = f"#id_actions-{index}-users"

    with browser() as page:
        page.goto(f"{base}/admin/scenarios/scenario/")
        page.fill("#id_username", "setup-admin")
        page.fill("#id_password", "pw")
        page.click("input[type=submit]")
        page.goto(f"{base}/admin/scenarios/scenario/")
        page.get_by_role("link", name="Incoming call missed").click()
        expect(page.locator(f"#id_actions-{index}-action_type")).to_have_value("notify")

        # By name, as people know each other; order kept.
        page.fill(users, "Ewa Lewandowska, marta nowak")
        page.click("input[name=_continue]")
        expect(page.locator(".messagelist")).to_contain_text("was changed successfully")
        expect(page.locator(users)).to_have_value("Ewa Lewandowska (#9), Marta Nowak (#5)")
        page.screenshot(path=str(SHOTS / "scenario-users.png"), full_page=True)

        # Someone Bitrix24 does not have: refused, nothing saved.
        page.fill(users, "Ewa Lewandowska, Jan Nieznany")
        page.click("input[name=_continue]")
        expect(page.locator(".errorlist")).to_contain_text("Jan Nieznany")

        # The routing test box: which rule would take Anna Kowalska's call.
        page.goto(f"{base}/admin/scenarios/routingrule/")
        page.fill("#routing-test-number", "600 111 222")
        page.press("#routing-test-number", "Enter")
        expect(page).to_have_url(re.compile(r"/admin/scenarios/routingrule/test/\?phone_number="))
        expect(page.locator("#routing-crm")).to_contain_text("Anna Kowalska")
        expect(page.locator("#routing-decision")).to_contain_text("Marta Nowak (5)")
        page.screenshot(path=str(SHOTS / "routing-test.png"), full_page=True)
    with schema_context("alpha"):
        assert Scenario.objects.get(trigger="incoming_missed").actions.get(
            action_type="notify"
        ).users == [9, 5]
