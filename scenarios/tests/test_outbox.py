from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from django.utils import timezone
from django_tenants.utils import schema_context

from calls.models import Call
from calls.services import device_register
from crm.errors import Bitrix24PermanentError, Bitrix24TransientError
from scenarios import outbox
from scenarios.models import ActionRun
from tenants.models import Tenant

Status = ActionRun.Status


@pytest.fixture
def call(alpha: Tenant) -> Call:
    device, _ = device_register(
        name="Phone", phone_number="+48600000001", bitrix24_user_id=5, country="PL"
    )
    return Call.objects.create(device=device, call_id="c-1", direction="incoming")


class Recorder(list):
    """The runs the test handler executed; `fail_with` makes it raise."""

    fail_with: Exception | None = None


@pytest.fixture
def handled() -> Iterator[Recorder]:
    recorder = Recorder()

    @outbox.action_handler("test_action")
    def handler(run: ActionRun) -> dict:
        recorder.append(run.pk)
        if recorder.fail_with is not None:
            raise recorder.fail_with
        return {"done_for": run.pk}

    yield recorder
    outbox.HANDLERS.pop("test_action", None)


def _plan(call: Call, key: str = "k1", due_in: float = 0, **kwargs: Any) -> ActionRun:
    return outbox.run_plan(
        call_id=call.pk,
        action_type="test_action",
        dedupe_key=key,
        due_at=timezone.now() + timedelta(seconds=due_in),
        **kwargs,
    )


def test_planning_the_same_work_twice_yields_one_row(call: Call) -> None:
    first = _plan(call)
    second = _plan(call)
    assert first.pk == second.pk
    assert ActionRun.objects.count() == 1


def test_immediate_run_is_sent_after_commit_and_executes_once(
    call: Call, handled: Recorder, eager: None, django_capture_on_commit_callbacks
) -> None:
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        run = _plan(call)
        assert handled == []  # nothing leaves before the transaction commits
    assert len(callbacks) == 1
    run.refresh_from_db()
    assert run.status == Status.DONE
    assert run.result == {"done_for": run.pk}
    assert handled == [run.pk]
    # A duplicate message is a no-op.
    assert outbox.run_execute(run.pk) == "not-claimed"
    assert handled == [run.pk]


def test_run_not_yet_due_is_not_claimed(call: Call, handled: Recorder) -> None:
    run = _plan(call, due_in=60)
    assert outbox.run_execute(run.pk) == "not-claimed"
    assert handled == []
    assert ActionRun.objects.get(pk=run.pk).status == Status.SCHEDULED


def test_transient_failure_is_retried_later_with_backoff(call: Call, handled: Recorder) -> None:
    handled.fail_with = Bitrix24TransientError("portal down", code="", http_status=503)
    run = _plan(call)
    before = timezone.now()
    assert outbox.run_execute(run.pk) == Status.SCHEDULED
    run.refresh_from_db()
    assert run.attempts == 1
    assert "portal down" in run.last_error
    assert run.due_at is not None
    assert run.due_at > before + timedelta(seconds=2)
    assert run.dispatched_at is None


def test_transient_failures_stop_at_the_cap(call: Call, handled: Recorder) -> None:
    handled.fail_with = Bitrix24TransientError("still down")
    run = _plan(call)
    for _ in range(outbox.MAX_ATTEMPTS):
        ActionRun.objects.filter(pk=run.pk).update(due_at=timezone.now())
        outbox.run_execute(run.pk)
    run.refresh_from_db()
    assert run.status == Status.FAILED
    assert run.attempts == outbox.MAX_ATTEMPTS
    assert len(handled) == outbox.MAX_ATTEMPTS


def test_permanent_failure_fails_at_once(call: Call, handled: Recorder) -> None:
    handled.fail_with = Bitrix24PermanentError("Task title is not specified", code="")
    run = _plan(call)
    assert outbox.run_execute(run.pk) == Status.FAILED
    run.refresh_from_db()
    assert run.attempts == 1
    assert "Task title is not specified" in run.last_error


def test_skipped_run_keeps_its_reason(call: Call, handled: Recorder) -> None:
    handled.fail_with = outbox.ActionSkipped("caller was reached meanwhile")
    run = _plan(call)
    assert outbox.run_execute(run.pk) == Status.SKIPPED
    assert ActionRun.objects.get(pk=run.pk).last_error == "caller was reached meanwhile"


def test_chained_run_becomes_due_when_its_predecessor_finishes(
    call: Call, handled: Recorder
) -> None:
    first = _plan(call, key="first")
    second = outbox.run_plan(
        call_id=call.pk, action_type="test_action", dedupe_key="second", due_at=None,
        after=first, delay_seconds=120,
    )  # fmt: skip
    assert outbox.runs_dispatch() == 0 or ActionRun.objects.get(pk=second.pk).due_at is None
    before = timezone.now()
    outbox.run_execute(first.pk)
    second.refresh_from_db()
    assert second.due_at is not None
    assert before + timedelta(seconds=119) < second.due_at < timezone.now() + timedelta(seconds=121)


def test_dispatcher_sends_due_runs_and_takes_back_runs_of_dead_workers(
    call: Call, handled: Recorder, eager: None
) -> None:
    due = _plan(call, key="due", due_in=60)
    ActionRun.objects.filter(pk=due.pk).update(due_at=timezone.now())
    stale = _plan(call, key="stale")
    ActionRun.objects.filter(pk=stale.pk).update(
        status=Status.RUNNING, claimed_at=timezone.now() - timedelta(hours=1)
    )
    future = _plan(call, key="future", due_in=3600)

    assert outbox.runs_dispatch() == 2
    statuses = dict(ActionRun.objects.values_list("dedupe_key", "status"))
    assert statuses == {"due": Status.DONE, "stale": Status.DONE, "future": Status.SCHEDULED}
    assert sorted(handled) == sorted([due.pk, stale.pk])
    assert future.pk not in handled


def test_dispatcher_resends_a_lost_message_only_after_the_window(
    call: Call, handled: Recorder, eager: None
) -> None:
    run = _plan(call)  # marked as sent; its message is "lost" (on_commit never ran)
    assert outbox.runs_dispatch() == 0
    ActionRun.objects.filter(pk=run.pk).update(dispatched_at=timezone.now() - timedelta(minutes=5))
    assert outbox.runs_dispatch() == 1
    assert ActionRun.objects.get(pk=run.pk).status == Status.DONE


def test_failed_run_can_be_retried(
    call: Call, handled: Recorder, eager: None, django_capture_on_commit_callbacks
) -> None:
    handled.fail_with = Bitrix24PermanentError("Access denied.")
    run = _plan(call)
    outbox.run_execute(run.pk)
    handled.fail_with = None
    with django_capture_on_commit_callbacks(execute=True):
        assert outbox.run_retry(run_ids=[run.pk]) == 1
    run.refresh_from_db()
    assert run.status == Status.DONE
    assert outbox.run_retry(run_ids=[run.pk]) == 0


def test_a_skipped_run_releases_its_successors_and_a_lost_claim_neither_finishes_nor_releases(
    call: Call, handled: Recorder
) -> None:
    first = _plan(call, key="first")
    second = outbox.run_plan(
        call_id=call.pk, action_type="test_action", dedupe_key="second", due_at=None, after=first
    )
    claimed = outbox.run_claim(first.pk)
    assert claimed is not None
    # The claim expired and the dispatcher took the run back (a worker thought dead).
    ActionRun.objects.filter(pk=first.pk).update(status=Status.SCHEDULED, claimed_at=None)
    outbox._run_finished(claimed, Status.DONE, result={"late": True})
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, first.result, second.due_at) == (Status.SCHEDULED, {}, None)

    handled.fail_with = outbox.ActionSkipped("nothing to do")
    assert outbox.run_execute(first.pk) == Status.SKIPPED
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, first.last_error, first.done_at is not None) == (
        Status.SKIPPED,
        "nothing to do",
        True,
    )
    assert second.due_at is not None  # chained after it: due now


def test_a_run_planned_after_one_that_is_finishing_is_released_by_it_not_lost(
    committed_call: Callable[..., Call],
) -> None:
    call = committed_call("c-race", "+48600000099")
    with schema_context("alpha"):
        with transaction.atomic():
            first = _plan(call, key="race-first")
        claimed = outbox.run_claim(first.pk)
        assert claimed is not None
        finished = threading.Event()

        def finish() -> None:  # the worker that ran `first`, on its own connection
            try:
                with schema_context("alpha"):
                    outbox._run_finished(claimed, Status.DONE)
            finally:
                connection.close()
                finished.set()

        # An event plans a run after `first` while `first` is finishing: the finish waits for
        # the event's transaction, then reads the successors it committed.
        with transaction.atomic():
            second = outbox.run_plan(
                call_id=call.pk, action_type="test_action", dedupe_key="race-second",
                due_at=None, after=first,
            )  # fmt: skip
            worker = threading.Thread(target=finish)
            worker.start()
            assert not finished.wait(0.5)  # waiting for the share lock on `first`
        worker.join(10)
        assert finished.is_set()
        second.refresh_from_db()
        assert ActionRun.objects.get(pk=first.pk).status == Status.DONE
        assert second.due_at is not None  # released, not left waiting for ever
