"""Support staff read a call's page in Chromium: a call logged in Bitrix24 through a real
worker (who called, linked to the card; the story; times on the tenant's clock), the same page
in Polish, and a call whose logging failed, retried from its status line."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from django_tenants.utils import schema_context

from calls.models import Call
from calls.services import device_register
from scenarios.models import ActionRun
from scenarios.tests.e2e import Phone, alpha_wipe, dispatching, wait_for
from tenants.middleware import tenant_cache_clear
from tenants.models import Tenant

pytestmark = [pytest.mark.browser, pytest.mark.worker]
SHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"
ANNA = "+48600111222"


def _zone_set(zone: str) -> None:
    Tenant.objects.filter(schema_name="alpha").update(timezone=zone)
    tenant_cache_clear()


def _wipe() -> None:
    alpha_wipe()
    with schema_context("alpha"):
        User.objects.filter(username="support-lead").delete()
    tenant_cache_clear()


@pytest.fixture
def phone(celery_worker: str, alpha_portal: Any, committed_db: Callable) -> Iterator[Phone]:
    zone = Tenant.objects.get(schema_name="alpha").timezone
    committed_db(_wipe)
    committed_db(lambda: _zone_set(zone))  # as it was: later tests read the tenant's clock
    _wipe()
    with schema_context("alpha"):
        _, token = device_register(
            name="Ewa's phone", phone_number="+48500100300", bitrix24_user_id=9, country="PL"
        )
        User.objects.create_superuser("support-lead", password="pw")
    Tenant.objects.filter(schema_name="alpha").update(timezone="Europe/Warsaw")
    tenant_cache_clear()
    with dispatching():
        yield Phone(token)


def test_support_reads_a_logged_call_and_retries_a_failed_one(
    phone: Phone, web_server: int, browser: Callable[[], Any]
) -> None:
    from playwright.sync_api import expect

    phone.call("page-logged", number=ANNA, outcome="answered", talk=42)

    def logged() -> Call | None:
        with schema_context("alpha"):
            return Call.objects.filter(call_id="page-logged", b24_finished_at__isnull=False).first()

    call = wait_for(logged)
    # An unknown caller's missed call, whose logging then fails for good (as after its last retry).
    phone.call("page-failed", number="+48600999111", outcome="missed")
    with schema_context("alpha"):
        failed = wait_for(lambda: Call.objects.filter(call_id="page-failed").first())
        run = wait_for(
            lambda: ActionRun.objects.filter(call=failed, action_type="log_call").first()
        )
        # Let the worker finish with it first: nothing then changes the run behind the test.
        wait_for(
            lambda: ActionRun.objects.filter(pk=run.pk, status__in=["done", "skipped"]).exists()
        )
        ActionRun.objects.filter(pk=run.pk).update(
            status=ActionRun.Status.FAILED,
            attempts=12,
            last_error="ACCESS_DENIED: the webhook lacks the telephony scope",
            done_at=timezone.now(),
        )
        Call.objects.filter(pk=failed.pk).update(b24_finished_at=None)
    warsaw = f"{call.b24_finished_at.astimezone(ZoneInfo('Europe/Warsaw')):%H:%M}"
    base = f"http://alpha.localhost:{web_server}"
    SHOTS.mkdir(parents=True, exist_ok=True)

    with browser() as page:
        page.goto(f"{base}/admin/calls/call/")
        page.fill("#id_username", "support-lead")
        page.fill("#id_password", "pw")
        page.click("input[type=submit]")
        page.goto(f"{base}/admin/calls/call/")
        page.locator(f"a[href$='/admin/calls/call/{call.pk}/change/']").first.click()

        status = page.locator("#call-status")
        expect(status).to_have_attribute("data-kind", "logged")
        expect(status).to_contain_text(f"Logged in Bitrix24 at {warsaw}")  # the tenant's clock
        card = page.locator("#caller-card")
        expect(card).to_have_text("Anna Kowalska")
        expect(card).to_have_attribute("href", re.compile(r"/crm/contact/details/12/$"))
        story = page.locator("#story")
        expect(story).to_contain_text("The phone reported an incoming call ringing")
        expect(story).to_contain_text("The phone reported the end: answered")
        expect(story).to_contain_text("Done: Log the call (timeline activity)")
        expect(story).to_contain_text("Bitrix24: telephony.externalcall.finish")
        expect(page.locator("#routing")).to_contain_text("Routed to Marta Nowak (5)")
        expect(page.locator("#routing")).not_to_contain_text("+00:00")  # local, not ISO UTC
        page.screenshot(path=str(SHOTS / "call-logged.png"), full_page=True)

        page.select_option("#language-switch select", "pl")
        page.click("#language-apply")
        expect(page.locator("#caller")).to_contain_text("Kto dzwonił")
        expect(page.locator("#call-status")).to_contain_text(f"Zapisano w Bitrix24 o {warsaw}")
        expect(page.locator("#story")).to_contain_text("Telefon zgłosił koniec: odebrane")
        page.screenshot(path=str(SHOTS / "call-logged-pl.png"), full_page=True)
        page.select_option("#language-switch select", "en")
        page.click("#language-apply")

        page.goto(f"{base}/admin/calls/call/{failed.pk}/change/")
        status = page.locator("#call-status")
        expect(status).to_have_attribute("data-kind", "failed")
        expect(status).to_contain_text("failed: ACCESS_DENIED")
        expect(page.locator("#story tr.story-error")).to_contain_text(["Failed: Log the call"])
        page.screenshot(path=str(SHOTS / "call-failed.png"), full_page=True)
        page.click("#call-retry")
        expect(page.locator(".messagelist")).to_contain_text("1")
    with schema_context("alpha"):
        assert ActionRun.objects.get(pk=run.pk).status != ActionRun.Status.FAILED
