"""Each default scenario end to end: bridge API -> outbox -> real Celery worker -> Bitrix24 sandbox.

The sandbox seed: contact 12 Anna Kowalska (+48600111222, responsible 5, open deal 71) calls the
phone Ewa (user 9) carries. "Time passes" by making a delayed run due now.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.db.models import Q
from django.utils import timezone
from django_tenants.utils import schema_context

from calls.models import Call
from calls.services import device_register
from scenarios.models import ActionRun, ScenarioAction
from scenarios.tests.e2e import Phone, alpha_wipe, dispatching, make_due, wait_for

pytestmark = pytest.mark.worker
Status = ActionRun.Status
ANNA = "+48600111222"


@pytest.fixture
def phone(celery_worker: str, alpha_portal: Any, committed_db: Callable) -> Iterator[Phone]:
    committed_db(alpha_wipe)
    with schema_context("alpha"):
        _, token = device_register(
            name="Ewa's phone", phone_number="+48500100300", bitrix24_user_id=9, country="PL"
        )
    with dispatching():
        yield Phone(token)


def top_level_requests(portal: Any) -> list[str]:
    """A call's requests: the phone's external line, synced when the device was registered
    (commands.lines, in the worker at any moment), is not the call's."""
    return [
        r["method"]
        for r in portal.state.query_requests(in_batch=False)
        if r.get("method") != "oauth.token"
        and not str(r.get("method")).lower().startswith("telephony.externalline")
    ]


def call_runs(call_id: str) -> dict[str, ActionRun]:
    with schema_context("alpha"):
        return {run.action_type: run for run in ActionRun.objects.filter(call__call_id=call_id)}


def settled(call_id: str) -> Callable[[], bool]:
    """Nothing of the call is left to do now (delayed runs may wait for their time)."""

    def check() -> bool:
        with schema_context("alpha"):
            soon = timezone.now() + timedelta(seconds=60)
            pending = ActionRun.objects.filter(
                call__call_id=call_id, status__in=[Status.SCHEDULED, Status.RUNNING]
            )
            return not pending.filter(Q(due_at__lte=soon) | Q(due_at__isnull=True)).exists()

    return check


def finished_calls(portal: Any) -> list[dict[str, Any]]:
    return portal.calls()["finished"]


def test_the_default_scenarios_are_the_ones_exercised_here(alpha: Any) -> None:
    # (Also makes pytest-django create the test database when this module runs alone: it only
    # does so for sessions that contain a test using the `db` fixture.)
    answered = ScenarioAction.objects.filter(scenario__trigger="incoming_answered")
    assert list(answered.values_list("action_type", flat=True)) == [
        "log_call", "show_card", "post_call_sync",
    ]  # fmt: skip


def test_answered_call_is_logged_with_the_card_and_notes_synced_after_five_minutes(
    phone: Phone, alpha_portal: Any
) -> None:
    phone.started("a-1", number=ANNA)
    wait_for(settled("a-1"))
    # While it rings, the card pops for Ewa (SHOW=1 on register) and for Marta, Anna's
    # responsible, whom the call is routed to (show, in the register's own batch).
    [active] = alpha_portal.calls()["active"]
    assert sorted(active["SHOWN_TO"]) == [5, 9]
    phone.ended("a-1", outcome="answered", talk=272)
    wait_for(settled("a-1"))
    runs = call_runs("a-1")
    assert {t: r.status for t, r in runs.items()} == {
        "register_call": "done", "log_call": "done", "post_call_sync": "scheduled",
    }  # fmt: skip
    # Lookup, register (Ewa's card) + show (Marta's card) in one batch, finish: three requests.
    requests = top_level_requests(alpha_portal)
    assert requests == ["batch", "batch", "telephony.externalcall.finish"], requests
    register_batch = [
        r["method"] for r in alpha_portal.state.query_requests(in_batch=True)
        if r["method"].startswith("telephony.")
    ]  # fmt: skip
    assert register_batch == ["telephony.externalcall.register", "telephony.externalcall.show"]
    [finished] = finished_calls(alpha_portal)
    stat = finished["STATISTIC"]
    assert (stat["CRM_ENTITY_TYPE"], stat["CRM_ENTITY_ID"], stat["CALL_DURATION"]) == (
        "CONTACT", 12, 272,
    )  # fmt: skip
    sync = runs["post_call_sync"]
    assert sync.due_at is not None
    assert sync.after is not None
    assert sync.after.done_at is not None
    assert abs((sync.due_at - sync.after.done_at).total_seconds() - 300) < 1

    phone.note("a-1", "Wants the legal review moved to Friday.")
    with schema_context("alpha"):
        make_due(call__call_id="a-1")
    wait_for(settled("a-1"))
    sync = call_runs("a-1")["post_call_sync"]
    assert sync.status == "done", sync.last_error
    assert sync.result == {"notes": 1, "recording": "none"}
    activity = alpha_portal.state.activities[stat["CRM_ACTIVITY_ID"]]
    assert activity["DESCRIPTION"] == "Wants the legal review moved to Friday."


def test_missed_call_notifies_the_responsible_and_creates_the_callback_task_after_its_delay(
    phone: Phone, alpha_portal: Any
) -> None:
    phone.call("m-1", number=ANNA, outcome="missed")
    wait_for(settled("m-1"))
    runs = call_runs("m-1")
    assert {t: r.status for t, r in runs.items()} == {
        "register_call": "done", "log_call": "done", "notify": "done", "callback_task": "scheduled",
    }  # fmt: skip
    # Lookup, register (with Marta's card in its batch while it still rang), notify, finish.
    requests = top_level_requests(alpha_portal)
    assert "telephony.externalcall.show" not in requests
    assert len(requests) == 4, requests
    [notification] = alpha_portal.state.notifications.values()
    assert notification["USER_ID"] == 5
    assert notification["MESSAGE"].startswith("Missed call from Anna Kowalska (+48600111222)")
    assert finished_calls(alpha_portal)[0]["STATISTIC"]["CALL_FAILED_CODE"] == "304"
    with schema_context("alpha"):
        call = Call.objects.get(call_id="m-1")
    assert call.ended_at is not None
    assert runs["callback_task"].due_at == call.ended_at + timedelta(minutes=30)
    assert not alpha_portal.state.tasks

    with schema_context("alpha"):
        make_due(call__call_id="m-1")
    wait_for(settled("m-1"))
    task_run = call_runs("m-1")["callback_task"]
    assert task_run.status == "done", task_run.last_error
    [task] = alpha_portal.state.tasks.values()
    assert task["ID"] == task_run.result["task_id"]
    assert task["RESPONSIBLE_ID"] == 5
    assert task["TITLE"] == "Call back Anna Kowalska (+48600111222)"
    assert sorted(task["UF_CRM_TASK"]) == ["C_12", "D_71"]
    assert task["DEADLINE"]


def test_rejected_call_is_logged_as_rejected_and_nothing_else(
    phone: Phone, alpha_portal: Any
) -> None:
    phone.call("r-1", number=ANNA, outcome="rejected")
    wait_for(settled("r-1"))
    assert set(call_runs("r-1")) == {"register_call", "log_call"}
    assert finished_calls(alpha_portal)[0]["STATISTIC"]["CALL_FAILED_CODE"] == "603"
    assert not alpha_portal.state.tasks
    assert not alpha_portal.state.notifications


def test_outgoing_call_not_answered_is_only_logged(phone: Phone, alpha_portal: Any) -> None:
    phone.call("o-1", number=ANNA, outcome="busy", direction="outgoing")
    wait_for(settled("o-1"))
    assert {t: r.status for t, r in call_runs("o-1").items()} == {
        "register_call": "done", "log_call": "done"
    }  # fmt: skip
    assert finished_calls(alpha_portal)[0]["STATISTIC"]["CALL_FAILED_CODE"] == "486"


def test_unknown_number_gets_exactly_one_lead_which_the_calls_are_logged_on(
    phone: Phone, alpha_portal: Any
) -> None:
    number = "+48600999888"
    # Two phones ring for the same new number at once; the bridge then replays its queue and
    # sends one event again under a new id.
    first = phone.started("u-1", number=number)
    phone.started("u-2", number=number)
    ends = phone.ended("u-1", outcome="missed") + phone.ended("u-2", outcome="missed")
    for event in [first, *ends]:
        phone.send(event)
    phone.started("u-1", number=number)
    wait_for(settled("u-1"))
    wait_for(settled("u-2"))
    leads = [
        lead for lead in alpha_portal.state.entities["LEAD"].values()
        if any(p["VALUE"] == number for p in lead.get("PHONE", []))
    ]  # fmt: skip
    assert len(leads) == 1
    [lead] = leads
    assert lead["TITLE"] == "Incoming call +48600999888"
    assert (lead["STATUS_ID"], lead["SOURCE_ID"], lead["ASSIGNED_BY_ID"]) == ("NEW", "CALL", 9)
    created = [
        run.result["created"] for call_id in ("u-1", "u-2")
        if (run := call_runs(call_id).get("create_lead"))
    ]  # fmt: skip
    # One of the two made it (whichever the worker took first: both are due at once), the
    # other found it.
    assert created.count(True) == 1
    assert len(created) == 2
    finished = finished_calls(alpha_portal)
    assert len(finished) == 2
    for call in finished:
        stat = call["STATISTIC"]
        assert (stat["CRM_ENTITY_TYPE"], stat["CRM_ENTITY_ID"]) == ("LEAD", lead["ID"])
    # The outcome's scenario ran on the new lead: its responsible got the notifications.
    assert [n["USER_ID"] for n in alpha_portal.state.notifications.values()] == [9, 9]


def test_the_callback_task_is_skipped_when_the_caller_was_reached_first(
    phone: Phone, alpha_portal: Any
) -> None:
    earlier = timezone.now() - timedelta(minutes=2)
    phone.call("m-2", number=ANNA, outcome="missed", at=earlier)
    phone.call("back", number=ANNA, outcome="answered", direction="outgoing", talk=30,
               at=earlier + timedelta(minutes=1))  # fmt: skip
    wait_for(settled("back"))
    with schema_context("alpha"):
        make_due(call__call_id="m-2")
    wait_for(settled("m-2"))
    task_run = call_runs("m-2")["callback_task"]
    assert task_run.status == "skipped"
    assert task_run.last_error.startswith("The caller was reached meanwhile (outgoing call")
    assert not alpha_portal.state.tasks


def test_the_callback_task_is_completed_when_an_agent_calls_back(
    phone: Phone, alpha_portal: Any
) -> None:
    phone.call("m-3", number=ANNA, outcome="missed", at=timezone.now() - timedelta(minutes=5))
    wait_for(settled("m-3"))
    with schema_context("alpha"):
        make_due(call__call_id="m-3")
    wait_for(settled("m-3"))
    [task] = alpha_portal.state.tasks.values()
    assert task["STATUS"] == 2
    phone.call("cb", number=ANNA, outcome="answered", direction="outgoing", talk=40)
    wait_for(settled("cb"))
    assert call_runs("cb")["complete_callback_task"].status == "done"
    assert task["STATUS"] == 5
    assert call_runs("m-3")["callback_task"].result["completed"] is True


def test_an_action_whose_user_left_is_skipped_with_the_reason(
    phone: Phone, alpha_portal: Any
) -> None:
    with schema_context("alpha"):
        ScenarioAction.objects.filter(action_type="notify").update(
            responsible="fixed", users=[7], recipients=["responsible"]
        )
    phone.call("m-4", number=ANNA, outcome="missed")
    wait_for(settled("m-4"))
    notify = call_runs("m-4")["notify"]
    assert notify.status == "skipped"
    assert notify.last_error == (
        "The configuration refers to what Bitrix24 no longer has: Bitrix24 user 7 is inactive"
    )
    assert not alpha_portal.state.notifications


def test_automation_trigger_and_timeline_comment_chained_after_the_notification(
    phone: Phone, alpha_portal: Any
) -> None:
    with schema_context("alpha"):
        missed = ScenarioAction.objects.get(action_type="notify").scenario
        ScenarioAction.objects.create(
            scenario=missed, position=25, action_type="trigger_automation",
            timing="after_previous", automation_code="missed_call", automation_target="deal",
        )  # fmt: skip
        ScenarioAction.objects.create(
            scenario=missed, position=26, action_type="timeline_comment",
            timing="after_previous", text_template="Missed {call_kind} from {number}, {outcome}.",
        )  # fmt: skip
    phone.call("m-5", number=ANNA, outcome="missed")
    wait_for(settled("m-5"))
    runs = call_runs("m-5")
    assert runs["trigger_automation"].after == runs["notify"]
    assert runs["timeline_comment"].after == runs["trigger_automation"]
    assert runs["timeline_comment"].status == "done", runs["timeline_comment"].last_error
    [trigger] = alpha_portal.state.triggers
    assert (trigger["TARGET"], trigger["CODE"]) == ("DEAL_71", "missed_call")
    [comment] = alpha_portal.state.comments.values()
    assert (comment["ENTITY_TYPE"], comment["ENTITY_ID"]) == ("contact", 12)
    assert comment["COMMENT"] == "Missed Incoming call from +48600111222, missed."


def test_unknown_number_can_get_a_deal_with_a_new_contact_instead(
    phone: Phone, alpha_portal: Any
) -> None:
    with schema_context("alpha"):
        ScenarioAction.objects.filter(action_type="create_lead").update(
            action_type="create_deal", pipeline_id=1, responsible="fixed", users=[5],
            title_template="Enquiry by phone {number}",
        )  # fmt: skip
    number = "+48600999555"
    phone.call("d-1", number=number, outcome="missed", at=timezone.now() - timedelta(minutes=1))
    wait_for(settled("d-1"))
    with schema_context("alpha"):
        make_due(call__call_id="d-1")
    wait_for(settled("d-1"))
    runs = call_runs("d-1")
    created = runs["create_deal"]
    assert created.status == "done", created.last_error
    contact_id = created.result["entity"]["id"]
    [deal] = [d for d in alpha_portal.state.entities["DEAL"].values() if d["ID"] > 76]
    assert (deal["TITLE"], deal["CATEGORY_ID"], deal["STAGE_ID"]) == (
        "Enquiry by phone +48600999555", 1, "C1:NEW",
    )  # fmt: skip
    assert deal["ASSIGNED_BY_ID"] == 5
    stat = finished_calls(alpha_portal)[0]["STATISTIC"]
    assert (stat["CRM_ENTITY_TYPE"], stat["CRM_ENTITY_ID"]) == ("CONTACT", contact_id)
    [task] = alpha_portal.state.tasks.values()
    assert sorted(task["UF_CRM_TASK"]) == sorted([f"C_{contact_id}", f"D_{deal['ID']}"])
    # An unknown caller is routed to "Others" (the device's agent), whom the task is for.
    assert task["RESPONSIBLE_ID"] == 9
