"""The dispatcher across tenants: the public index of due work, a pass, a visit, the sweep,
the periodic per-tenant jobs, lateness."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.utils import timezone
from django_tenants.utils import schema_context

from calls.models import Call, Device
from calls.services import device_register
from calls.tasks import recordings_expire_task
from scenarios import outbox, schedule
from scenarios.models import ActionRun, RoutingSettings
from tenants.connection import tenant_connection
from tenants.fanout import tenants_each
from tenants.models import OutboxWake, Tenant, TenantSchedule

Status = ActionRun.Status


@pytest.fixture
def handled() -> Iterator[list[int]]:
    """The runs a test handler executed, in this process (eager mode)."""
    executed: list[int] = []

    @outbox.action_handler("test_action")
    def handler(run: ActionRun) -> dict:
        executed.append(run.pk)
        return {}

    yield executed
    outbox.HANDLERS.pop("test_action", None)


@pytest.fixture
def index(alpha: Tenant) -> None:
    """This test's view of the public index: what other tests committed is out of the way."""
    OutboxWake.objects.all().delete()


def _call(call_id: str = "c-1") -> Call:
    device = (
        Device.objects.first()
        or (
            device_register(
                name="Phone", phone_number="+48600000001", bitrix24_user_id=5, country="PL"
            )[0]
        )
    )
    return Call.objects.create(device=device, call_id=call_id, direction="incoming")


def _plan(call: Call, key: str, *, due_in: float | None = 0, **kwargs: Any) -> ActionRun:
    return outbox.run_plan(
        call_id=call.pk,
        action_type="test_action",
        dedupe_key=key,
        due_at=None if due_in is None else timezone.now() + timedelta(seconds=due_in),
        **kwargs,
    )


def _wakes(tenant: Tenant) -> list[datetime]:
    return sorted(OutboxWake.objects.filter(tenant=tenant).values_list("at", flat=True))


def _time_passes(tenant: Tenant, **runs: Any) -> None:
    """What the wall clock does: the tenant's wakes (and the given runs' changes) are due now."""
    OutboxWake.objects.filter(tenant=tenant).update(at=timezone.now() - timedelta(seconds=1))
    if runs:
        ActionRun.objects.update(**runs)


# --- What wakes a tenant -------------------------------------------------------------------


def test_a_delayed_run_wakes_its_tenant_when_it_falls_due(alpha: Tenant, index: None) -> None:
    run = _plan(_call(), "later", due_in=600)
    assert _wakes(alpha) == [run.due_at]


def test_an_immediate_run_wakes_its_tenant_for_when_its_message_may_be_lost(
    alpha: Tenant, index: None
) -> None:
    run = _plan(_call(), "now")
    assert run.dispatched_at is not None
    assert _wakes(alpha) == [run.dispatched_at + outbox.redispatch_after()]


def test_a_chained_run_wakes_nothing_until_its_predecessor_finishes(
    alpha: Tenant, index: None, handled: list[int]
) -> None:
    call = _call()
    first = _plan(call, "first", due_in=600)
    _plan(call, "second", due_in=None, after=first, delay_seconds=120)
    assert _wakes(alpha) == [first.due_at]  # the successor has no time yet
    ActionRun.objects.filter(pk=first.pk).update(due_at=timezone.now())
    outbox.run_execute(first.pk)
    second = ActionRun.objects.get(dedupe_key="second")
    assert second.due_at in _wakes(alpha)


def test_a_retried_run_wakes_its_tenant_at_its_backoff(
    alpha: Tenant, index: None, handled: list[int]
) -> None:
    from crm.errors import Bitrix24TransientError

    @outbox.action_handler("test_action")
    def failing(run: ActionRun) -> dict:
        raise Bitrix24TransientError("portal down", code="", http_status=503)

    run = _plan(_call(), "flaky")
    OutboxWake.objects.all().delete()
    assert outbox.run_execute(run.pk) == Status.SCHEDULED
    run.refresh_from_db()
    assert _wakes(alpha) == [run.due_at]


def test_an_event_planning_several_runs_writes_one_wake_for_them(
    alpha: Tenant, index: None, django_capture_on_commit_callbacks: Any
) -> None:
    call = _call()
    with django_capture_on_commit_callbacks() as callbacks:
        first = _plan(call, "register")
        _plan(call, "log")
        _plan(call, "sync", due_in=300)  # later than the first wake: read at that visit
        soon = _plan(call, "lookup", due_in=5)  # earlier: a wake of its own
    assert len(callbacks) == 1  # and one callback sends both immediate runs
    assert first.dispatched_at is not None
    assert _wakes(alpha) == [soon.due_at, first.dispatched_at + outbox.redispatch_after()]


def test_a_wake_rolled_back_with_its_savepoint_is_written_again(alpha: Tenant, index: None) -> None:
    call = _call()

    def planned_then_undone() -> None:
        with transaction.atomic():
            _plan(call, "undone")
            raise RuntimeError

    with transaction.atomic():
        with pytest.raises(RuntimeError):
            planned_then_undone()
        kept = _plan(call, "kept")
    assert kept.dispatched_at is not None
    assert _wakes(alpha) == [kept.dispatched_at + outbox.redispatch_after()]


def test_nothing_is_written_to_the_index_when_the_transaction_rolls_back(
    alpha: Tenant, index: None
) -> None:
    call = _call()

    def event_that_fails() -> None:
        with transaction.atomic():
            _plan(call, "doomed", due_in=60)
            raise RuntimeError

    with pytest.raises(RuntimeError):
        event_that_fails()
    assert _wakes(alpha) == []
    assert not ActionRun.objects.exists()


# --- A pass ---------------------------------------------------------------------------------


def test_a_pass_with_nothing_due_is_one_query_however_many_tenants(
    alpha: Tenant, beta: Tenant, index: None, django_assert_num_queries: Any
) -> None:
    in_an_hour = timezone.now() + timedelta(hours=1)
    OutboxWake.objects.bulk_create([OutboxWake(tenant=t, at=in_an_hour) for t in (alpha, beta)])
    with django_assert_num_queries(1):
        assert schedule.outbox_dispatch() == 0
    assert len(_wakes(alpha)) == len(_wakes(beta)) == 1
    assert schedule.dispatcher_heartbeat()["stale"] is False


def test_a_pass_visits_only_the_tenants_with_due_work_and_sends_it(
    alpha: Tenant, beta: Tenant, index: None, handled: list[int], eager: None
) -> None:
    call = _call()
    due = _plan(call, "due", due_in=600)
    later = _plan(call, "later", due_in=3600)
    ActionRun.objects.filter(pk=due.pk).update(due_at=timezone.now())
    assert due.due_at is not None
    OutboxWake.objects.filter(tenant=alpha, at=due.due_at).update(at=timezone.now())
    beta_wake = OutboxWake.objects.create(tenant=beta, at=timezone.now() + timedelta(hours=2))

    assert schedule.outbox_dispatch() == 1
    assert handled == [due.pk]
    assert ActionRun.objects.get(pk=due.pk).status == Status.DONE
    assert ActionRun.objects.get(pk=later.pk).status == Status.SCHEDULED
    # Alpha is woken for its later run (and in case the sent message is lost); beta was not
    # visited.
    assert later.due_at in _wakes(alpha)
    assert min(_wakes(alpha)) > timezone.now() + timedelta(seconds=20)
    assert list(OutboxWake.objects.filter(tenant=beta)) == [beta_wake]
    visited = TenantSchedule.objects.get(tenant=alpha).outbox_visited_at
    assert visited is not None
    assert visited > timezone.now() - timedelta(minutes=1)
    assert TenantSchedule.objects.get(tenant=beta).outbox_visited_at is None


def test_a_pass_sends_what_falls_due_before_the_next_one(
    alpha: Tenant, index: None, handled: list[int], eager: None
) -> None:
    """Due within the lookahead: sent now with its ETA (eager mode runs it at once; the claim
    allows a worker clock CLAIM_EARLY ahead of the sender's)."""
    soon = _plan(_call(), "soon", due_in=0.8)
    far = _plan(_call("c-2"), "far", due_in=30)
    _time_passes(alpha)
    assert schedule.outbox_dispatch() == 1
    assert handled == [soon.pk]
    assert ActionRun.objects.get(pk=far.pk).dispatched_at is None


def test_a_lost_message_is_sent_again_by_a_pass(
    alpha: Tenant, index: None, handled: list[int], eager: None
) -> None:
    run = _plan(_call(), "lost")  # marked as sent; its message never arrives
    assert schedule.outbox_dispatch() == 0  # not due: the window is open
    _time_passes(alpha, dispatched_at=timezone.now() - timedelta(minutes=1))
    assert schedule.outbox_dispatch() == 1
    assert handled == [run.pk]
    assert ActionRun.objects.get(pk=run.pk).status == Status.DONE


def test_a_dead_workers_run_is_taken_back_by_a_pass(
    alpha: Tenant, index: None, handled: list[int], eager: None
) -> None:
    run = _plan(_call(), "orphan")
    claimed = timezone.now()
    ActionRun.objects.filter(pk=run.pk).update(status=Status.RUNNING, claimed_at=claimed)
    _time_passes(alpha)
    schedule.outbox_dispatch()
    assert _wakes(alpha) == [claimed + outbox.lease()]  # when its lease runs out
    _time_passes(alpha, claimed_at=claimed - timedelta(hours=1))
    assert schedule.outbox_dispatch() == 1
    assert handled == [run.pk]
    assert ActionRun.objects.get(pk=run.pk).status == Status.DONE


def test_the_sweep_wakes_every_tenant(alpha: Tenant, beta: Tenant, index: None) -> None:
    assert schedule.outbox_sweep() == Tenant.objects.exclude(schema_name="public").count()
    assert len(_wakes(alpha)) == len(_wakes(beta)) == 1


def test_a_failing_visit_is_tried_again_and_the_pass_goes_on(
    committed_db: Callable, handled: list[int], eager: None, tenants: dict[str, Tenant]
) -> None:
    def wipe() -> None:
        with schema_context("alpha"):
            ActionRun.objects.all().delete()
            Call.objects.filter(call_id="broken-1").delete()
        Tenant.objects.filter(schema_name="nowhere").delete()
        OutboxWake.objects.all().delete()

    committed_db(wipe)
    wipe()
    with schema_context("alpha"):
        run = _plan(_call("broken-1"), "due", due_in=600)
        ActionRun.objects.filter(pk=run.pk).update(due_at=timezone.now())
    # A tenant whose schema is gone, due first.
    Tenant.objects.bulk_create([Tenant(schema_name="nowhere", name="Broken")])
    broken = Tenant.objects.get(schema_name="nowhere")
    OutboxWake.objects.create(tenant=broken, at=timezone.now() - timedelta(seconds=5))
    _time_passes(tenants["alpha"])

    assert schedule.outbox_dispatch() == 1
    assert handled == [run.pk]
    retry = _wakes(broken)
    assert len(retry) == 1
    assert retry[0] > timezone.now()


def test_a_wake_written_by_a_transaction_in_flight_survives_the_visit(
    committed_db: Callable, handled: list[int], eager: None, tenants: dict[str, Tenant]
) -> None:
    """The dispatcher deletes only the wakes it can see: a run committed after the visit read
    the outbox keeps its own wake, and the next pass sends it."""
    alpha = tenants["alpha"]

    def wipe() -> None:
        with schema_context("alpha"):
            ActionRun.objects.all().delete()
            Call.objects.filter(call_id__startswith="inflight").delete()
            Device.objects.all().delete()
        OutboxWake.objects.all().delete()

    committed_db(wipe)
    wipe()
    with schema_context("alpha"):
        call = _call("inflight-1")
    OutboxWake.objects.create(tenant=alpha, at=timezone.now() - timedelta(seconds=1))
    planned, release = threading.Event(), threading.Event()

    def event_in_flight() -> None:
        try:
            with schema_context("alpha"), transaction.atomic():
                _plan(call, "inflight", due_in=0.5)
                planned.set()
                release.wait(10)
        finally:
            connection.close()

    thread = threading.Thread(target=event_in_flight)
    thread.start()
    assert planned.wait(10)
    assert schedule.outbox_dispatch() == 0  # visits alpha: the run is not visible yet
    release.set()
    thread.join(10)
    assert len(_wakes(alpha)) == 1  # the in-flight transaction's wake was not deleted
    _time_passes(alpha)
    assert schedule.outbox_dispatch() == 1
    with schema_context("alpha"):
        assert handled == [ActionRun.objects.get(dedupe_key="inflight").pk]


# --- Late runs ------------------------------------------------------------------------------


def _late_run(minutes: int = 5) -> ActionRun:
    """Due `minutes` ago and sent just now, but no worker has started it."""
    run = _plan(_call(), f"late-{minutes}", due_in=600)
    ActionRun.objects.filter(pk=run.pk).update(
        due_at=timezone.now() - timedelta(minutes=minutes), dispatched_at=timezone.now()
    )
    return ActionRun.objects.get(pk=run.pk)


def test_a_run_due_over_a_minute_and_not_started_is_late_in_every_view(
    alpha: Tenant, index: None
) -> None:
    run = _late_run(5)
    on_time = _plan(_call("c-2"), "on-time", due_in=600)
    assert run.late_by is not None
    assert run.late_by > timedelta(minutes=4)
    assert on_time.late_by is None
    _time_passes(alpha)
    schedule.outbox_dispatch()  # sent just now: not sent again, counted late
    facts = TenantSchedule.objects.get(tenant=alpha)
    assert (facts.outbox_late, facts.outbox_oldest_due_at) == (1, run.due_at)
    overall = schedule.outbox_late_overall()
    assert overall["late"] == 1
    assert 290 < overall["oldest_late_seconds"] < 320

    out = StringIO()
    call_command("outbox_status", stdout=out)
    status = json.loads(out.getvalue())
    assert status["tenants"]["alpha"]["late"] == 1
    assert status["tenants"]["alpha"]["due"] == 1
    assert status["tenants"]["alpha"]["failed"] == 0
    assert 290 < status["tenants"]["alpha"]["oldest_due_age_seconds"] < 320
    assert status["tenants"]["beta"]["late"] == 0
    assert set(status["dispatcher"]) >= {"last_pass_at", "age_seconds", "stale"}


# --- Periodic per-tenant jobs ---------------------------------------------------------------


class _Recorded:
    """Stands in for a Celery task: records the schema each message would carry."""

    name = "test.recorded"

    def __init__(self) -> None:
        self.schemas: list[str] = []

    def apply_async(self, *args: Any, **kwargs: Any) -> None:
        self.schemas.append(tenant_connection.schema_name)


def test_a_periodic_job_is_queued_once_in_every_active_tenant(alpha: Tenant, beta: Tenant) -> None:
    task = _Recorded()
    assert tenants_each(task) == len(task.schemas)
    assert {"alpha", "beta"} <= set(task.schemas)
    assert "public" not in task.schemas
    Tenant.objects.filter(pk=beta.pk).update(is_active=False)
    again = _Recorded()
    tenants_each(again)
    assert "beta" not in again.schemas
    assert "alpha" in again.schemas


def test_only_tenants_that_route_by_the_work_day_are_refreshed_every_minute(
    alpha: Tenant,
) -> None:
    assert "alpha" not in schedule.availability_schemas()
    routing = RoutingSettings.objects.get_or_create(singleton=1)[0]
    routing.use_timeman = True
    routing.save()
    assert TenantSchedule.objects.get(tenant=alpha).availability_refresh is True
    assert "alpha" in schedule.availability_schemas()
    routing.use_timeman = False
    routing.save()
    assert "alpha" not in schedule.availability_schemas()


def test_a_per_tenant_job_run_in_public_does_nothing(
    tenants: dict[str, Tenant], db: None, caplog: pytest.LogCaptureFixture
) -> None:
    with schema_context("public"):
        assert recordings_expire_task.run() == 0
    assert "per-tenant job" in caplog.text
