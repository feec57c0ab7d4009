"""The alerts in the tenant admin: only admins configure them (users picked by name), support
staff read the incidents and their history, filtered by state and kind."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from django.utils import timezone

from alerts.models import AlertSettings, Incident
from alerts.services import alerts_check
from alerts.tests.conftest import EWA, MARTA, heartbeat
from calls.models import Device
from calls.services import SUPPORT_GROUP, support_group_ensure
from scenarios.models import OfficeHours
from scenarios.tests.e2e import Phone
from tenants.models import Tenant, TenantSchedule


def _login(user: User) -> Client:
    client = Client(HTTP_HOST="alpha.localhost")
    client.force_login(user)
    return client


@pytest.fixture
def admin_client(alpha: Tenant) -> Client:
    return _login(User.objects.create_superuser("boss", password="pw"))


@pytest.fixture
def support_client(alpha: Tenant) -> Client:
    support_group_ensure()
    user = User.objects.create_user("helpdesk", password="pw", is_staff=True)
    user.groups.add(Group.objects.get(name=SUPPORT_GROUP))
    return _login(user)


FORM = {
    "email": "",
    "device_silent": "on",
    "device_silent_minutes": "30",
    "runs_failed": "on",
    "bitrix24_connection": "on",
    "portal_down_minutes": "10",
    "broken_config": "on",
    "missed_summary": "on",
}


def test_an_admin_picks_who_is_alerted_by_name(alpha_portal: Any, admin_client: Client) -> None:
    response = admin_client.get("/admin/alerts/alertsettings/")
    assert response.status_code == 302
    page = response["Location"]
    assert admin_client.get(page).status_code == 200
    saved = admin_client.post(page, {**FORM, "user_ids": "Ewa Lewandowska, marta nowak"})
    assert saved.status_code == 302, saved.content.decode()[:2000]
    row = AlertSettings.objects.get()
    assert row.user_ids == [EWA, MARTA]
    assert TenantSchedule.objects.get(tenant__schema_name="alpha").alerts
    shown = admin_client.get(page).content.decode()
    assert "Ewa Lewandowska (#9), Marta Nowak (#5)" in shown

    refused = admin_client.post(page, {**FORM, "user_ids": "Ewa Lewandowska, Jan Nieznany"})
    assert refused.status_code == 200
    assert "Jan Nieznany" in refused.content.decode()
    refused = admin_client.post(page, {**FORM, "user_ids": "9", "device_silent_minutes": "0"})
    assert refused.status_code == 200
    assert AlertSettings.objects.get().user_ids == [EWA, MARTA]  # nothing changed
    assert AlertSettings.objects.get().device_silent_minutes == 30

    nobody = admin_client.post(page, {**FORM, "user_ids": ""}, follow=True)
    assert "No one is alerted" in nobody.content.decode()
    assert not TenantSchedule.objects.get(tenant__schema_name="alpha").alerts


def test_support_reads_incidents_but_not_the_settings(
    alpha_portal: Any,
    support_client: Client,
    admin_client: Client,
    reception: tuple[Device, Phone],
) -> None:
    OfficeHours.objects.all().delete()
    row = AlertSettings.objects.create(user_ids=[EWA])
    device, phone = reception
    heartbeat(phone)
    Device.objects.filter(pk=device.pk).update(last_seen_at=timezone.now() - timedelta(minutes=45))
    alerts_check()
    incident = Incident.objects.get()

    assert support_client.get("/admin/alerts/alertsettings/").status_code == 403
    assert support_client.get(f"/admin/alerts/alertsettings/{row.pk}/change/").status_code == 403
    listing = support_client.get("/admin/alerts/incident/")
    assert listing.status_code == 200
    text = listing.content.decode()
    assert "The phone Reception (+48500100200) has been silent since" in text
    page = support_client.get(f"/admin/alerts/incident/{incident.pk}/change/").content.decode()
    assert "notice sent" in page  # the history
    assert "Bitrix24 users: Ewa Lewandowska (#9)" in page
    assert 'name="_save"' not in page  # read-only

    heartbeat(phone)  # heard from again
    alerts_check()
    Device.objects.filter(pk=device.pk).update(last_seen_at=timezone.now() - timedelta(minutes=45))
    alerts_check()  # silent again: a second incident
    for query, expected in [
        ("state=open", 1),
        ("state=cleared", 1),
        ("kind=device_silent", 2),
        ("kind=runs_failed", 0),
    ]:
        response = admin_client.get(f"/admin/alerts/incident/?{query}")
        assert response.status_code == 200
        assert response.context["cl"].result_count == expected, query


def test_the_home_page_lists_the_alerts_by_job(admin_client: Client) -> None:
    home = admin_client.get("/admin/").content.decode()
    assert "/admin/alerts/incident/" in home
    assert "/admin/alerts/alertsettings/" in home


def test_a_phone_through_the_bridge_shows_in_the_list(
    alpha_portal: Any, admin_client: Client, reception: tuple[Device, Phone]
) -> None:
    OfficeHours.objects.all().delete()
    AlertSettings.objects.create(user_ids=[EWA])
    device, phone = reception
    heartbeat(phone)
    Device.objects.filter(pk=device.pk).update(last_seen_at=timezone.now() - timedelta(minutes=31))
    alerts_check()
    text = admin_client.get("/admin/alerts/incident/?state=open").content.decode()
    assert "Reception" in text
