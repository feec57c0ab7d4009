"""A tenant admin sets up the alerts in Chromium (Bitrix24 users typed by name, an unknown one
refused, the threshold changed) and reads the incident the check found: the list, its state
filter, the incident's history. Screenshots in var/screenshots/."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core import mail
from django.utils import timezone
from django_tenants.utils import schema_context

from alerts.models import AlertSettings, Incident
from alerts.services import alerts_check
from alerts.tests.conftest import EWA, MARTA, heartbeat
from calls.models import Device
from calls.services import device_register
from scenarios.models import OfficeHours
from scenarios.tests.e2e import Phone, alpha_wipe
from tenants.models import TenantSchedule

pytestmark = pytest.mark.browser
SHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"


def _wipe() -> None:
    with schema_context("alpha"):
        Incident.objects.all().delete()
        AlertSettings.objects.all().delete()
        User.objects.filter(username="alerts-admin").delete()
    TenantSchedule.objects.filter(tenant__schema_name="alpha").update(alerts=False)
    alpha_wipe()


def _log_in(page: Any, url: str) -> None:
    page.goto(url)
    page.fill("#id_username", "alerts-admin")
    page.fill("#id_password", "pw")
    page.click("input[type=submit]")


def test_an_admin_sets_up_alerts_and_reads_an_incident(
    committed_db: Callable, alpha_portal: Any, web_server: int, browser: Callable[[], Any]
) -> None:
    from playwright.sync_api import expect

    committed_db(_wipe)
    _wipe()
    with schema_context("alpha"):
        User.objects.create_superuser("alerts-admin", password="pw")
        OfficeHours.objects.all().delete()  # open around the clock
        device, token = device_register(
            name="Reception", phone_number="+48500100200", bitrix24_user_id=MARTA, country="PL"
        )
    heartbeat(Phone(token))
    base = f"http://alpha.localhost:{web_server}"
    SHOTS.mkdir(parents=True, exist_ok=True)

    with browser() as page:
        _log_in(page, f"{base}/admin/alerts/alertsettings/")
        expect(page).to_have_url(re.compile(r"/admin/alerts/alertsettings/\d+/change/"))
        page.fill("#id_user_ids", "Ewa Lewandowska, marta nowak")
        page.fill("#id_email", "boss@example.com")
        page.fill("#id_device_silent_minutes", "20")
        page.click("input[name=_continue]")
        expect(page.locator(".messagelist")).to_contain_text("was changed successfully")
        expect(page.locator("#id_user_ids")).to_have_value("Ewa Lewandowska (#9), Marta Nowak (#5)")
        page.screenshot(path=str(SHOTS / "alerts-settings.png"), full_page=True)

        page.fill("#id_user_ids", "Ewa Lewandowska, Jan Nieznany")
        page.click("input[name=_continue]")
        expect(page.locator(".errorlist")).to_contain_text("Jan Nieznany")

    with schema_context("alpha"):
        row = AlertSettings.objects.get()
        assert (row.user_ids, row.email, row.device_silent_minutes) == (
            [EWA, MARTA],
            "boss@example.com",
            20,
        )
        Device.objects.filter(pk=device.pk).update(
            last_seen_at=timezone.now() - timedelta(minutes=25)
        )  # silent for longer than the 20 minutes just set
        alerts_check()
        incident = Incident.objects.get()
    assert len(mail.outbox) == 1

    with browser() as page:
        _log_in(page, f"{base}/admin/alerts/incident/")
        rows = page.locator("#result_list tbody tr")
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text(
            "The phone Reception (+48500100200) has been silent since"
        )
        expect(rows.first).to_contain_text("Open")
        page.locator("#changelist-filter").get_by_role("link", name="Cleared").click()
        expect(page).to_have_url(re.compile(r"state=cleared"))
        expect(page.locator("#result_list")).to_have_count(0)  # nothing cleared yet
        page.locator("#changelist-filter").get_by_role("link", name="Open", exact=True).click()
        expect(page.locator("#result_list tbody tr")).to_have_count(1)
        page.screenshot(path=str(SHOTS / "alerts-incidents.png"), full_page=True)

        page.locator("#result_list tbody tr a").first.click()
        expect(page).to_have_url(re.compile(rf"/admin/alerts/incident/{incident.pk}/change/"))
        history = page.locator(".inline-group")
        expect(history).to_contain_text("opened")
        expect(history.locator("tr", has_text="notice sent")).to_have_count(2)  # two channels
        expect(history).to_contain_text("To: boss@example.com")
        page.screenshot(path=str(SHOTS / "alerts-incident.png"), full_page=True)
