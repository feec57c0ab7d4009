"""Missed calls not returned, with the rest of SIMtrix working: the caller looked up in the
sandbox portal, the missed-call scenario's callback task created in it, and the call back that
returns the call (outbox runs executed in-process, as calls/tests/test_handlers.py does)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from calls.models import Call, Device
from calls.tests.conftest import T0, Bridge
from calls.tests.test_handlers import run_due
from reports.choices import CallbackTaskState
from reports.periods import PeriodKind, period_for
from reports.selectors import missed_not_returned, report_callbacks
from reports.tests.conftest import WARSAW, Spec, place
from scenarios.models import ActionRun

ANNA = "+48600111222"  # contact 12 in the sandbox's seed
LEAD = "+48601222333"  # lead 25


def _window() -> dict[str, Any]:
    day = date(2026, 11, 21)
    period = period_for(PeriodKind.CUSTOM, today=day, zone="Europe/Warsaw", first=day, last=day)
    return {"since": period.since, "until": period.until}


def test_a_missed_callers_card_and_callback_task_until_the_call_back(
    alpha_portal: Any, marta: tuple[Device, Bridge]
) -> None:
    start = T0.astimezone(WARSAW).replace(tzinfo=None)
    phone = {"marta": marta[1]}
    place(
        [
            Spec("anna", "marta", "incoming", ANNA, start, "missed", ring=20),
            Spec("lead", "marta", "incoming", LEAD, start + timedelta(minutes=5), "missed"),
        ],
        phone,
    )
    run_due()  # the lookups, the logging, the notifications, the callback tasks

    found = {row["phone_number"]: row for row in missed_not_returned(**_window())}
    task_runs = {
        run.call.phone_number: run
        for run in ActionRun.objects.filter(action_type="callback_task").select_related("call")
    }
    anna = found[ANNA]
    assert anna["callback_task"] == CallbackTaskState.OPEN
    assert anna["callback_task_id"] == task_runs[ANNA].result["task_id"]
    assert anna["callback_task_id"] in alpha_portal.state.tasks  # created in Bitrix24
    assert anna["responsible_id"] == task_runs[ANNA].result["responsible_id"]
    assert anna["caller_name"] == "Anna Kowalska"
    stored = Call.objects.get(call_id="anna").crm["entity"]
    assert (stored["type"], stored["id"]) == ("contact", 12)
    assert anna["crm_url"] == stored["url"]
    assert anna["crm_url"].endswith("/crm/contact/details/12/")
    assert found[LEAD]["crm_url"] == Call.objects.get(call_id="lead").crm["entity"]["url"]

    # Marta calls Anna back an hour later: returned, gone from the list, its task completed.
    place([Spec("back", "marta", "outgoing", ANNA, start + timedelta(hours=1), "answered")], phone)
    run_due()

    assert [row["phone_number"] for row in missed_not_returned(**_window())] == [LEAD]
    assert ActionRun.objects.get(pk=task_runs[ANNA].pk).result.get("completed") is True
    callbacks = report_callbacks(**_window())
    assert (callbacks["missed"], callbacks["returned"]) == (2, 1)
    assert callbacks["median_seconds"] == 3600 + 5  # answered 5 s after it started ringing
