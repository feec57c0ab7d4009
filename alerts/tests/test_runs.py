"""Runs that failed after their retries: one alert per action type and hour, however many calls
failed; a later failure in the same hour adds to it; retried and done, it is cleared."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from django.core import mail

from alerts.models import AlertSettings, Incident
from alerts.services import alerts_check
from alerts.tests.conftest import EWA, history, notifications_to, run_due
from calls.models import Device
from scenarios.models import ActionRun
from scenarios.outbox import run_retry
from scenarios.tests.e2e import Phone

pytestmark = pytest.mark.usefixtures("always_open")
FAILED = ActionRun.Status.FAILED


@pytest.fixture
def one_attempt(settings: Any) -> None:
    """A run is tried once before it fails (the default is a dozen over hours)."""
    settings.SIMTRIX_RUN_MAX_ATTEMPTS = 1


def _failed_by_type() -> Counter[str]:
    return Counter(ActionRun.objects.filter(status=FAILED).values_list("action_type", flat=True))


def test_failed_runs_are_one_alert_per_action_type_and_hour(
    alpha_portal: Any,
    alerts_on: AlertSettings,
    reception: tuple[Device, Phone],
    one_attempt: None,
) -> None:
    _, phone = reception
    alerts_on.bitrix24_connection = alerts_on.missed_summary = False  # about the runs only
    alerts_on.save()
    alpha_portal.set_fault("down", mode="http503")
    for n, number in enumerate(["+48600111222", "+48600111333", "+48600111444"]):
        phone.call(f"missed-{n}", number=number, outcome="missed")
    run_due()
    failed = _failed_by_type()
    assert failed["lookup_caller"] == 3  # three calls, the same step failed for each
    alpha_portal.clear_faults()

    alerts_check()
    incidents = {i.subject: i for i in Incident.objects.filter(kind="runs_failed")}
    assert set(incidents) == set(failed)  # one per action type (all in this hour)
    for action_type, count in failed.items():
        assert incidents[action_type].details["count"] == count
    lookup = incidents["lookup_caller"]
    notes = notifications_to(alpha_portal, EWA, "runs of “Look the caller up in the CRM”")
    assert len(notes) == 1
    assert "3 runs of" in notes[0]["MESSAGE"]
    assert len(notifications_to(alpha_portal, EWA, "SIMtrix alert")) == len(failed)
    assert len(mail.outbox) == len(failed)

    # Another call fails in the same hour: the same incident counts it, nobody is told again.
    alpha_portal.set_fault("down", mode="http503")
    phone.call("missed-3", number="+48600111555", outcome="missed")
    run_due()
    alpha_portal.clear_faults()
    alerts_check()
    lookup.refresh_from_db()
    assert lookup.details["count"] == _failed_by_type()["lookup_caller"] == 4
    assert Incident.objects.filter(kind="runs_failed").count() == len(failed)
    assert len(notifications_to(alpha_portal, EWA, "SIMtrix alert")) == len(failed)

    # Retried with the portal back (the admin's Retry): done, the incidents clear.
    run_retry(run_ids=list(ActionRun.objects.filter(status=FAILED).values_list("pk", flat=True)))
    statuses = run_due()
    assert FAILED not in statuses["lookup_caller"]
    assert "done" in statuses["log_call"]  # what waited for the lookup went on
    alerts_check()
    lookup.refresh_from_db()
    assert not lookup.is_open
    [resolved] = notifications_to(alpha_portal, EWA, "SIMtrix, resolved: The failed runs of “Look")
    assert "retried or removed" in resolved["MESSAGE"]
    assert [k for k, _, _ in history(lookup.pk)].count("notice_sent") == 4  # 2 channels x 2


def test_a_failure_left_alone_stays_one_open_incident(
    alpha_portal: Any,
    alerts_on: AlertSettings,
    reception: tuple[Device, Phone],
    one_attempt: None,
) -> None:
    _, phone = reception
    alerts_on.bitrix24_connection = alerts_on.missed_summary = False
    alerts_on.save()
    alpha_portal.set_fault("down", mode="http503")
    phone.call("missed", number="+48600111222", outcome="missed")
    run_due()
    alpha_portal.clear_faults()
    for _ in range(3):
        alerts_check()
    opened = Incident.objects.filter(kind="runs_failed", cleared_at__isnull=True)
    assert opened.count() == len(_failed_by_type())
    assert len(mail.outbox) == opened.count()
