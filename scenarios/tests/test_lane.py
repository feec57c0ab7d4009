"""A crowded portal's backlog run together (scenarios.lane): many calls' requests share batches,
each run's outcome stays its own. Rows are committed (the lane's threads each have their own
database connection); the lane's task runs in-process (eager Celery)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_tenants.utils import schema_context

from calls.models import Call, CallEvent, CallTransition, Device
from calls.services import device_register
from crm.limiter import PortalLimiter
from crm.models import Bitrix24Connection, Intent, RequestLog
from crm.redis_client import get_redis
from crm.session import Bitrix24Session, crm_session_reuse
from crm.tests.conftest import top_level
from scenarios import lane
from scenarios.models import ActionRun, CallPlan
from scenarios.outbox import lane_key, lane_running, run_plan
from scenarios.selectors import scenario_config
from tenants.memo import tenant_memo_scope

ANNA = {
    "status": "found",
    "entity": {"type": "contact", "id": 12, "name": "Anna Kowalska", "url": ""},
    "deals": [],
}


def _wipe() -> None:
    with schema_context("alpha"):
        for model in (CallTransition, CallEvent, ActionRun, CallPlan, RequestLog, Intent):
            model.objects.all().delete()
        Call.objects.all().delete()
        Device.objects.all().delete()
        Bitrix24Connection.objects.update(rate_limit_per_second=None, rate_limit_burst=None)


@pytest.fixture
def crowded(
    alpha_portal: Any, committed_db: Callable[[Callable[[], None]], None], eager: None
) -> Iterator[PortalLimiter]:
    """Alpha's portal, its limiter fast (20/s) and small (burst 10)."""
    # A lane of alpha's that the session's worker (celery_worker) still runs from an earlier
    # test would take this test's runs: it ends within a few seconds of finding none.
    with schema_context("alpha"):
        deadline = time.monotonic() + lane.LEASE_SECONDS + lane.DRAIN_SECONDS
        while lane_running() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not lane_running(), "an earlier test's lane of alpha is still running"
    committed_db(_wipe)
    _wipe()
    with schema_context("alpha"):
        Bitrix24Connection.objects.update(rate_limit_per_second=20.0, rate_limit_burst=10)
        row = Bitrix24Connection.objects.get()
        limiter = PortalLimiter(row.portal_domain, *row.rate_limit)
    limiter.reset()
    yield limiter
    limiter.reset()


def _fill(limiter: PortalLimiter, portal: Any) -> None:
    """The backlog's share of the bucket taken, now."""
    portal.control.clear_requests()
    while limiter.acquire(max_wait=0) is not None:
        pass


def _ended_calls(count: int, *, stranger_at: int | None = None) -> list[int]:
    """`count` calls that ended a minute ago, each with its log_call run due now (not sent)."""
    with schema_context("alpha"):
        device, _ = device_register(
            name="Marta's phone", phone_number="+48500100200", bitrix24_user_id=5, country="PL"
        )
        stranger, _ = device_register(
            name="Nobody's phone", phone_number="+48500100201", bitrix24_user_id=999, country="PL"
        )
        ended = timezone.now() - timedelta(minutes=1)
        ids = []
        for index in range(count):
            call = Call.objects.create(
                device=stranger if index == stranger_at else device, call_id=f"lane-{index}",
                direction="incoming", phone_number="+48600111222", phone_raw="+48600111222",
                status="ended", outcome="answered" if index % 2 else "missed",
                started_at=ended - timedelta(seconds=40), ended_at=ended, duration_seconds=30,
                crm=ANNA, crm_status="found",
            )  # fmt: skip
            with transaction.atomic():
                run = run_plan(
                    call_id=call.pk,
                    action_type="log_call",
                    dedupe_key=f"lane-{index}",
                    due_at=timezone.now() + timedelta(hours=1),  # not sent now
                )
            ids.append(run.pk)
        ActionRun.objects.filter(pk__in=ids).update(due_at=timezone.now())
        return ids


def test_a_crowded_portals_backlog_shares_batches_and_each_call_is_logged_once(
    alpha_portal: Any, crowded: PortalLimiter
) -> None:
    runs = _ended_calls(20, stranger_at=7)
    _fill(crowded, alpha_portal)

    with schema_context("alpha"):
        assert lane.run_or_coalesce(runs[0]) == "coalesced"  # the lane ran them all (eager)

        statuses = dict(ActionRun.objects.filter(pk__in=runs).values_list("pk", "status"))
        assert statuses.pop(runs[7]) == "failed"  # its own command's error, nobody else's
        assert set(statuses.values()) == {"done"}
        logged = Call.objects.exclude(b24_finished_at=None)
        assert logged.count() == 19
        external_ids = {f"simtrix:alpha:{pk}" for pk in logged.values_list("pk", flat=True)}
        failed = ActionRun.objects.get(pk=runs[7])
        assert "not found" in failed.last_error.lower()
    finished = alpha_portal.control.calls()["finished"]
    mine = [c for c in finished if c.get("EXTERNAL_CALL_ID") in external_ids]
    assert len(mine) == 19  # each registered and finished once
    assert not [c for c in alpha_portal.control.calls()["active"] if c.get("EXTERNAL_CALL_ID")]
    # 19 registers and 19 finishes (and the stranger's refused register) in shared batches:
    # a handful of requests instead of 39.
    sent = top_level(alpha_portal)
    assert {r["method"] for r in sent} == {"batch"}
    assert len(sent) <= 6


def test_an_uncrowded_portal_sends_each_run_alone_at_once(
    alpha_portal: Any, crowded: PortalLimiter
) -> None:
    runs = _ended_calls(2)
    alpha_portal.control.clear_requests()

    with schema_context("alpha"):
        assert lane.run_or_coalesce(runs[0]) == "done"
        assert lane.run_or_coalesce(runs[1]) == "done"
    methods = [r["method"] for r in top_level(alpha_portal)]
    assert (
        methods
        == [
            "telephony.externalcall.register",
            "telephony.externalcall.finish",
        ]
        * 2
    )


def test_a_run_handed_to_a_lane_as_it_ended_is_sent_at_once_when_the_crowd_is_gone(
    alpha_portal: Any, crowded: PortalLimiter
) -> None:
    [run] = _ended_calls(1)
    with schema_context("alpha"):
        # Handed over (outbox.run_unclaim) just after the lane's threads found nothing left.
        ActionRun.objects.filter(pk=run).update(dispatched_at=timezone.now())

        lane.lane_finish()

        assert ActionRun.objects.get(pk=run).status == "done"  # not after the dispatcher's 30 s
        assert Call.objects.get().b24_finished_at is not None


def test_while_a_lane_runs_its_due_runs_wait_for_it_not_for_a_worker_each(
    alpha_portal: Any, crowded: PortalLimiter
) -> None:
    [backlog, live] = _ended_calls(2)
    with schema_context("alpha"):
        Call.objects.filter(pk=ActionRun.objects.get(pk=live).call_id).update(status="ringing")
        ActionRun.objects.filter(pk=live).update(action_type="register_call")
        get_redis().set(lane_key(), "1", px=5000)  # the tenant's lane, running elsewhere
        try:
            # Planned now (eager Celery would run it on commit): left to the lane.
            with transaction.atomic():
                planned = run_plan(
                    call_id=ActionRun.objects.get(pk=backlog).call_id,
                    action_type="log_call",
                    dedupe_key="lane-planned",
                    due_at=timezone.now(),
                )
            # A message sent before the lane started: left to it, not even claimed.
            assert lane.run_or_coalesce(backlog) == "coalesced"
            # A ringing phone's run is never left to the lane.
            assert lane.run_or_coalesce(live, live=True) == "done"
        finally:
            get_redis().delete(lane_key())
        untouched = ActionRun.objects.filter(pk__in=[backlog, planned.pk])
        assert {(r.status, r.attempts) for r in untouched} == {("scheduled", 0)}
        assert ActionRun.objects.get(pk=planned.pk).dispatched_at is not None  # its wake stands

        # The lane gone (lane_finish would send them): a worker runs what it is handed.
        assert lane.run_or_coalesce(backlog) == "done"


def test_a_lanes_threads_read_the_scenarios_and_the_connection_once_in_a_while(
    alpha_portal: Any, crowded: PortalLimiter
) -> None:
    with schema_context("alpha"):
        first_session, second_session = Bitrix24Session.for_tenant(), Bitrix24Session.for_tenant()
        assert first_session is not second_session  # a session per unit of work, as always
        with CaptureQueriesContext(connection) as unscoped:
            scenario_config()
            scenario_config()
        with crm_session_reuse(), tenant_memo_scope():
            inside = [Bitrix24Session.for_tenant() for _ in range(3)]
            with CaptureQueriesContext(connection) as scoped:
                first = scenario_config()
                again = scenario_config()
            with schema_context("beta"), CaptureQueriesContext(connection) as betas:
                assert scenario_config() is not first  # another tenant's, never alpha's
        assert inside[0] is inside[1] is inside[2]
        assert again is first
        assert len(scoped) == len(unscoped) // 2 > 0
        assert any("scenarios_scenario" in q["sql"] for q in betas.captured_queries)
