"""Exactly once and never lost, when things break on purpose: Redis flushed, a worker killed
mid-action, Bitrix24 down for a while. Each test runs its own worker process on its own queue.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
from django.conf import settings as django_settings
from django.db.models import Q
from django.utils import timezone
from django_tenants.utils import schema_context

from calls.services import device_register
from crm.models import Intent
from scenarios.models import ActionRun
from scenarios.tests.e2e import (
    Phone,
    Worker,
    alpha_wipe,
    dispatching,
    make_due,
    wait_for,
    worker_env,
)

pytestmark = pytest.mark.worker
Status = ActionRun.Status
ANNA = "+48600111222"


@pytest.fixture
def queue(alpha_portal: Any, committed_db: Callable, settings: Any) -> Iterator[str]:
    """A queue of this test's own; the test process sends there while it runs."""
    from simtrix.celery import app

    committed_db(alpha_wipe)
    settings.SIMTRIX_RUN_REDISPATCH_SECONDS = 1
    settings.SIMTRIX_RUN_LEASE_SECONDS = 3
    name = f"rel-{uuid.uuid4().hex[:8]}"
    previous = app.conf.task_default_queue
    app.conf.task_default_queue = name
    yield name
    app.conf.task_default_queue = previous


@pytest.fixture
def phone(queue: str) -> Phone:
    with schema_context("alpha"):
        _, token = device_register(
            name="Ewa's phone", phone_number="+48500100300", bitrix24_user_id=9, country="PL"
        )
    return Phone(token)


@pytest.fixture
def start_worker(queue: str) -> Iterator[Callable[[], Worker]]:
    started: list[Worker] = []

    def start() -> Worker:
        env = worker_env(
            queue, SIMTRIX_RUN_BACKOFF_BASE_SECONDS="0.5", SIMTRIX_RUN_BACKOFF_CAP_SECONDS="2"
        )
        worker = Worker(queue, env).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def all_done() -> bool:
    with schema_context("alpha"):
        soon = timezone.now() + timedelta(seconds=60)
        open_runs = ActionRun.objects.filter(status__in=[Status.SCHEDULED, Status.RUNNING])
        return not open_runs.filter(Q(due_at__lte=soon) | Q(due_at__isnull=True)).exists()


def statuses() -> dict[str, list[str]]:
    with schema_context("alpha"):
        found: dict[str, list[str]] = {}
        for run in ActionRun.objects.order_by("pk"):
            found.setdefault(run.action_type, []).append(run.status)
        return found


def test_the_default_scenarios_are_installed(alpha: Any) -> None:
    # (Makes pytest-django create the test database when this module runs alone.)
    assert ActionRun.objects.count() == 0


def test_actions_still_run_once_after_redis_lost_their_messages(
    phone: Phone, alpha_portal: Any, start_worker: Callable[[], Worker]
) -> None:
    phone.call("m-1", number=ANNA, outcome="missed")  # messages sent, nobody consuming yet
    with schema_context("alpha"):
        sent = ActionRun.objects.filter(dispatched_at__isnull=False).count()
    assert sent >= 1
    redis.Redis.from_url(django_settings.REDIS_URL).flushdb()
    start_worker()
    with dispatching():
        wait_for(all_done, timeout=30)
        with schema_context("alpha"):
            make_due(action_type="callback_task")
        wait_for(all_done, timeout=30)
    assert statuses() == {
        "register_call": ["done"], "log_call": ["done"], "notify": ["done"],
        "callback_task": ["done"],
    }  # fmt: skip
    with schema_context("alpha"):
        assert set(ActionRun.objects.values_list("attempts", flat=True)) == {1}
    assert len(alpha_portal.calls()["finished"]) == 1
    assert len(alpha_portal.state.notifications) == 1
    assert len(alpha_portal.state.tasks) == 1


def test_an_action_whose_worker_was_killed_mid_request_runs_once(
    phone: Phone, alpha_portal: Any, start_worker: Callable[[], Worker]
) -> None:
    first = start_worker()
    with dispatching():
        phone.call("m-2", number=ANNA, outcome="missed")
        wait_for(all_done, timeout=30)
        # Bitrix24 takes 3 s to create the task: the worker dies while it waits for the answer.
        alpha_portal.set_fault("slow", delay_ms=3000, method="tasks.task.add")
        with schema_context("alpha"):
            make_due(action_type="callback_task")

        def in_flight() -> bool:
            with schema_context("alpha"):
                running = ActionRun.objects.filter(
                    action_type="callback_task", status=Status.RUNNING
                ).exists()
                sending = Intent.objects.filter(
                    method="tasks.task.add", status=Intent.Status.SENDING
                ).exists()
            return running and sending

        wait_for(in_flight, timeout=20, interval=0.05)
        time.sleep(1)  # the request is at the portal, which answers after 3 s
        first.kill()
        alpha_portal.clear_faults()
        wait_for(lambda: len(alpha_portal.state.tasks) == 1, timeout=10)  # it did get made
        with schema_context("alpha"):
            # Time passes: crm's claim on the request (2 min) runs out, as after a real crash.
            Intent.objects.filter(method="tasks.task.add").update(
                claimed_until=timezone.now() - timedelta(seconds=1)
            )
        start_worker()
        wait_for(all_done, timeout=40)
    with schema_context("alpha"):
        task_run = ActionRun.objects.get(action_type="callback_task")
    assert task_run.status == Status.DONE, task_run.last_error
    assert task_run.attempts >= 2
    [task] = alpha_portal.state.tasks.values()
    assert task_run.result["task_id"] == task["ID"]


def test_everything_completes_once_after_bitrix24_was_down_for_a_while(
    phone: Phone, alpha_portal: Any, start_worker: Callable[[], Worker]
) -> None:
    alpha_portal.set_fault("down", mode="http503")
    start_worker()
    with dispatching():
        phone.call("known-missed", number=ANNA, outcome="missed")
        phone.call("known-answered", number="+48600111555", outcome="answered", talk=60)
        phone.call("unknown-missed", number="+48600999777", outcome="missed")

        def retrying() -> bool:
            with schema_context("alpha"):
                return ActionRun.objects.filter(attempts__gte=2, status=Status.SCHEDULED).exists()

        wait_for(retrying, timeout=30)
        assert not alpha_portal.calls()["finished"]
        alpha_portal.clear_faults()
        wait_for(all_done, timeout=60)
    # The calls had ended before their callers were known: no ring-time card, logged at once.
    assert statuses() == {
        "lookup_caller": ["done", "done", "done"],
        "log_call": ["done", "done", "done"],
        "notify": ["done", "done"],
        "callback_task": ["scheduled", "scheduled"],  # 30 minutes after the end
        "post_call_sync": ["scheduled"],  # 5 minutes after the end
        "create_lead": ["done"],
    }
    finished = alpha_portal.calls()["finished"]
    assert len(finished) == 3
    bound = sorted((c["STATISTIC"]["CRM_ENTITY_TYPE"], c["STATISTIC"]["CRM_ENTITY_ID"])
                   for c in finished)  # fmt: skip
    leads = [
        lead for lead in alpha_portal.state.entities["LEAD"].values()
        if any(p["VALUE"] == "+48600999777" for p in lead.get("PHONE", []))
    ]  # fmt: skip
    assert len(leads) == 1
    assert bound == sorted([("CONTACT", 12), ("CONTACT", 16), ("LEAD", leads[0]["ID"])])
    assert sorted(n["USER_ID"] for n in alpha_portal.state.notifications.values()) == [5, 9]
