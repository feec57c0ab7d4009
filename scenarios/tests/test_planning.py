"""What a call plans, phase by phase, with the default scenarios (no Bitrix24 involved)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from django_tenants.utils import schema_context

from calls.models import Call, Device
from crm.domain import LookupStatus
from scenarios import outbox
from scenarios.choices import Trigger
from scenarios.document import DEFAULT_CONFIGURATION
from scenarios.models import ActionRun, CallPlan, OfficeHours, Scenario, ScenarioAction
from scenarios.tests.conftest import KNOWN, T0, UNKNOWN, WARSAW, call_end, call_event, call_make

Status = ActionRun.Status


def runs(call: Call) -> dict[str, ActionRun]:
    return {run.dedupe_key.split(":", 2)[2]: run for run in ActionRun.objects.filter(call=call)}


def types(call: Call) -> list[str]:
    return sorted(run.action_type for run in ActionRun.objects.filter(call=call))


@pytest.mark.parametrize("schema", ["alpha", "beta"])
def test_every_tenant_starts_with_the_default_scenarios(
    tenants: dict, schema: str, db: None
) -> None:
    with schema_context(schema):
        assert set(Scenario.objects.values_list("trigger", flat=True)) == set(Trigger.values)
        missed = Scenario.objects.get(trigger=Trigger.INCOMING_MISSED)
        assert list(missed.actions.values_list("action_type", flat=True)) == [
            "log_call",
            "notify",
            "callback_task",
        ]
        assert OfficeHours.objects.count() == 5
        assert ScenarioAction.objects.count() == sum(
            len(s["actions"]) for s in DEFAULT_CONFIGURATION["scenarios"]
        )


def test_answered_known_call_pops_the_card_then_logs_and_syncs_after_five_minutes(
    device: Device,
) -> None:
    call = call_event(call_make(device))
    planned = runs(call)
    assert list(planned) == ["register_call"]
    # The default: the routed user and the agent, here both 9 (the call's route is the agent).
    assert planned["register_call"].params == {"show_to": [9]}
    assert planned["register_call"].due_at is not None

    call_end(call, "answered", talk=95)
    planned = runs(call)
    assert sorted(planned) == ["end:" + _action_id("incoming_answered", "post_call_sync"),
                               "log_call", "register_call"]  # fmt: skip
    log = planned["log_call"]
    sync = planned["end:" + _action_id("incoming_answered", "post_call_sync")]
    assert log.after == planned["register_call"]
    assert log.due_at is None
    assert sync.after == log
    assert sync.delay_seconds == 300


def test_repeated_and_reordered_events_plan_nothing_new(device: Device) -> None:
    call = call_event(call_make(device))
    call_end(call, "missed")
    before = sorted(ActionRun.objects.filter(call=call).values_list("pk", flat=True))
    for event_type in ("call.started", "call.ended", "call.answered", "call.ended"):
        call_event(call, event_type)
    assert sorted(ActionRun.objects.filter(call=call).values_list("pk", flat=True)) == before
    assert CallPlan.objects.filter(call=call).count() == 2


def test_missed_call_logs_notifies_and_plans_the_callback_30_minutes_after_the_end(
    device: Device,
) -> None:
    call = call_end(call_event(call_make(device)), "missed")
    assert types(call) == ["callback_task", "log_call", "notify", "register_call"]
    by_type = {run.action_type: run for run in ActionRun.objects.filter(call=call)}
    assert call.ended_at is not None
    assert by_type["callback_task"].due_at == call.ended_at + timedelta(minutes=30)
    assert by_type["callback_task"].params["action"]["skip_if_reached"] is True
    notify_due = by_type["notify"].due_at
    assert notify_due is not None
    assert notify_due <= timezone.now()
    assert by_type["notify"].label == "Incoming call missed: Bitrix24 notification"


def test_rejected_call_is_only_logged(device: Device) -> None:
    call = call_end(call_event(call_make(device)), "rejected")
    assert types(call) == ["log_call", "register_call"]


def test_outgoing_busy_call_uses_the_not_answered_scenario(device: Device) -> None:
    call = call_end(call_event(call_make(device, direction="outgoing")), "busy")
    assert types(call) == ["log_call", "register_call"]
    assert CallPlan.objects.get(call=call, phase="end").trigger == Trigger.OUTGOING_NOT_ANSWERED


def test_a_call_first_seen_ended_is_logged_without_a_card(device: Device) -> None:
    call = call_make(device)
    call = call_end(call, "missed")
    planned = runs(call)
    assert "register_call" not in planned
    assert planned["log_call"].after is None
    assert planned["log_call"].due_at is not None


def test_unknown_number_creates_the_lead_before_the_call_is_registered(device: Device) -> None:
    call = call_event(call_make(device, phone="+48600999888", crm=UNKNOWN))
    planned = runs(call)
    create = next(run for run in planned.values() if run.action_type == "create_lead")
    assert create.due_at is not None
    assert planned["register_call"].after == create
    assert create.params["action"]["responsible"] == "round_robin"

    call_end(call, "missed")
    planned = runs(call)
    assert planned["log_call"].after == planned["register_call"]
    callback = next(run for run in planned.values() if run.action_type == "callback_task")
    # Waits for the lead (it binds the task to it), then counts its 30 minutes.
    assert callback.after == create
    assert callback.delay_seconds == 1800


def test_a_lookup_still_pending_is_finished_in_the_background_first(device: Device) -> None:
    call = call_event(call_make(device, crm={"status": "pending"}))
    call_end(call, "missed")
    assert types(call) == ["lookup_caller"]
    assert not CallPlan.objects.filter(call=call).exists()


@pytest.mark.parametrize(("status", "delay"), [("pending", 0), ("unavailable", 5)])
def test_the_background_lookup_waits_a_little_when_bitrix24_was_unavailable(
    device: Device, status: LookupStatus, delay: int
) -> None:
    before = timezone.now()
    call = call_event(call_make(device, crm={"status": status}))
    lookup = runs(call)["lookup_caller"]
    assert lookup.due_at is not None
    assert before + timedelta(seconds=delay) <= lookup.due_at
    assert lookup.due_at <= timezone.now() + timedelta(seconds=delay)
    # Due now: sent to a worker when the event's transaction commits; later: the dispatcher's.
    assert (lookup.dispatched_at is not None) is (delay == 0)


def test_inactive_scenario_plans_nothing(device: Device) -> None:
    Scenario.objects.filter(trigger=Trigger.INCOMING_REJECTED).update(is_active=False)
    call = call_end(call_make(device), "rejected")
    assert types(call) == []


def test_actions_can_differ_outside_office_hours(device: Device) -> None:
    scenario = Scenario.objects.get(trigger=Trigger.INCOMING_MISSED)
    scenario.actions.filter(action_type="notify").update(hours=ScenarioAction.Hours.OPEN)
    ScenarioAction.objects.create(
        scenario=scenario, position=99, action_type="notify", hours=ScenarioAction.Hours.CLOSED,
        recipients=["agent"], text_template="After hours: {number}",
    )  # fmt: skip
    weekday = call_end(call_make(device, call_id="day"), "missed")
    saturday = call_end(
        call_make(device, call_id="sat", started_at=T0 + timedelta(days=3)), "missed"
    )
    texts = {
        call.call_id: [
            run.params["action"]["text_template"]
            for run in ActionRun.objects.filter(call=call, action_type="notify")
        ]
        for call in (weekday, saturday)
    }
    assert texts["day"][0].startswith("Missed call from")
    assert texts["sat"] == ["After hours: {number}"]


def test_a_delay_in_working_time_skips_the_weekend(device: Device) -> None:
    ScenarioAction.objects.filter(action_type="callback_task").update(delay_in_working_time=True)
    friday_late = T0.replace(day=20, hour=17, minute=50)  # office closes at 18:00
    call = call_end(call_make(device, started_at=friday_late), "missed", ring=0)
    callback = ActionRun.objects.get(call=call, action_type="callback_task")
    assert callback.due_at is not None
    assert callback.due_at.astimezone(WARSAW) == T0.replace(day=23, hour=9, minute=20)


def test_chained_delays_are_counted_in_working_time_when_released(device: Device) -> None:
    call = call_make(device)
    first = outbox.run_plan(
        call_id=call.pk, action_type="notify", dedupe_key="first", due_at=timezone.now()
    )
    second = outbox.run_plan(
        call_id=call.pk, action_type="notify", dedupe_key="second", due_at=None, after=first,
        delay_seconds=3600, delay_in_working_time=True,
    )  # fmt: skip
    OfficeHours.objects.all().delete()
    now_local = timezone.now().astimezone(WARSAW)
    for day in range(7):
        # Open only from the next full hour, for one hour, every day.
        OfficeHours.objects.create(
            weekday=day, opens_at=(now_local + timedelta(hours=2)).time().replace(
                minute=0, second=0, microsecond=0), closes_at=(now_local + timedelta(hours=3))
            .time().replace(minute=0, second=0, microsecond=0),
        )  # fmt: skip
    claimed = outbox.run_claim(first.pk)
    assert claimed is not None
    outbox._run_finished(claimed, ActionRun.Status.DONE)
    first.refresh_from_db()
    assert first.status == ActionRun.Status.DONE
    second.refresh_from_db()
    opening = (now_local + timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)
    assert second.due_at is not None
    assert second.due_at.astimezone(WARSAW) == opening + timedelta(hours=1)


def test_turning_logging_off_closes_the_card_instead(device: Device) -> None:
    ScenarioAction.objects.filter(
        scenario__trigger=Trigger.INCOMING_REJECTED, action_type="log_call"
    ).delete()
    call = call_end(call_event(call_make(device)), "rejected")
    planned = runs(call)
    assert sorted(planned) == ["hide_card", "register_call"]
    assert planned["hide_card"].after == planned["register_call"]


def test_an_answered_call_completes_the_open_callback_tasks_of_the_number_once(
    device: Device,
) -> None:
    missed = call_end(call_make(device, call_id="missed"), "missed")
    task_run = ActionRun.objects.get(call=missed, action_type="callback_task")
    ActionRun.objects.filter(pk=task_run.pk).update(status=Status.DONE, result={"task_id": 77})
    later = T0 + timedelta(hours=1)
    back = call_end(
        call_make(device, call_id="back", direction="outgoing", started_at=later), "answered"
    )
    again = call_end(
        call_make(device, call_id="again", started_at=later + timedelta(minutes=5)), "answered"
    )
    completions = ActionRun.objects.filter(action_type="complete_callback_task")
    assert [(run.call_id, run.params["task_id"]) for run in completions] == [(back.pk, 77)]
    assert not ActionRun.objects.filter(call=again, action_type="complete_callback_task").exists()


def _action_id(trigger: str, action_type: str) -> str:
    return str(ScenarioAction.objects.get(scenario__trigger=trigger, action_type=action_type).pk)


def test_known_caller_facts_are_what_the_bridge_stored() -> None:
    # The planner reads the bridge contract's `crm` object; keep the fixture honest.
    assert set(KNOWN) == {"status", "entity", "responsible", "deals"}


def test_a_call_whose_direction_is_unknown_waits_for_the_event_that_tells(device: Device) -> None:
    call = call_make(device, direction="")
    call_end(call, "missed")
    assert types(call) == []
    call_event(call, "call.started", direction="incoming")
    assert types(call) == ["callback_task", "log_call", "notify"]
