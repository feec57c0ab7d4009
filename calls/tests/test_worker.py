"""Reliability with a real Celery worker: Bitrix24 goes down in the middle of a call, comes back,
and the call is finished in Bitrix24 exactly once."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.utils import timezone
from django_tenants.utils import schema_context
from pytest_django import Settings

from calls.models import Call, CallEvent, CallNote, CallRecording, CallTransition, Device
from calls.services import device_register
from calls.tests.conftest import T0, Bridge, ended, started
from calls.tests.test_handlers import FINISH, REGISTER, ok_requests
from scenarios.models import ActionRun, CallPlan
from scenarios.outbox import runs_dispatch

pytestmark = pytest.mark.worker


def _wipe_alpha() -> None:
    with schema_context("alpha"):
        for model in (CallTransition, CallEvent, CallNote, CallRecording, ActionRun, CallPlan):
            model.objects.all().delete()
        Call.objects.all().delete()
        Device.objects.all().delete()


def _wait(condition: Callable[[], bool], timeout: float = 40) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with schema_context("alpha"):
            if condition():
                return True
            # The beat's job, done here: resend due runs (backoff made shorter to save time).
            ActionRun.objects.filter(status="scheduled", due_at__gt=timezone.now()).update(
                due_at=timezone.now()
            )
            runs_dispatch()
        time.sleep(0.3)
    return False


def test_portal_down_during_the_call_is_finished_once_after_it_comes_back(
    committed_db: Callable, celery_worker: str, alpha_portal: Any
) -> None:
    committed_db(_wipe_alpha)
    with schema_context("alpha"):
        _, token = device_register(
            name="Marta's phone", phone_number="+48500100200", bitrix24_user_id=5, country="PL"
        )
    bridge = Bridge(token)
    alpha_portal.set_fault("down")
    assert bridge.send(started()).status_code == 201
    assert bridge.send(ended()).status_code == 200

    def failed_once() -> bool:
        return (
            ActionRun.objects.filter(attempts__gte=1, status="scheduled")
            .exclude(last_error="")
            .exists()
        )

    assert _wait(failed_once), "the worker never tried while the portal was down"
    with schema_context("alpha"):
        assert Call.objects.get().b24_finished_at is None

    alpha_portal.clear_faults()

    def finished() -> bool:
        return Call.objects.filter(b24_finished_at__isnull=False).exists() and not (
            ActionRun.objects.filter(action_type__in=["register_call", "log_call"])
            .exclude(status="done")
            .exists()
        )

    assert _wait(finished), "the call was not finished after the portal came back"
    time.sleep(1)  # any duplicate message would land now
    assert len(ok_requests(alpha_portal, REGISTER)) == 1
    assert len(ok_requests(alpha_portal, FINISH)) == 1
    assert len(alpha_portal.calls()["finished"]) == 1
    with schema_context("alpha"):
        call = Call.objects.get()
        assert call.b24_log_mode == Call.LogMode.TELEPHONY
        assert call.b24_activity_id in alpha_portal.state.activities


def test_due_runs_are_resent_by_the_beat_every_second_for_every_tenant(
    alpha: Any, settings: Settings
) -> None:
    # What stands in for the beat above; also makes this module runnable on its own (a `db`
    # test makes pytest-django set up the test database that committed_db then uses).
    entry = settings.CELERY_BEAT_SCHEDULE["outbox-dispatch"]
    assert (entry["task"], entry["schedule"]) == ("scenarios.dispatch_due", 1.0)
    assert "tenant_schemas" not in entry  # one task in public visits the tenants with due work


def test_the_same_event_sent_concurrently_is_stored_once(committed_db: Callable) -> None:
    """Idempotency is the unique constraint's job: racing twins give one event, one answer."""
    import threading

    from django.db import connection

    committed_db(_wipe_alpha)
    with schema_context("alpha"):
        _, token = device_register(
            name="Racing phone", phone_number="+48500100201", bitrix24_user_id=5, country="PL"
        )
    payloads = {"ended": ended("race-1", direction="incoming", phone_number="+48600111333"),
                "started": started("race-1")}  # fmt: skip
    answers: list[tuple[str, int, str]] = []
    barrier = threading.Barrier(6)

    def send(kind: str) -> None:
        try:
            barrier.wait()
            response = Bridge(token).send(payloads[kind])
            answers.append(
                (kind, response.status_code, json.dumps(response.json(), sort_keys=True))
            )
        finally:
            connection.close()

    threads = [
        threading.Thread(target=send, args=(kind,)) for kind in ["ended"] * 4 + ["started"] * 2
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with schema_context("alpha"):
        assert Call.objects.filter(call_id="race-1").count() == 1
        assert CallEvent.objects.filter(call__call_id="race-1").count() == 2
        call = Call.objects.get(call_id="race-1")
        assert (call.status, call.outcome, call.started_at) == ("ended", "answered", T0)
    assert len(answers) == 6
    for kind in payloads:
        # Every copy got the answer the stored one got: same status, same body.
        assert len({(status, body) for k, status, body in answers if k == kind}) == 1


def test_events_of_one_call_sent_at_once_all_count_and_converge(committed_db: Callable) -> None:
    """No row lock: an event is written only if its call is still the version it read, else it
    reads again. Every event of a call racing the others is kept, and the call ends the same as
    when they come one by one."""
    import threading
    from datetime import timedelta

    from django.db import connection

    from calls.tests.conftest import event

    committed_db(_wipe_alpha)
    with schema_context("alpha"):
        _, token = device_register(
            name="Busy phone", phone_number="+48500100202", bitrix24_user_id=5, country="PL"
        )
    calls = [f"burst-{n}" for n in range(5)]
    payloads = [
        payload
        for call_id in calls
        for payload in (
            started(call_id),
            event("call.answered", call_id, at=T0 + timedelta(seconds=10)),
            ended(call_id, at=T0 + timedelta(seconds=70), duration_seconds=60),
            # The phone's retry of the end, under a new event_id (a repeat, not a resend).
            ended(call_id, at=T0 + timedelta(seconds=70), duration_seconds=60),
        )
    ]
    statuses: list[int] = []
    barrier = threading.Barrier(len(payloads))

    def send(payload: dict[str, Any]) -> None:
        try:
            barrier.wait()
            statuses.append(Bridge(token).send(payload).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=send, args=(payload,)) for payload in payloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200] * (len(payloads) - len(calls)) + [201] * len(calls)
    with schema_context("alpha"):
        for call_id in calls:
            call = Call.objects.get(call_id=call_id)
            assert (call.status, call.outcome, call.duration_seconds) == ("ended", "answered", 60)
            assert (call.started_at, call.answered_at) == (T0, T0 + timedelta(seconds=10))
            assert CallEvent.objects.filter(call=call).count() == 4
            # The first event stored the call; each later one wrote over the version the one
            # before it left.
            assert call.version == 3
            transitions = CallTransition.objects.filter(call=call, source="bridge")
            last = transitions.order_by("at", "pk").last()
            assert last is not None
            assert last.to_status == "ended"
            # One lookup run for the call, however many events raced to plan it.
            assert ActionRun.objects.filter(call=call, action_type="lookup_caller").count() == 1


KNOWN = ["+48600111222", "+48600111333", "+48 600 111 444", "+48221234567", "+48601222333"]


def test_a_phone_back_online_with_its_queue_is_logged_once_per_call_in_shared_batches(
    committed_db: Callable, celery_worker: str, alpha_portal: Any
) -> None:
    """Thirty calls from a phone's offline queue reach a portal that lets 2 requests a second
    through: its backlog runs in the lane (scenarios.lane), the calls' requests sharing batches,
    and every call is registered and finished exactly once."""
    from datetime import timedelta

    from crm.limiter import PortalLimiter
    from crm.models import Bitrix24Connection, RequestLog

    committed_db(_wipe_alpha)
    with schema_context("alpha"):
        _, token = device_register(
            name="Back online", phone_number="+48500100203", bitrix24_user_id=5, country="PL"
        )
        Bitrix24Connection.objects.update(rate_limit_per_second=2.0, rate_limit_burst=10)
        row = Bitrix24Connection.objects.get()
        limiter = PortalLimiter(row.portal_domain, *row.rate_limit)
    limiter.reset()

    def restore() -> None:
        limiter.reset()
        with schema_context("alpha"):
            Bitrix24Connection.objects.update(rate_limit_per_second=None, rate_limit_burst=None)
            RequestLog.objects.all().delete()

    committed_db(restore)
    alpha_portal.control.clear_requests()
    count = 30
    events = []
    for n in range(count):
        at = T0 + timedelta(minutes=3 * n)
        number = KNOWN[n % len(KNOWN)] if n % 3 else f"+48600999{n:03d}"
        outcome = "answered" if n % 2 else "missed"
        events += [
            started(f"queued-{n}", at=at, phone_number=number),
            ended(
                f"queued-{n}",
                at=at + timedelta(seconds=50),
                outcome=outcome,
                duration_seconds=40 if outcome == "answered" else 0,
            ),
        ]
    assert Bridge(token).post("events/", {"events": events}).status_code == 200

    def all_logged() -> bool:
        return Call.objects.filter(b24_finished_at__isnull=False).count() == count

    assert _wait(all_logged, timeout=120)
    with schema_context("alpha"):
        assert not ActionRun.objects.filter(status="failed").exists()
        external_ids = {f"simtrix:alpha:{pk}" for pk in Call.objects.values_list("pk", flat=True)}
        shared = [
            parent
            for parent in RequestLog.objects.filter(parent__isnull=True, method="batch")
            if len({c.call_id for c in RequestLog.objects.filter(parent=parent)}) >= 5
        ]
    finished = [
        c for c in alpha_portal.control.calls()["finished"] if c["EXTERNAL_CALL_ID"] in external_ids
    ]
    assert sorted(c["EXTERNAL_CALL_ID"] for c in finished) == sorted(external_ids)  # once each
    sent = [
        r for r in alpha_portal.state.query_requests(in_batch=False) if r["method"] != "oauth.token"
    ]
    # Alone, each call would spend 3 to 6 requests; the lane carried them in shared batches.
    assert len(sent) < count
    assert shared
