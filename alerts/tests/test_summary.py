"""The daily summary of missed calls nobody called back: at the opening of the working day,
once a day, listing the callers still waiting (computed here from the calls the bridge made)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.core import mail
from django.utils import timezone

from alerts.models import AlertSettings, Incident
from alerts.services import alerts_check
from alerts.tests.conftest import EWA, notifications_to
from calls.models import Device
from scenarios.models import OfficeHours
from scenarios.tests.e2e import Phone

WARSAW = ZoneInfo("Europe/Warsaw")


def _office_opened_minutes_ago(minutes: int = 5) -> None:
    """Every day from a few minutes ago (the tenant's clock) until midnight."""
    local = timezone.now().astimezone(WARSAW)
    opens = max(local - timedelta(minutes=minutes), local.replace(hour=0, minute=0))
    OfficeHours.objects.all().delete()
    for weekday in range(7):
        OfficeHours.objects.create(
            weekday=weekday, opens_at=opens.time().replace(second=0, microsecond=0),
            closes_at=time(0, 0),
        )  # fmt: skip


def test_the_summary_lists_the_callers_still_waiting_once_a_day(
    alpha_portal: Any, alerts_on: AlertSettings, reception: tuple[Device, Phone]
) -> None:
    _, phone = reception
    _office_opened_minutes_ago()
    start = timezone.now() - timedelta(hours=2)
    calls = [  # (call id, number, direction, outcome)
        ("a", "+48600111222", "incoming", "missed"),
        ("b", "+48600111333", "incoming", "missed"),
        ("c", "+48600111444", "incoming", "no_answer"),
        ("d", "+48600111555", "incoming", "rejected"),  # rejected is not missed
        ("e", "+48600111333", "outgoing", "answered"),  # b was called back
        ("f", "+48600111666", "incoming", "answered"),
    ]
    for n, (call_id, number, direction, outcome) in enumerate(calls):
        talk = 20 if outcome == "answered" else 0
        phone.call(call_id, number=number, direction=direction, outcome=outcome, talk=talk,
                   at=start + timedelta(minutes=10 * n))  # fmt: skip
    # Missed: incoming, neither answered nor rejected. Returned: an answered call with the
    # same number started after it, in either direction.
    waiting = [
        number
        for index, (_, number, direction, outcome) in enumerate(calls)
        if direction == "incoming" and outcome not in ("answered", "rejected")
        and not any(
            later > index and other == number and result == "answered"
            for later, (_, other, _, result) in enumerate(calls)
        )
    ]  # fmt: skip
    assert waiting == ["+48600111222", "+48600111444"]

    alerts_check()
    summary = Incident.objects.get(kind="missed_summary")
    assert summary.details["count"] == len(waiting)
    assert not summary.is_open  # a notice: told, nothing to wait for
    [note] = notifications_to(alpha_portal, EWA, "SIMtrix daily summary")
    assert "2 missed calls have not been returned" in note["MESSAGE"]
    for number in waiting:
        assert number in note["MESSAGE"]
    assert "+48600111333" not in note["MESSAGE"]  # called back
    assert "+48600111555" not in note["MESSAGE"]  # rejected
    assert "Marta Nowak (#5)" in note["MESSAGE"]  # the line's agent: nobody else is responsible
    assert "/admin/reports/notreturnedreport/" in note["MESSAGE"]  # the whole list
    [email] = mail.outbox
    assert email.subject.startswith("SIMtrix daily summary: 2 missed calls")

    alerts_check()
    alerts_check()
    assert Incident.objects.filter(kind="missed_summary").count() == 1
    assert len(notifications_to(alpha_portal, EWA, "SIMtrix daily summary")) == 1
    assert len(mail.outbox) == 1

    # The next working day: still waiting, told again (one more summary).
    alerts_check(now=timezone.now() + timedelta(days=1))
    assert Incident.objects.filter(kind="missed_summary").count() == 2
    assert len(notifications_to(alpha_portal, EWA, "SIMtrix daily summary")) == 2


def test_no_summary_before_the_office_opens_nor_when_nobody_waits(
    alpha: Any, alerts_on: AlertSettings
) -> None:
    OfficeHours.objects.all().delete()
    for weekday in range(5):
        OfficeHours.objects.create(weekday=weekday, opens_at=time(9), closes_at=time(18))
    wednesday = date(2026, 11, 18)
    alerts_check(now=datetime.combine(wednesday, time(8, 30), tzinfo=WARSAW))
    alerts_on.refresh_from_db()
    assert alerts_on.summary_done_on is None  # not yet
    alerts_check(now=datetime.combine(wednesday, time(9, 1), tzinfo=WARSAW))
    alerts_on.refresh_from_db()
    assert alerts_on.summary_done_on == wednesday  # looked: nobody waits, nothing sent
    assert not Incident.objects.exists()
    assert mail.outbox == []
    saturday = date(2026, 11, 21)
    alerts_check(now=datetime.combine(saturday, time(10), tzinfo=WARSAW))
    alerts_on.refresh_from_db()
    assert alerts_on.summary_done_on == wednesday  # closed on Saturdays: no summary day
