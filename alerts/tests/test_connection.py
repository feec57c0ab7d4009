"""The Bitrix24 connection failing, against the sandbox portal: credentials refused, a scope
missing, telephony refused, the portal down for longer than N minutes; each alerted once and
cleared with a notice when it works again (found by the check's own probe when nothing else
calls the portal)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core import mail
from django.utils import timezone

from alerts.models import AlertSettings, Incident
from alerts.services import alerts_check
from alerts.tests.conftest import EWA, history, local, notifications_to, run_due
from bitrix24_sandbox.core import ALL_SCOPES
from calls.models import Call, Device
from crm.models import Bitrix24Connection
from crm.services import connection_set_webhook, connection_test
from scenarios.tests.e2e import Phone

pytestmark = pytest.mark.usefixtures("always_open")


def _row() -> Bitrix24Connection:
    return Bitrix24Connection.objects.get(singleton=1)


def test_refused_credentials_are_emailed_and_the_recovery_told_in_bitrix24(
    alpha_portal: Any, alerts_on: AlertSettings
) -> None:
    good = _row().webhook_url
    connection_set_webhook(webhook_url=good.replace("/rest/1/", "/rest/1/x").rstrip("/") + "x/")
    assert not connection_test().ok  # the admin's test button, or any call's request
    assert _row().last_error_code == "INVALID_CREDENTIALS"

    alerts_check()
    incident = Incident.objects.get(kind="bitrix24_auth")
    [email] = mail.outbox  # Bitrix24 cannot carry it: it refuses SIMtrix
    assert email.subject.startswith("SIMtrix alert: Bitrix24 refuses SIMtrix's connection")
    assert ("notice_failed", "opened", "bitrix24") in history(incident.pk)
    alerts_check()
    assert len(mail.outbox) == 1
    assert Incident.objects.filter(kind="bitrix24_auth").count() == 1

    connection_set_webhook(webhook_url=good)  # fixed; nothing else calls the portal
    alerts_check(now=timezone.now() + timedelta(minutes=1))  # the probe finds it works
    incident.refresh_from_db()
    assert not incident.is_open
    [back] = notifications_to(alpha_portal, EWA, "works again")
    assert back["MESSAGE"].startswith("SIMtrix, resolved: SIMtrix's Bitrix24 connection works")
    assert len(mail.outbox) == 2
    assert not notifications_to(alpha_portal, EWA, "SIMtrix alert")


def test_a_portal_down_longer_than_the_threshold_is_alerted_and_its_return_told(
    alpha_portal: Any, alerts_on: AlertSettings
) -> None:
    assert alerts_on.portal_down_minutes == 10
    alpha_portal.set_fault("down", mode="http503")
    connection_test()
    assert _row().last_error_code == "SERVICE_UNAVAILABLE"
    t0 = timezone.now()

    alerts_check(now=t0)
    incident = Incident.objects.get(kind="bitrix24_down")
    assert incident.alert_at == t0 + timedelta(minutes=10)
    alerts_check(now=t0 + timedelta(minutes=5))  # probed: still down, not long enough
    assert mail.outbox == []
    alerts_check(now=t0 + timedelta(minutes=11))
    [email] = mail.outbox
    assert email.subject.startswith("SIMtrix alert: The Bitrix24 portal")
    assert local(t0) in email.body
    assert Incident.objects.filter(kind="bitrix24_down").count() == 1

    alpha_portal.clear_faults()
    alerts_check(now=t0 + timedelta(minutes=12))
    incident.refresh_from_db()
    assert not incident.is_open
    [back] = notifications_to(alpha_portal, EWA, "answers again")
    assert f"down from {local(t0)} until {local(t0 + timedelta(minutes=12))}" in back["MESSAGE"]
    assert len(mail.outbox) == 2
    alerts_check(now=t0 + timedelta(minutes=13))
    assert len(mail.outbox) == 2


def test_a_short_outage_tells_nobody(alpha_portal: Any, alerts_on: AlertSettings) -> None:
    alpha_portal.set_fault("down", mode="http503")
    connection_test()
    t0 = timezone.now()
    alerts_check(now=t0)
    alpha_portal.clear_faults()
    alerts_check(now=t0 + timedelta(minutes=3))
    incident = Incident.objects.get(kind="bitrix24_down")
    assert not incident.is_open
    assert history(incident.pk) == [("opened", "", ""), ("cleared", "", "")]
    assert mail.outbox == []
    assert not notifications_to(alpha_portal, EWA)


def test_a_missing_scope_is_alerted_and_cleared_once_granted(
    alpha_portal: Any, alerts_on: AlertSettings
) -> None:
    good = _row().webhook_url
    limited = alpha_portal.add_webhook(1, scopes=[s for s in ALL_SCOPES if s != "telephony"])
    connection_set_webhook(webhook_url=limited)
    connection_test()

    alerts_check()
    incident = Incident.objects.get(kind="bitrix24_scope")
    [note] = notifications_to(alpha_portal, EWA, "lacks scopes")
    assert "telephony" in note["MESSAGE"]
    alerts_check()
    assert len(notifications_to(alpha_portal, EWA, "lacks scopes")) == 1

    connection_set_webhook(webhook_url=good)
    alerts_check(now=timezone.now() + timedelta(minutes=1))
    incident.refresh_from_db()
    assert not incident.is_open
    assert len(notifications_to(alpha_portal, EWA, "every scope it needs again")) == 1


def test_telephony_refused_is_alerted_until_a_call_is_logged_as_a_call(
    alpha_portal: Any, alerts_on: AlertSettings, reception: tuple[Device, Phone]
) -> None:
    _, phone = reception
    alpha_portal.control.set_webhook_telephony_denied(True)
    phone.call("refused", number="+48600111222", outcome="answered", talk=30)
    run_due()
    assert Call.objects.get(call_id="refused").b24_log_mode == Call.LogMode.ACTIVITY

    alerts_check()
    alerts_check()
    incident = Incident.objects.get(kind="bitrix24_telephony")
    assert len(notifications_to(alpha_portal, EWA, "refuses telephony")) == 1

    alpha_portal.control.set_webhook_telephony_denied(False)
    phone.call("accepted", number="+48600111222", outcome="answered", talk=30)
    run_due()
    assert Call.objects.get(call_id="accepted").b24_log_mode == Call.LogMode.TELEPHONY
    alerts_check()
    incident.refresh_from_db()
    assert not incident.is_open
    assert len(notifications_to(alpha_portal, EWA, "accepts SIMtrix's telephony again")) == 1
    assert [m.subject.split(":")[0] for m in mail.outbox] == ["SIMtrix alert", "SIMtrix, resolved"]
