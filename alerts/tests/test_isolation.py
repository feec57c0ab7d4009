"""Two tenants with alerts: each one's check sees only its own phones and tells only its own
people; the public fan-out names both, and a tenant without alerts is not even visited."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core import mail
from django.utils import timezone
from django_tenants.utils import schema_context

from alerts.models import AlertSettings, Incident
from alerts.services import alert_settings_ensure, alerts_check, alerts_schemas
from alerts.tests.conftest import EWA, heartbeat, notifications_to
from calls.models import Device
from calls.services import device_register
from scenarios.models import OfficeHours
from scenarios.tests.e2e import Phone
from tenants.models import Tenant, TenantSchedule


def test_another_tenants_incidents_never_mix(
    alpha_portal: Any, alerts_on: AlertSettings, reception: tuple[Device, Phone], beta: Tenant
) -> None:
    OfficeHours.objects.all().delete()
    _, alpha_phone = reception
    heartbeat(alpha_phone)
    Device.objects.update(last_seen_at=timezone.now() - timedelta(minutes=40))
    with schema_context("beta"):
        OfficeHours.objects.all().delete()
        row = alert_settings_ensure()
        row.email = "beta-boss@example.com"
        row.save()
        _, token = device_register(
            name="Beta front desk", phone_number="+48500999888", bitrix24_user_id=5, country="PL"
        )
        heartbeat(Phone(token, host="beta.localhost"))
        Device.objects.update(last_seen_at=timezone.now() - timedelta(minutes=40))
    assert set(alerts_schemas()) >= {"alpha", "beta"}

    alerts_check()  # alpha's
    with schema_context("beta"):
        alerts_check()
        beta_incidents = list(Incident.objects.values_list("subject", flat=True))
    alpha_incidents = list(Incident.objects.values_list("subject", flat=True))
    assert alpha_incidents == ["Reception"]
    assert beta_incidents == ["Beta front desk"]
    by_address = {tuple(m.to): m for m in mail.outbox}
    assert set(by_address) == {("boss@example.com",), ("beta-boss@example.com",)}
    assert "Reception" in by_address[("boss@example.com",)].body
    assert "Beta front desk" not in by_address[("boss@example.com",)].body
    assert "Beta front desk" in by_address[("beta-boss@example.com",)].body
    assert "Reception" not in by_address[("beta-boss@example.com",)].body
    assert "beta.localhost" in by_address[("beta-boss@example.com",)].body  # its own admin
    # Beta has no Bitrix24: alpha's portal heard only of alpha's phone.
    assert [n["MESSAGE"] for n in notifications_to(alpha_portal, EWA)] == [
        n["MESSAGE"] for n in notifications_to(alpha_portal, EWA, "Reception")
    ]
    assert len(notifications_to(alpha_portal, EWA)) == 1


def test_a_tenant_without_anyone_to_tell_is_not_checked(alpha: Tenant) -> None:
    row = alert_settings_ensure()  # every alert on by default, nobody to tell
    assert not row.enabled
    assert not TenantSchedule.objects.get(tenant=alpha).alerts
    assert "alpha" not in alerts_schemas()
    assert alerts_check() == {}
    row.user_ids = [EWA]
    row.save()
    assert TenantSchedule.objects.get(tenant=alpha).alerts
    assert "alpha" in alerts_schemas()
    row.device_silent = row.runs_failed = row.bitrix24_connection = False
    row.broken_config = row.missed_summary = False
    row.save()
    assert "alpha" not in alerts_schemas()
