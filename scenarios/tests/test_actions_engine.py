"""Issue 18's actions end to end: bridge API -> outbox -> a real Celery worker -> the Bitrix24
sandbox (and a real local HTTP server for the webhook). "Time passes" by making a run due now.

The sandbox seed: contact 12 Anna Kowalska (+48600111222, type CLIENT, source CALL,
responsible 5) with the open deal 71 "Legal review" (pipeline 1 Contracts, stage
C1:NEGOTIATION, responsible 5); lead 25 (+48601222333, status NEW). Ewa (user 9) carries the
phone +48500100300, Marta (user 5) the phone +48500100500.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from collections.abc import Callable, Iterator
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests
from django.utils import timezone
from django_tenants.utils import schema_context

from calls.models import Call
from calls.services import device_register
from scenarios.document import DEFAULT_CONFIGURATION, config_import
from scenarios.models import ActionRun, ScenarioSettings
from scenarios.tests.e2e import Phone, alpha_wipe, dispatching, make_due, wait_for
from scenarios.tests.receiver import webhook_receiver
from scenarios.tests.test_engine import call_runs, settled

pytestmark = pytest.mark.worker
Status = ActionRun.Status
ANNA = "+48600111222"
LEAD_25 = "+48601222333"
WARSAW = ZoneInfo("Europe/Warsaw")
LOG = {"action_type": "log_call"}


@pytest.fixture
def phone(celery_worker: str, alpha_portal: Any, committed_db: Callable) -> Iterator[Phone]:
    committed_db(alpha_wipe)

    def settings_clear() -> None:
        with schema_context("alpha"):
            ScenarioSettings.objects.all().delete()

    committed_db(settings_clear)
    with schema_context("alpha"):
        _, token = device_register(
            name="Ewa's phone", phone_number="+48500100300", bitrix24_user_id=9, country="PL"
        )
    with dispatching():
        yield Phone(token)


def configure(*actions: dict[str, Any], trigger: str = "incoming_missed", **extra: Any) -> None:
    """The default configuration with `trigger`'s scenario doing these actions, imported (so
    validated) as a tenant admin would."""
    data = copy.deepcopy(DEFAULT_CONFIGURATION)
    for scenario in data["scenarios"]:
        if scenario["trigger"] == trigger:
            scenario["actions"] = list(actions)
    data.update(extra)
    with schema_context("alpha"):
        config_import(data=data)


def runs_of(call_id: str, action_type: str) -> list[ActionRun]:
    with schema_context("alpha"):
        return list(
            ActionRun.objects.filter(call__call_id=call_id, action_type=action_type).order_by("pk")
        )


def test_status_responsible_and_fields_change_on_the_callers_record(
    phone: Phone, alpha_portal: Any
) -> None:
    configure(
        LOG,
        {"action_type": "set_status", "target": "deal", "status_id": "C1:NEW"},
        {"action_type": "set_status", "target": "deal", "status_id": "PREPARATION"},
        {"action_type": "set_status", "target": "entity", "status_id": "IN_PROCESS"},
        {"action_type": "set_responsible", "target": "deal", "responsible": "fixed",
         "users": [3]},
        {"action_type": "update_fields", "target": "entity",
         "fields": {"UF_CRM_PREFERRED_SIM": "{line}"}},
        {"action_type": "update_fields", "target": "deal",
         "fields": {"UF_CRM_SIM_LINE": "{outcome} {number}", "COMMENTS": "Called at {time}"}},
    )  # fmt: skip
    started = timezone.now() - timedelta(seconds=30)
    phone.call("s-1", number=ANNA, outcome="missed", at=started)
    phone.call("s-2", number=LEAD_25, outcome="missed", at=started + timedelta(seconds=5))
    wait_for(settled("s-1"))
    wait_for(settled("s-2"))

    deal = alpha_portal.state.entities["DEAL"][71]
    assert (deal["STAGE_ID"], deal["CATEGORY_ID"], deal["ASSIGNED_BY_ID"]) == ("C1:NEW", 1, 3)
    assert deal["UF_CRM_SIM_LINE"] == "missed +48600111222"
    local = started.astimezone(WARSAW)
    assert deal["COMMENTS"] == f"Called at {local:%Y-%m-%d %H:%M}"
    assert alpha_portal.state.entities["CONTACT"][12]["UF_CRM_PREFERRED_SIM"] == "+48500100300"
    assert alpha_portal.state.entities["LEAD"][25]["STATUS_ID"] == "IN_PROCESS"

    anna = {r.params["action"].get("status_id") or r.action_type: r for r in
            [*runs_of("s-1", "set_status"), *runs_of("s-1", "set_responsible")]}  # fmt: skip
    assert anna["C1:NEW"].status == Status.DONE
    assert anna["C1:NEW"].result == {"deal": 71, "stage": ["C1:NEGOTIATION", "C1:NEW"]}
    assert anna["PREPARATION"].status == Status.SKIPPED
    assert anna["PREPARATION"].last_error == (
        "Deal 71 is in the pipeline Contracts (1); the stage PREPARATION is one of pipeline 0."
    )
    assert anna["IN_PROCESS"].last_error == (
        "The caller is a contact, not a lead: only a lead has a status."
    )
    assert anna["set_responsible"].result["responsible"] == [5, 3]
    [lead_status] = [r for r in runs_of("s-2", "set_status") if r.status == Status.DONE]
    assert lead_status.result == {"lead": 25, "status": ["NEW", "IN_PROCESS"]}
    # A lead has no deals: the deal's actions say why they did nothing.
    for run in runs_of("s-2", "set_responsible"):
        assert (run.status, run.last_error) == (Status.SKIPPED, "The caller has no open deal.")


def test_conditions_decide_each_action_and_the_run_shows_every_result(
    phone: Phone, alpha_portal: Any
) -> None:
    # One timeline comment per operator, each with a condition on Anna and her open deal;
    # whether it holds is read off the seed, not off SIMtrix.
    anna = alpha_portal.state.entities["CONTACT"][12]
    deal = alpha_portal.state.entities["DEAL"][71]
    cases = {
        "equals": ({"source": "entity", "field": "type", "operator": "equals",
                    "values": ["CLIENT"]}, anna["TYPE_ID"] == "CLIENT"),
        "not_equals": ({"source": "entity", "field": "source", "operator": "not_equals",
                        "values": ["CALL"]}, anna["SOURCE_ID"] != "CALL"),
        "contains": ({"source": "deal", "field": "stage", "operator": "contains",
                      "values": ["NEGOTIATION"]}, "NEGOTIATION" in deal["STAGE_ID"]),
        "not_contains": ({"source": "deal", "field": "TITLE", "operator": "not_contains",
                          "values": ["tender"]}, "tender" not in deal["TITLE"].lower()),
        "empty": ({"source": "entity", "field": "UF_CRM_PREFERRED_SIM", "operator": "empty"},
                  not anna.get("UF_CRM_PREFERRED_SIM")),
        "not_empty": ({"source": "entity_type", "operator": "not_empty"}, True),
    }  # fmt: skip
    assert {name for name, (_, holds) in cases.items() if not holds} == {"not_equals"}
    configure(
        LOG,
        *[
            {"action_type": "timeline_comment", "text_template": name, "conditions": [condition]}
            for name, (condition, _) in cases.items()
        ],
        # Works on the deal the deal condition matched.
        {"action_type": "update_fields", "target": "deal", "fields": {"UF_CRM_SIM_LINE": "x"},
         "conditions": [{"source": "deal", "field": "pipeline", "operator": "equals",
                         "values": ["1"]}]},
    )  # fmt: skip
    phone.call("c-1", number=ANNA, outcome="missed")
    wait_for(settled("c-1"))

    comments = sorted(c["COMMENT"] for c in alpha_portal.state.comments.values())
    assert comments == sorted(name for name, (_, holds) in cases.items() if holds)
    by_name = {r.params["action"]["text_template"]: r for r in runs_of("c-1", "timeline_comment")}
    skipped = by_name["not_equals"]
    assert skipped.status == Status.SKIPPED
    assert skipped.last_error == (
        "Conditions not met: entity.source does not equal CALL (value: ['CALL'])"
    )
    assert skipped.result["conditions"] == [
        {"condition": "entity.source does not equal CALL", "holds": False,
         "detail": "value: ['CALL']"}
    ]  # fmt: skip
    assert by_name["contains"].result["conditions"] == [
        {"condition": "deal.stage contains NEGOTIATION", "holds": True,
         "detail": "deal 71 matches"}
    ]  # fmt: skip
    [fields] = runs_of("c-1", "update_fields")
    assert fields.result["target"] == ["deal", 71]
    assert deal["UF_CRM_SIM_LINE"] == "x"


def test_the_webhook_posts_the_call_signed_and_is_retried_like_every_run(
    phone: Phone, alpha_portal: Any
) -> None:
    secret = "w3bh00k-s3cr3t"
    with webhook_receiver() as receiver:
        receiver.answers = [(503, 0.0)]  # down once, then fine
        configure(
            LOG,
            {"action_type": "webhook", "url": receiver.url, "secret": secret},
            settings={"webhooks_allow_http": True},
        )
        phone.call("w-1", number=ANNA, outcome="missed", talk=0)
        wait_for(lambda: len(receiver.received()) == 2, timeout=40)
        wait_for(settled("w-1"))
        first, second = receiver.received()
    [run] = runs_of("w-1", "webhook")
    assert run.status == Status.DONE, run.last_error
    assert run.attempts == 2
    assert run.result["status"] == 200
    assert run.result["signature"] == "X-SIMtrix-Signature"
    # The retry sends the same delivery; the signature is the body's HMAC-SHA256 with the secret.
    assert first.body == second.body
    for received in (first, second):
        expected = hmac.new(secret.encode(), received.body, hashlib.sha256).hexdigest()
        assert received.headers["X-SIMtrix-Signature"] == expected
        assert received.headers["X-SIMtrix-Delivery"] == f"alpha:{run.pk}"
        assert received.headers["Content-Type"].startswith("application/json")
    body = json.loads(second.body)
    with schema_context("alpha"):
        call = Call.objects.get(call_id="w-1")
    assert call.started_at is not None
    assert call.ended_at is not None
    assert body == {
        "event": "call",
        "tenant": "alpha",
        "delivery": f"alpha:{run.pk}",
        "trigger": "incoming_missed",
        "scenario": "Incoming call missed",
        "call_id": "w-1",
        "direction": "incoming",
        "outcome": "missed",
        "number": ANNA,
        "started_at": call.started_at.isoformat(),
        "answered_at": None,
        "ended_at": call.ended_at.isoformat(),
        "duration_seconds": 0,
        "entity": {"type": "contact", "id": 12, "name": "Anna Kowalska",
                   "url": f"{alpha_portal.url}/crm/contact/details/12/"},
        "route": {"user": {"id": 5, "name": "Marta Nowak"}, "rule": "Responsible user"},
        "agent": {"id": 9, "name": "Ewa Lewandowska", "device": "Ewa's phone",
                  "line": "+48500100300"},
    }  # fmt: skip
    assert secret not in json.dumps(run.params)  # the planned run keeps it encrypted


def test_a_second_missed_call_comments_on_the_open_callback_task_instead_of_another(
    phone: Phone, alpha_portal: Any
) -> None:
    # The default missed scenario: a callback task 30 minutes after the call (deadline 2 working
    # hours after it is made).
    first_at = timezone.now() - timedelta(minutes=3)
    phone.call("cb-1", number=ANNA, outcome="missed", at=first_at)
    phone.call("cb-2", number=ANNA, outcome="missed", at=first_at + timedelta(minutes=1))
    wait_for(settled("cb-1"))
    wait_for(settled("cb-2"))
    with schema_context("alpha"):
        make_due(call__call_id="cb-1")
    wait_for(settled("cb-1"))
    with schema_context("alpha"):
        make_due(call__call_id="cb-2")
    wait_for(settled("cb-2"))

    [task] = alpha_portal.state.tasks.values()
    [made] = runs_of("cb-1", "callback_task")
    [added] = runs_of("cb-2", "callback_task")
    assert made.result["task_id"] == task["ID"]
    assert added.status == Status.DONE, added.last_error
    assert added.result["added_to"]["task_id"] == task["ID"]
    assert added.result["added_to"]["added_to_run"] == made.pk
    # Made a moment later with the same deadline setting: the earlier deadline stays.
    assert added.result["added_to"]["deadline"] == "kept"
    [comment] = alpha_portal.state.task_comments.values()
    local = (first_at + timedelta(minutes=1)).astimezone(WARSAW)
    assert comment["TASK_ID"] == task["ID"]
    assert comment["POST_MESSAGE"] == f"Called again: {ANNA} at {local:%Y-%m-%d %H:%M}."
    with schema_context("alpha"):
        made.refresh_from_db()
        assert made.result["calls_added"] == [Call.objects.get(call_id="cb-2").pk]

    # Reached: the one task is completed, once.
    phone.call("cb-back", number=ANNA, outcome="answered", direction="outgoing", talk=20)
    wait_for(settled("cb-back"))
    assert task["STATUS"] == 5
    assert [r.status for r in runs_of("cb-back", "complete_callback_task")] == [Status.DONE]


def test_a_schedule_call_todo_takes_a_later_call_brings_its_deadline_forward_and_completes(
    phone: Phone, alpha_portal: Any
) -> None:
    configure(
        LOG,
        {"action_type": "schedule_call", "title_template": "Call {caller} back",
         "text_template": "Missed at {time}", "deadline_minutes": 240, "responsible": "crm"},
    )  # fmt: skip
    with schema_context("alpha"):
        # A rejected call's callback task, due sooner, goes to the same caller.
        rejected = copy.deepcopy(DEFAULT_CONFIGURATION)
        for scenario in rejected["scenarios"]:
            if scenario["trigger"] == "incoming_missed":
                scenario["actions"] = [
                    LOG,
                    {"action_type": "schedule_call", "title_template": "Call {caller} back",
                     "text_template": "Missed at {time}", "deadline_minutes": 240,
                     "responsible": "crm"},
                ]  # fmt: skip
            if scenario["trigger"] == "incoming_rejected":
                scenario["actions"] = [
                    LOG,
                    {
                        "action_type": "callback_task",
                        "title_template": "Call back",
                        "deadline_minutes": 30,
                        "responsible": "crm",
                    },
                ]
        config_import(data=rejected)
    phone.call("t-1", number=ANNA, outcome="missed", at=timezone.now() - timedelta(minutes=2))
    wait_for(settled("t-1"))
    [todo_run] = runs_of("t-1", "schedule_call")
    assert todo_run.status == Status.DONE, todo_run.last_error
    todo = alpha_portal.state.activities[todo_run.result["todo_id"]]
    assert (todo["PROVIDER_ID"], todo["OWNER_TYPE_ID"], todo["OWNER_ID"]) == ("CRM_TODO", 3, 12)
    assert (todo["SUBJECT"], todo["RESPONSIBLE_ID"], todo["COMPLETED"]) == (
        "Call Anna Kowalska back", 5, "N",
    )  # fmt: skip
    first_deadline = todo["DEADLINE"]

    phone.call("t-2", number=ANNA, outcome="rejected", at=timezone.now() - timedelta(minutes=1))
    wait_for(settled("t-2"))
    [second] = runs_of("t-2", "callback_task")
    assert second.status == Status.DONE, second.last_error
    assert second.result["added_to"]["todo_id"] == todo["ID"]
    assert second.result["added_to"]["deadline"] == "brought forward"
    assert not alpha_portal.state.tasks  # no second call back
    assert todo["DEADLINE"] < first_deadline
    assert todo["DESCRIPTION"].startswith("Missed at ")
    assert f"Called again: {ANNA} at " in todo["DESCRIPTION"].splitlines()[-1]

    phone.call("t-back", number=ANNA, outcome="answered", direction="outgoing", talk=20)
    wait_for(settled("t-back"))
    assert todo["COMPLETED"] == "Y"
    with schema_context("alpha"):
        todo_run.refresh_from_db()
    assert todo_run.result["completed"] is True


def test_before_a_date_of_the_deal_waits_for_its_moment_or_says_why_not(
    phone: Phone, alpha_portal: Any
) -> None:
    close = (timezone.now() + timedelta(days=3)).astimezone(WARSAW).date()
    alpha_portal.update_entity("DEAL", 71, {"CLOSEDATE": close.isoformat()})
    before = {"timing": "before_date", "delay_minutes": 1440, "date_of": "deal"}
    configure(
        LOG,
        {"action_type": "timeline_comment", "text_template": "close date", **before,
         "date_field": "CLOSEDATE"},
        {"action_type": "timeline_comment", "text_template": "begin date", **before,
         "date_field": "BEGINDATE"},
        {"action_type": "timeline_comment", "text_template": "no date", **before,
         "date_field": "UF_CRM_SIM_LINE"},
    )  # fmt: skip
    phone.call("b-1", number=ANNA, outcome="missed")
    by_field = {}

    def planned() -> bool:
        runs = runs_of("b-1", "timeline_comment")
        by_field.update({r.params["action"]["date_field"]: r for r in runs})
        return len(runs) == 3 and all(
            r.status == Status.SKIPPED or "before_date" in r.params for r in runs
        )

    wait_for(planned)
    waiting = by_field["CLOSEDATE"]
    # The day before the close date's midnight, on the tenant's clock (a date has no time).
    expected = datetime.combine(close, time(0, 0), tzinfo=WARSAW) - timedelta(days=1)
    assert waiting.status == Status.SCHEDULED
    assert waiting.due_at == expected
    assert waiting.attempts == 0
    assert waiting.params["before_date"]["field"] == "deal.CLOSEDATE"
    assert not alpha_portal.state.comments
    assert by_field["BEGINDATE"].status == Status.SKIPPED
    assert by_field["BEGINDATE"].last_error.startswith("The date in deal.BEGINDATE (")
    assert by_field["BEGINDATE"].last_error.endswith(") is past.")
    assert by_field["UF_CRM_SIM_LINE"].last_error == (
        "No date in deal.UF_CRM_SIM_LINE: nothing to count back from."
    )

    with schema_context("alpha"):
        make_due(pk=waiting.pk)
    wait_for(settled("b-1"))
    with schema_context("alpha"):
        waiting.refresh_from_db()
    assert waiting.status == Status.DONE, waiting.last_error
    assert waiting.result["before_date"]["due"] == expected.isoformat()
    assert [c["COMMENT"] for c in alpha_portal.state.comments.values()] == ["close date"]


def test_a_scenario_limited_to_a_phone_wins_over_the_tenant_wide_one_on_that_phone(
    phone: Phone, alpha_portal: Any
) -> None:
    with schema_context("alpha"):
        _, token = device_register(
            name="Marta's phone", phone_number="+48500100500", bitrix24_user_id=5, country="PL"
        )
    marta = Phone(token)
    data = copy.deepcopy(DEFAULT_CONFIGURATION)
    data["scenarios"].append(
        {
            "trigger": "incoming_missed",
            "name": "Missed on the sales line",
            "devices": ["+48500100500"],
            "actions": [
                LOG,
                {"action_type": "notify", "recipients": ["agent"],
                 "text_template": "Sales line: missed {number}"},
            ],
        }
    )  # fmt: skip
    with schema_context("alpha"):
        config_import(data=data)
    phone.call("l-ewa", number=ANNA, outcome="missed")
    marta.call("l-marta", number=LEAD_25, outcome="missed")
    wait_for(settled("l-ewa"))
    wait_for(settled("l-marta"))

    ewa_runs, marta_runs = call_runs("l-ewa"), call_runs("l-marta")
    assert set(ewa_runs) == {"register_call", "log_call", "notify", "callback_task"}
    assert set(marta_runs) == {"register_call", "log_call", "notify"}
    assert ewa_runs["notify"].params["scenario"] == "Incoming call missed"
    assert marta_runs["notify"].params["scenario"] == "Missed on the sales line"
    messages = sorted(
        (n["USER_ID"], n["MESSAGE"].split(" (")[0])
        for n in alpha_portal.state.notifications.values()
    )
    assert messages == [
        (5, "Missed call from Anna Kowalska"),
        (5, "Sales line: missed +48601222333"),
    ]


def test_a_callback_task_closed_in_bitrix24_meanwhile_is_not_added_to_a_new_one_is_made(
    phone: Phone, alpha_portal: Any
) -> None:
    first_at = timezone.now() - timedelta(minutes=3)
    phone.call("cl-1", number=ANNA, outcome="missed", at=first_at)
    wait_for(settled("cl-1"))
    with schema_context("alpha"):
        make_due(call__call_id="cl-1")
    wait_for(settled("cl-1"))
    [made] = runs_of("cl-1", "callback_task")
    # Marta closes the task in Bitrix24 herself.
    closed = requests.post(
        alpha_portal.webhook_url(5) + "tasks.task.complete",
        json={"taskId": made.result["task_id"]},
        verify=alpha_portal.ca_cert_path,
        timeout=10,
    )
    assert closed.status_code == 200, closed.text
    phone.call("cl-2", number=ANNA, outcome="missed", at=first_at + timedelta(minutes=1))
    wait_for(settled("cl-2"))
    with schema_context("alpha"):
        make_due(call__call_id="cl-2")
    wait_for(settled("cl-2"))
    [second] = runs_of("cl-2", "callback_task")
    assert second.status == Status.DONE, second.last_error
    assert "added_to" not in second.result
    assert second.result["task_id"] != made.result["task_id"]
    assert len(alpha_portal.state.tasks) == 2
    assert not alpha_portal.state.task_comments
    with schema_context("alpha"):
        made.refresh_from_db()
    assert made.result["closed_in_bitrix24"] is True
