"""The tenant admin's first visit, as a person makes it in Chromium: the onboarding checklist,
a device added from it (its QR), the step ticked, the call page's status line, the clock.
Screenshots of the pages are kept in var/screenshots/ (CI keeps them as artifacts)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from django_tenants.utils import schema_context

from calls.models import Device
from crm.models import Bitrix24User
from scenarios.tests.e2e import alpha_wipe
from tenants.middleware import tenant_cache_clear
from tenants.models import Tenant

pytestmark = pytest.mark.browser
SHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"


def _zone_set(zone: str) -> None:
    Tenant.objects.filter(schema_name="alpha").update(timezone=zone)
    tenant_cache_clear()


def _wipe() -> None:
    alpha_wipe()  # a new tenant: no phone, no call (earlier tests' committed ones too)
    with schema_context("alpha"):
        User.objects.filter(username="first-admin").delete()
    tenant_cache_clear()


def test_a_new_tenant_admin_is_walked_through_the_first_steps(
    committed_db: Callable, web_server: int, browser: Callable[[], Any]
) -> None:
    from playwright.sync_api import expect

    zone = Tenant.objects.get(schema_name="alpha").timezone
    committed_db(_wipe)
    committed_db(lambda: _zone_set(zone))  # as it was: later tests read the tenant's clock
    _wipe()
    with schema_context("alpha"):
        User.objects.create_superuser("first-admin", password="pw")
        # The portal's user 5, as the directory sync has it (left there: it is the portal's).
        Bitrix24User.objects.update_or_create(
            id=5, defaults={"name": "Marta Nowak", "active": True, "seen_at": timezone.now()}
        )
    Tenant.objects.filter(schema_name="alpha").update(timezone="Europe/Warsaw")
    tenant_cache_clear()
    SHOTS.mkdir(parents=True, exist_ok=True)
    base = f"http://alpha.localhost:{web_server}"

    with browser() as page:
        page.goto(f"{base}/admin/")
        page.fill("#id_username", "first-admin")
        page.fill("#id_password", "pw")
        page.click("input[type=submit]")
        checklist = page.locator("#onboarding")
        expect(checklist).to_contain_text("Getting started")
        expect(page.locator("#tenant-clock")).to_have_text("Times in Europe/Warsaw")
        expect(checklist.locator('[data-done="no"]', has_text="First device")).to_have_count(1)
        page.screenshot(path=str(SHOTS / "home-onboarding.png"), full_page=True)

        checklist.get_by_role("link", name="First device").click()
        expect(page).to_have_url(re.compile(r"/admin/calls/device/add/"))
        page.fill("#id_name", "Reception")
        page.fill("#id_phone_number", "600 700 800")
        page.select_option("#id_bitrix24_user_id", label="Marta Nowak (#5)")
        page.click("input[name=_save]")
        expect(page.locator(".simtrix-qr svg")).to_have_count(1)
        page.screenshot(path=str(SHOTS / "device-qr.png"), full_page=True)

        page.goto(f"{base}/admin/")
        done = page.locator("#onboarding [data-done='yes']", has_text="First device")
        expect(done).to_have_count(1)

        # In Polish, from the switcher in the header (kept for the next pages).
        page.select_option("#language-switch select", "pl")
        page.click("#language-apply")
        expect(page.locator("#onboarding")).to_contain_text("Pierwsze kroki")
        expect(page.locator("#tenant-clock")).to_have_text("Czas: Europe/Warsaw")
        page.goto(f"{base}/admin/calls/device/")
        expect(page.locator("#user-tools")).to_contain_text("Wyloguj")
        page.screenshot(path=str(SHOTS / "devices-pl.png"), full_page=True)
    with schema_context("alpha"):
        assert Device.objects.get(name="Reception").bitrix24_user_id == 5
