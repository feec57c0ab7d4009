"""A manager reads the reports in Chromium: from the admin's home to each report, the period
changed to a custom range, a line picked, each table exported; under the admin's
Content-Security-Policy (nothing refused). Screenshots in var/screenshots/."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from django_tenants.utils import schema_context

from calls.models import Call, Device
from calls.services import device_register
from calls.tests.conftest import Bridge
from crm.models import Bitrix24User
from reports.tests.conftest import Spec, place
from scenarios.tests.e2e import alpha_wipe

pytestmark = pytest.mark.browser
SHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"
A, B = "+48601111111", "+48602222222"
CALLS = [
    Spec("m-1", "marta", "incoming", A, datetime(2026, 11, 21, 0, 30), "missed", ring=20),
    Spec("a-1", "ewa", "incoming", B, datetime(2026, 11, 21, 10, 0), "answered", ring=7, talk=90),
    Spec("m-2", "ewa", "incoming", B, datetime(2026, 11, 21, 11, 0), "no_answer", ring=30),
    Spec("o-1", "marta", "outgoing", B, datetime(2026, 11, 21, 11, 10), "answered", talk=30),
]


def _wipe() -> None:
    alpha_wipe()
    with schema_context("alpha"):
        User.objects.filter(username="report-reader").delete()


def _csv(download: Any) -> list[list[str]]:
    content = Path(download.path()).read_bytes()
    assert content.startswith(b"\xef\xbb\xbf")
    return list(csv.reader(io.StringIO(content.decode("utf-8-sig"))))


def test_a_manager_reads_each_report_filters_it_and_exports_it(
    committed_db: Callable, web_server: int, browser: Callable[[], Any]
) -> None:
    from playwright.sync_api import expect

    committed_db(_wipe)
    _wipe()
    with schema_context("alpha"):
        User.objects.create_superuser("report-reader", password="pw")
        for user_id, name in ((5, "Marta Nowak"), (9, "Ewa Lewandowska")):
            Bitrix24User.objects.update_or_create(
                id=user_id, defaults={"name": name, "active": True, "seen_at": timezone.now()}
            )
        phones: dict[str, Bridge] = {}
        lines: dict[str, Device] = {}
        for key, name, number, user in (
            ("marta", "Marta's phone", "+48500100200", 5),
            ("ewa", "Ewa's phone", "+48500100300", 9),
        ):
            lines[key], token = device_register(
                name=name, phone_number=number, bitrix24_user_id=user, country="PL"
            )
            phones[key] = Bridge(token)
    place(CALLS, phones)
    with schema_context("alpha"):
        missed_page = f"/admin/calls/call/{Call.objects.get(call_id='m-1').pk}/change/"
    SHOTS.mkdir(parents=True, exist_ok=True)
    base = f"http://alpha.localhost:{web_server}"
    refused: list[str] = []

    with browser() as page:
        page.on(
            "console",
            lambda message: (
                refused.append(message.text) if "Content Security Policy" in message.text else None
            ),
        )
        page.goto(f"{base}/admin/")
        page.fill("#id_username", "report-reader")
        page.fill("#id_password", "pw")
        page.click("input[type=submit]")
        # From the home page's Reports section.
        page.get_by_role("link", name="Overview", exact=True).click()
        expect(page.locator("h1")).to_have_text("Overview")
        tabs = page.locator(".report-tabs")
        expect(page.locator("#id_period")).to_have_value("7d")  # the last 7 days: none of these

        # The period: a custom range, the Saturday of the calls.
        page.select_option("#id_period", "custom")
        page.fill("#id_first", "2026-11-21")
        page.fill("#id_last", "2026-11-21")
        page.click("#report-apply")
        expect(page.locator("#report-period")).to_contain_text("Nov. 21, 2026")
        totals = page.locator("#report-totals")
        expect(totals.locator("tr", has_text="Calls").first).to_contain_text("4")
        expect(page.locator("svg.report-chart")).to_be_visible()
        page.screenshot(path=str(SHOTS / "reports-overview.png"), full_page=True)

        # A line: Ewa's phone.
        page.select_option("#id_line", label="Ewa's phone")
        page.click("#report-apply")
        expect(totals.locator("tr", has_text="Calls").first).to_contain_text("2")
        with page.expect_download() as download:
            page.locator("#report-totals a.report-export").click()
        assert ["Calls", "2"] in _csv(download.value)

        # Each report keeps the period and the line; each exports.
        tabs.get_by_role("link", name="Missed calls by hour").click()
        expect(page.locator("svg.heat-map")).to_be_visible()
        expect(page.locator("#id_line")).to_have_value(str(lines["ewa"].pk))
        with page.expect_download() as download:
            page.locator("a.report-export").click()
        saturday = _csv(download.value)[6]
        assert saturday[0] == "Sat"
        assert saturday[12] == "1"  # m-2 at 11:00, Ewa's; m-1 is Marta's
        page.screenshot(path=str(SHOTS / "reports-missed-by-hour.png"), full_page=True)

        tabs.get_by_role("link", name="Agents and lines").click()
        expect(page.locator("#report-agents")).to_contain_text("Ewa Lewandowska (#9)")
        page.select_option("#id_line", "")  # every line again
        page.click("#report-apply")
        expect(page.locator("#report-lines")).to_contain_text("Marta's phone")
        with page.expect_download() as download:
            page.locator("#report-agents a.report-export").click()
        agents = _csv(download.value)
        assert agents[1] == ["Ewa Lewandowska (#9)", "2", "1", "1", "0", "1", "90"]
        page.screenshot(path=str(SHOTS / "reports-team.png"), full_page=True)

        tabs.get_by_role("link", name="Callbacks").click()
        expect(page.locator("#report-callbacks")).to_contain_text("Returned")
        with page.expect_download() as download:
            page.locator("#report-callbacks a.report-export").click()
        assert ["Returned", "1"] in _csv(download.value)

        tabs.get_by_role("link", name="Missed calls not returned").click()
        rows = page.locator("tr.not-returned-row")
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text(A)
        page.screenshot(path=str(SHOTS / "reports-not-returned.png"), full_page=True)
        with page.expect_download() as download:
            page.locator("a.report-export").click()
        exported = _csv(download.value)
        assert exported[1][0] == "2026-11-21T00:30:00+01:00"
        # The call's page, from the list.
        rows.first.locator("a").first.click()
        expect(page).to_have_url(f"{base}{missed_page}")
    assert refused == []
