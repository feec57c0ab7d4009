"""A phone that goes silent in office hours: alerted once (Bitrix24 and email), not again while
it lasts, cleared with a "back" notice when the phone speaks again. Not at night, not before
N minutes of office hours, not for a revoked phone."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.core import mail
from django.utils import timezone

from alerts.models import AlertSettings, Incident
from alerts.services import alerts_check
from alerts.tests.conftest import EWA, heartbeat, history, local, notifications_to
from calls.models import Device
from calls.services import device_revoke
from scenarios.models import Holiday, OfficeHours
from scenarios.tests.e2e import Phone

pytestmark = pytest.mark.usefixtures("always_open")


def _silent_for(device: Device, minutes: int) -> None:
    """Time passes: the phone's last sign of life was `minutes` ago."""
    Device.objects.filter(pk=device.pk).update(
        last_seen_at=timezone.now() - timedelta(minutes=minutes)
    )


def test_a_silent_phone_is_alerted_once_and_cleared_when_it_speaks_again(
    alpha_portal: Any, alerts_on: AlertSettings, reception: tuple[Device, Phone]
) -> None:
    device, phone = reception
    heartbeat(phone)  # through the bridge: the phone is seen
    assert alerts_check() == {}  # heard from just now: nothing to say
    assert not Incident.objects.exists()

    _silent_for(device, 31)  # the default threshold is 30 minutes
    device.refresh_from_db()
    assert device.last_seen_at is not None
    silent_since = local(device.last_seen_at)
    alerts_check()
    incident = Incident.objects.get()
    assert (incident.kind, incident.subject, incident.is_open) == (
        "device_silent",
        "Reception",
        True,
    )
    [note] = notifications_to(alpha_portal, EWA, "Reception")
    assert note["MESSAGE"].startswith("SIMtrix alert: The phone Reception (+48500100200)")
    assert silent_since in note["MESSAGE"]
    assert f"/admin/alerts/incident/{incident.pk}/change/" in note["MESSAGE"]
    [email] = mail.outbox
    assert email.to == ["boss@example.com"]
    assert email.subject.startswith("SIMtrix alert: The phone Reception")

    # Checked again (and again) while it lasts: nothing new.
    alerts_check()
    alerts_check()
    assert Incident.objects.count() == 1
    assert len(notifications_to(alpha_portal, EWA)) == 1
    assert len(mail.outbox) == 1
    assert history(incident.pk) == [
        ("opened", "", ""),
        ("notice_sent", "opened", "bitrix24"),
        ("notice_sent", "opened", "email"),
    ]

    heartbeat(phone)  # it speaks again
    alerts_check()
    incident.refresh_from_db()
    assert not incident.is_open
    back = notifications_to(alpha_portal, EWA, "is back")
    assert len(back) == 1
    assert back[0]["MESSAGE"].startswith("SIMtrix, resolved: The phone Reception (+48500100200)")
    assert len(notifications_to(alpha_portal, EWA)) == 2  # the alert stays, the notice is new
    assert [m.subject.split(":")[0] for m in mail.outbox] == ["SIMtrix alert", "SIMtrix, resolved"]
    assert history(incident.pk)[-3:] == [
        ("cleared", "", ""),
        ("notice_sent", "cleared", "bitrix24"),
        ("notice_sent", "cleared", "email"),
    ]

    alerts_check()  # nothing more
    assert len(notifications_to(alpha_portal, EWA)) == 2
    assert len(mail.outbox) == 2
    assert Incident.objects.count() == 1

    _silent_for(device, 45)  # silent again later: a new incident, a new alert
    alerts_check()
    assert Incident.objects.filter(cleared_at__isnull=True).count() == 1
    assert Incident.objects.count() == 2
    assert len(notifications_to(alpha_portal, EWA, "SIMtrix alert")) == 2


def test_silence_counts_only_office_hours(
    alpha_portal: Any, alerts_on: AlertSettings, reception: tuple[Device, Phone]
) -> None:
    device, phone = reception
    heartbeat(phone)
    _silent_for(device, 120)
    for weekday in range(7):  # open all day, every day...
        OfficeHours.objects.create(weekday=weekday, opens_at=time(0), closes_at=time(0))
    today = timezone.now().astimezone(ZoneInfo("Europe/Warsaw")).date()
    Holiday.objects.create(date=today, name="Office closed")  # ...but today
    alerts_check()  # closed today: a phone off is no alert
    assert not Incident.objects.exists()
    Holiday.objects.all().delete()
    alerts_check()  # open again: it has been silent for two hours
    assert Incident.objects.filter(kind="device_silent").count() == 1
    Incident.objects.all().delete()

    alerts_on.device_silent_minutes = 150  # longer than it has been silent
    alerts_on.save()
    alerts_check()
    assert not Incident.objects.exists()
    assert len(notifications_to(alpha_portal, EWA)) == 1  # the two hours' only
    assert len(mail.outbox) == 1


def test_a_phone_that_never_spoke_is_not_watched_and_a_revoked_one_is_let_go(
    alpha_portal: Any, alerts_on: AlertSettings, reception: tuple[Device, Phone]
) -> None:
    device, phone = reception
    alerts_check()  # registered, never seen: onboarding, not an alert
    assert not Incident.objects.exists()
    heartbeat(phone)
    _silent_for(device, 40)
    alerts_check()
    incident = Incident.objects.get()
    device_revoke(device=device)
    alerts_check()
    incident.refresh_from_db()
    assert not incident.is_open
    [gone] = notifications_to(alpha_portal, EWA, "was revoked")
    assert "no longer watched" in gone["MESSAGE"]


def test_a_threshold_in_office_hours_spans_the_night(
    alerts_on: AlertSettings, reception: tuple[Device, Phone], alpha_portal: Any
) -> None:
    """Silent since 17:50 on a weekday, office 09:00-18:00: at 09:15 the next day it has been
    silent for 25 minutes of office hours (not 15 hours); at 09:25, 35."""
    for weekday in range(7):
        OfficeHours.objects.create(weekday=weekday, opens_at="09:00", closes_at="18:00")
    device, phone = reception
    heartbeat(phone)
    zone = ZoneInfo("Europe/Warsaw")
    day = date(2026, 11, 18)  # a Wednesday
    last_seen = datetime(2026, 11, 18, 17, 50, tzinfo=zone)
    Device.objects.filter(pk=device.pk).update(last_seen_at=last_seen)
    next_day = day + timedelta(days=1)
    alerts_check(now=datetime.combine(next_day, time(9, 15), tzinfo=zone))
    assert not Incident.objects.exists()
    alerts_check(now=datetime.combine(next_day, time(9, 25), tzinfo=zone))
    recorded = datetime.fromisoformat(Incident.objects.get().details["last_seen_at"])
    assert recorded == last_seen


def test_a_polish_tenant_is_alerted_in_polish(
    alpha_portal: Any, alerts_on: AlertSettings, reception: tuple[Device, Phone]
) -> None:
    """The notices speak the tenant's language (what SIMtrix writes into Bitrix24), whatever
    the worker's own."""
    from tenants.memo import tenant_memo_clear
    from tenants.middleware import tenant_cache_clear
    from tenants.models import Tenant

    Tenant.objects.filter(schema_name="alpha").update(language="pl")
    tenant_memo_clear()
    tenant_cache_clear()
    device, phone = reception
    heartbeat(phone)
    _silent_for(device, 31)
    alerts_check()
    [note] = notifications_to(alpha_portal, EWA, "Reception")
    assert note["MESSAGE"].startswith("Alert SIMtrix: Telefon Reception (+48500100200) milczy od")
    assert mail.outbox[0].subject.startswith("Alert SIMtrix: Telefon Reception")
