"""The Reports pages of the tenant admin: who may read them, what they show, their CSV."""

from __future__ import annotations

import csv
import io
import re
from datetime import datetime, time, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.test import Client
from django.utils import timezone

from calls.models import Call, Device
from calls.services import SUPPORT_GROUP, support_group_ensure
from calls.tests.conftest import Bridge
from crm.models import Bitrix24Connection
from reports.tests.conftest import WARSAW, Spec, login, place
from scenarios.models import OfficeHours
from tenants.models import Tenant

PAGES = ["overviewreport", "missedhoursreport", "notreturnedreport", "callbackreport", "teamreport"]
A, B = "+48601111111", "+48602222222"
CALLS = [
    # 23:30 UTC on Friday 20 November: Saturday 00:30 in Warsaw.
    Spec("m-1", "marta", "incoming", A, datetime(2026, 11, 21, 0, 30), "missed", ring=20),
    Spec("a-1", "ewa", "incoming", B, datetime(2026, 11, 21, 10, 0), "answered", ring=7, talk=90),
    Spec("m-2", "ewa", "incoming", B, datetime(2026, 11, 21, 11, 0), "no_answer", ring=30),
    Spec("o-1", "marta", "outgoing", B, datetime(2026, 11, 21, 11, 10), "answered", talk=30),
]
SATURDAY = "period=custom&first=2026-11-21&last=2026-11-21"


@pytest.fixture
def placed(marta: tuple[Device, Bridge], ewa: tuple[Device, Bridge]) -> dict[str, Device]:
    OfficeHours.objects.all().delete()
    for weekday in range(5):
        OfficeHours.objects.create(weekday=weekday, opens_at=time(9), closes_at=time(17))
    place(CALLS, {"marta": marta[1], "ewa": ewa[1]})
    return {"marta": marta[0], "ewa": ewa[0]}


def page(client: Client, name: str, query: str = SATURDAY) -> str:
    response = client.get(f"/admin/reports/{name}/?{query}")
    assert response.status_code == 200
    return response.content.decode()


def export(client: Client, name: str, table: str, query: str = SATURDAY) -> list[list[str]]:
    response = client.get(f"/admin/reports/{name}/export.csv?{query}&table={table}")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    content = b"".join(response.streaming_content)  # type: ignore[attr-defined]
    assert content.startswith(b"\xef\xbb\xbf")  # UTF-8 BOM: Excel (Polish too) reads it right
    return list(csv.reader(io.StringIO(content.decode("utf-8-sig"))))


def cell(html: str, label: str) -> str:
    found = re.search(rf'<th scope="row">{re.escape(label)}</th><td class="number">([^<]*)<', html)
    assert found, label
    return found.group(1)


def test_each_report_opens_with_its_period_and_its_chart(admin_client: Client, placed: Any) -> None:
    for name in PAGES:
        html = page(admin_client, name)
        assert 'id="report-period"' in html
        assert "Nov. 21, 2026" in html
        assert "<script" not in html.split('id="content-main"')[1]  # nothing for the CSP to stop
    assert page(admin_client, "overviewreport").count('<svg class="report-chart') == 1
    assert page(admin_client, "missedhoursreport").count('class="report-chart heat-map"') == 1


def test_the_overview_shows_the_totals_of_the_period(admin_client: Client, placed: Any) -> None:
    html = page(admin_client, "overviewreport")
    assert cell(html, "Calls") == "4"
    assert cell(html, "Missed") == "2"
    assert cell(html, "Incoming answered") == "1"
    assert cell(html, "Answer rate (incoming)") == "33.3%"  # 1 of 3 incoming
    assert cell(html, "Talk time") == "2 min 00 s"  # 90 + 30 s
    assert cell(html, "Average time to answer") == "7 s"
    assert "2 missed calls not returned" not in html  # m-2 was called back (o-1)
    assert "1 missed call not returned" in html


def test_the_default_period_is_the_last_7_days(admin_client: Client, placed: Any) -> None:
    html = page(admin_client, "overviewreport", "")
    assert '<option value="7d" selected>' in html


def test_a_bad_custom_range_is_told_and_shows_no_figures(admin_client: Client, placed: Any) -> None:
    html = page(admin_client, "overviewreport", "period=custom&first=2026-11-21&last=2026-11-01")
    assert "The range ends before it begins" in html
    assert 'id="report-totals"' not in html
    html = page(admin_client, "teamreport", "period=custom&first=2026-11-21")
    assert "A custom range needs both its first and its last day." in html
    html = page(admin_client, "overviewreport", "period=custom&first=2025-01-01&last=2026-11-21")
    assert "A range is at most 366 days long." in html
    assert "Select a valid choice" in page(admin_client, "overviewreport", "line=999999")
    assert "Enter a valid date" in page(admin_client, "overviewreport", "period=custom&first=x")
    response = admin_client.get(
        "/admin/reports/overviewreport/export.csv?period=custom&first=2026-11-21&last=2026-11-01"
    )
    assert response.status_code == 400
    assert "The range ends before it begins" in response.content.decode()
    assert (
        admin_client.get(f"/admin/reports/overviewreport/export.csv?{SATURDAY}&table=nope")
    ).status_code == 404


def test_the_line_and_agent_filters_pick_by_name(
    admin_client: Client, placed: dict[str, Device]
) -> None:
    html = page(admin_client, "teamreport")
    assert '<option value="9">Ewa Lewandowska (#9)</option>' in html
    assert f'<option value="{placed["ewa"].pk}">Ewa&#x27;s phone</option>' in html
    on_ewa = page(admin_client, "overviewreport", f"{SATURDAY}&line={placed['ewa'].pk}")
    assert cell(on_ewa, "Calls") == "2"
    by_marta = page(admin_client, "overviewreport", f"{SATURDAY}&agent=5")
    assert cell(by_marta, "Calls") == "2"
    assert cell(by_marta, "Outgoing") == "1"


def test_not_returned_lists_the_call_with_links_and_exports_local_time(
    admin_client: Client, placed: Any
) -> None:
    call = Call.objects.get(call_id="m-1")
    html = page(admin_client, "notreturnedreport")
    assert html.count('class="not-returned-row"') == 1
    assert f'href="/admin/calls/call/{call.pk}/change/"' in html
    assert "Marta Nowak (#5)" in html
    assert "no callback task" in html  # the lookup, and so the scenario, has not run here

    rows = export(admin_client, "notreturnedreport", "calls")
    assert rows[0][:3] == ["Missed at", "Waiting (minutes)", "Number"]
    assert len(rows) == 2
    missed_at, _waiting, number, *_rest, call_page = rows[1]
    assert missed_at == "2026-11-21T00:30:00+01:00"  # 23:30 UTC, on the tenant's clock
    assert number == A
    assert call_page == f"http://alpha.localhost/admin/calls/call/{call.pk}/change/"


def test_each_table_exports_to_csv(admin_client: Client, placed: dict[str, Device]) -> None:
    totals = dict(export(admin_client, "overviewreport", "totals")[1:])
    assert totals["Calls"] == "4"
    assert totals["Talk time (s)"] == "120"
    assert export(admin_client, "overviewreport", "days") == [
        ["Day", "Calls", "Answered", "Missed"],
        ["2026-11-21", "4", "2", "2"],
    ]
    hours = export(admin_client, "missedhoursreport", "hours")
    assert hours[0][:3] == ["Weekday", "00", "01"]
    saturday = hours[6]
    assert saturday[0] == "Sat"
    assert [int(n) for n in saturday[1:]] == [1] + [0] * 10 + [1] + [0] * 12  # 00:30, 11:00
    summary = dict(export(admin_client, "callbackreport", "summary")[1:])
    returned = (summary["Missed calls"], summary["Returned"], summary["Not returned"])
    assert returned == ("2", "1", "1")
    assert summary["Median time to reach the caller (s)"] == "605.0"  # 11:00 -> 11:10:05
    agents = export(admin_client, "teamreport", "agents")
    assert agents == [
        ["Agent", "Calls", "Answered", "Missed", "Rejected", "Returned", "Talk time (s)"],
        ["Ewa Lewandowska (#9)", "2", "1", "1", "0", "1", "90"],
        ["Marta Nowak (#5)", "2", "1", "1", "0", "0", "30"],
    ]
    lines = export(admin_client, "teamreport", "lines")
    assert [row[0] for row in lines[1:]] == ["Ewa's phone", "Marta's phone"]


def test_support_reads_reports_a_staff_member_without_the_right_does_not(
    support_client: Client, placed: Any, alpha: Tenant
) -> None:
    for name in PAGES:
        assert support_client.get(f"/admin/reports/{name}/?{SATURDAY}").status_code == 200
    assert export(support_client, "overviewreport", "totals")[1] == ["Calls", "4"]
    clerk = User.objects.create_user("clerk", password="pw", is_staff=True)
    clerk_client = login(clerk)
    for name in PAGES:
        assert clerk_client.get(f"/admin/reports/{name}/").status_code == 403
        assert clerk_client.get(f"/admin/reports/{name}/export.csv").status_code == 403
    outsider = login(User.objects.create_user("outsider", password="pw"))  # not staff
    response = outsider.get("/admin/reports/overviewreport/")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]
    assert outsider.get("/admin/reports/overviewreport/export.csv").status_code == 302
    # No page to add, change or delete a report.
    assert support_client.get("/admin/reports/overviewreport/add/").status_code == 404
    assert support_client.get("/admin/reports/overviewreport/1/change/").status_code == 404


def test_the_support_group_and_a_provisioned_tenant_have_the_reports_rights(alpha: Tenant) -> None:
    wanted = {f"view_{name}" for name in PAGES}
    group = Group.objects.get(name=SUPPORT_GROUP)  # as the data migration left it
    granted = set(group.permissions.filter(content_type__app_label="reports").values_list(
        "codename", flat=True))  # fmt: skip
    assert granted == wanted
    group.permissions.clear()
    support_group_ensure()
    assert wanted <= set(group.permissions.values_list("codename", flat=True))
    assert (
        set(
            Permission.objects.filter(content_type__app_label="reports").values_list(
                "codename", flat=True
            )
        )
        == wanted
    )  # view only: there is nothing to add, change or delete


def test_the_admin_has_a_reports_section_between_calls_and_setup(
    support_client: Client, placed: Any
) -> None:
    html = support_client.get("/admin/").content.decode()
    sections = re.findall(r'<caption[^>]*>\s*<a href="[^"]*"[^>]*>([^<]+)</a>', html)
    assert sections.index("Reports") == sections.index("Calls") + 1
    assert sections.index("Setup") == sections.index("Reports") + 1
    for name in PAGES:
        assert f'href="/admin/reports/{name}/"' in html
    assert support_client.get("/admin/reports/").status_code == 200  # the section's own page


def test_the_home_links_to_the_missed_calls_not_returned(
    support_client: Client,
    marta: tuple[Device, Bridge],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from calls.api import serializers

    # On today's clock: "the last 7 days" are the real ones here.
    monkeypatch.setattr(serializers, "_server_now", timezone.now)
    hour_ago = timezone.now().astimezone(WARSAW).replace(tzinfo=None) - timedelta(hours=1)
    place([Spec("today", "marta", "incoming", A, hour_ago, "missed")], {"marta": marta[1]})
    # The onboarding done (as calls' own glance test sets it up): the glance shows instead.
    Bitrix24Connection.objects.update_or_create(
        singleton=1,
        defaults={
            "webhook_url": "https://portal.example/rest/1/secret/",
            "last_ok_at": timezone.now(),
            "directory_synced_at": timezone.now(),
        },
    )
    Call.objects.filter(call_id="today").update(b24_finished_at=timezone.now())

    html = support_client.get("/admin/").content.decode()
    glance = re.search(r'<div class="module" id="glance".*?</table>', html, re.S)
    assert glance, re.findall(r'data-done="no">[^\n]*', html)
    assert '<a href="/admin/reports/notreturnedreport/?period=7d">' in glance.group(0)
    assert "1 missed call not returned in the last 7 days" in glance.group(0)
    clerk = login(User.objects.create_user("clerk", password="pw", is_staff=True))
    assert "notreturnedreport" not in clerk.get("/admin/").content.decode()  # not theirs


def test_the_tabs_keep_the_period_and_filters(admin_client: Client, placed: Any) -> None:
    html = page(admin_client, "overviewreport", f"{SATURDAY}&agent=5")
    query = f"{SATURDAY}&agent=5".replace("&", "&amp;")
    for name in PAGES:
        assert f'href="/admin/reports/{name}/?{query}"' in html


def test_a_report_follows_the_language_of_the_admin(admin_client: Client, placed: Any) -> None:
    html = admin_client.get(
        f"/admin/reports/overviewreport/?{SATURDAY}", HTTP_ACCEPT_LANGUAGE="pl"
    ).content.decode()
    assert 'lang="pl"' in html
    assert "Start</a>" in html  # Django's own Polish ("Home"); SIMtrix's is in locale/
    assert "21 lis 2026" in html or "21 listopada 2026" in html  # the period, in Polish
