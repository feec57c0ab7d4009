"""Late background work, as a tenant admin finds it: in Chromium, from the login page."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from django_tenants.utils import schema_context

from calls.models import Call, Device
from calls.services import device_register
from scenarios.models import ActionRun
from scenarios.outbox import run_plan

pytestmark = pytest.mark.browser


def _wipe() -> None:
    with schema_context("alpha"):
        ActionRun.objects.filter(dedupe_key__startswith="browser:").delete()
        Call.objects.filter(call_id__startswith="browser-").delete()
        Device.objects.filter(name="Browser phone").delete()
        User.objects.filter(username="late-admin").delete()


def test_a_tenant_admin_finds_late_work_from_the_home_page_down_to_the_call(
    committed_db: Callable, web_server: int, browser: Callable[[], Any]
) -> None:
    from playwright.sync_api import expect

    committed_db(_wipe)
    with schema_context("alpha"):
        User.objects.create_superuser("late-admin", password="pw")
        device, _ = device_register(
            name="Browser phone", phone_number="+48500100777", bitrix24_user_id=5, country="PL"
        )
        call = Call.objects.create(
            device=device, call_id="browser-1", direction="incoming", phone_number="+48600111777"
        )
        run = run_plan(
            call_id=call.pk,
            action_type="notify",
            dedupe_key="browser:late",
            due_at=timezone.now() + timedelta(hours=1),
            label="Tell the responsible",
        )
        ActionRun.objects.filter(pk=run.pk).update(
            due_at=timezone.now() - timedelta(minutes=12), dispatched_at=timezone.now()
        )
    base = f"http://alpha.localhost:{web_server}"

    with browser() as page:
        page.goto(f"{base}/admin/")
        page.fill("#id_username", "late-admin")
        page.fill("#id_password", "pw")
        page.click("input[type=submit]")
        box = page.locator("#outbox-attention")
        expect(box).to_contain_text("Background work needs attention")
        expect(box).to_contain_text("the oldest for 12 min")

        box.get_by_role("link", name="1 run late").click()
        expect(page).to_have_url(re.compile(r"/admin/scenarios/actionrun/\?late=yes"))
        expect(page.locator(".messagelist")).to_contain_text("1 run(s) are late")
        row = page.locator("#result_list tbody tr")
        expect(row).to_have_count(1)
        expect(row).to_contain_text("Tell the responsible")
        expect(row).to_contain_text("late by 12 min")

        row.locator(f"a[href$='/admin/calls/call/{call.pk}/change/']").click()
        expect(page).to_have_url(re.compile(rf"/admin/calls/call/{call.pk}/change/"))
        expect(page.locator("#runs")).to_contain_text("late: due 12")
