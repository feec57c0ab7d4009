"""The check's own guarantees: one check at a time per tenant (a lease a dead worker's check
gives up by running out), one open incident per subject, a notice that could not go tried
again until it goes (and said so once in the history), an alert turned off closed quietly."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core import mail
from django.utils import timezone

from alerts.checks import Problem
from alerts.models import AlertSettings, Incident, IncidentEvent
from alerts.services import _open, alerts_check
from alerts.tests.conftest import EWA, heartbeat, history, notifications_to
from calls.models import Device
from scenarios.tests.e2e import Phone

pytestmark = pytest.mark.usefixtures("always_open")


def _silent(device: Device) -> None:
    Device.objects.filter(pk=device.pk).update(last_seen_at=timezone.now() - timedelta(minutes=45))


def test_a_check_waits_for_the_lease_of_another_and_takes_a_dead_ones_over(
    alpha_portal: Any, alerts_on: AlertSettings, reception: tuple[Device, Phone]
) -> None:
    device, phone = reception
    heartbeat(phone)
    _silent(device)
    AlertSettings.objects.update(checking_until=timezone.now() + timedelta(seconds=60))
    assert alerts_check() == {"busy": 1}  # another worker is checking
    assert not Incident.objects.exists()
    AlertSettings.objects.update(checking_until=timezone.now() - timedelta(seconds=1))
    assert alerts_check()["opened"] == 1  # that worker died: its lease ran out
    assert AlertSettings.objects.get().checking_until is None  # given back


def test_a_subject_has_one_open_incident_whoever_opens_it(alerts_on: AlertSettings) -> None:
    problem = Problem(kind="device_silent", key="device:1", subject="Reception", details={})
    now = timezone.now()
    assert _open(problem, now) == 1
    assert _open(problem, now) == 0  # a second check found the same: the constraint holds
    assert Incident.objects.count() == 1
    assert IncidentEvent.objects.filter(kind="opened").count() == 1


def test_a_notice_that_could_not_go_is_sent_by_a_later_check(
    alpha_portal: Any,
    alerts_on: AlertSettings,
    reception: tuple[Device, Phone],
    settings: Any,
) -> None:
    device, phone = reception
    heartbeat(phone)
    _silent(device)
    # Nobody listens on port 9: the mail server is down.
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", 9, 2
    alerts_check()
    alerts_check()
    incident = Incident.objects.get()
    assert history(incident.pk) == [
        ("opened", "", ""),
        ("notice_sent", "opened", "bitrix24"),
        ("notice_failed", "opened", "email"),  # said once, tried at every check
    ]
    assert Incident.objects.get().alert_pending
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    alerts_check()
    assert len(mail.outbox) == 1
    assert history(incident.pk)[-1] == ("notice_sent", "opened", "email")
    assert not Incident.objects.get().alert_pending
    assert len(notifications_to(alpha_portal, EWA)) == 1  # Bitrix24's went the first time


def test_an_alert_turned_off_closes_its_incidents_quietly(
    alpha_portal: Any, alerts_on: AlertSettings, reception: tuple[Device, Phone]
) -> None:
    device, phone = reception
    heartbeat(phone)
    _silent(device)
    alerts_check()
    incident = Incident.objects.get()
    alerts_on.device_silent = False
    alerts_on.save()
    alerts_check()
    incident.refresh_from_db()
    assert not incident.is_open
    assert not incident.recovery_pending
    assert len(notifications_to(alpha_portal, EWA)) == 1  # the alert only: no "resolved"
    assert len(mail.outbox) == 1
