"""The dispatcher with a real worker and a real beat, past the schedule's re-read.

django-celery-beat re-reads its whole schedule every five minutes. Under the tenant-aware
scheduler that re-read put `"_schema_name": "public"` into the headers of the "for every tenant"
entries, so from then on every dispatcher task ran in the public schema and failed: no delayed
work ran again until beat restarted (issue 11). These tests drive that re-read directly, and run
beat with it shortened to two seconds.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from celery.utils.imports import symbol_by_name
from django.conf import settings
from django.utils import timezone
from django_celery_beat import schedulers as beat_schedulers
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from django_tenants.utils import schema_context

from calls.models import Call, Device
from calls.services import device_register
from calls.tests.test_handlers import ok_requests
from conftest import REPO, subprocess_database_url
from scenarios.models import ActionRun, ScenarioAction
from scenarios.outbox import run_plan
from scenarios.tests.e2e import wait_for
from tenants.models import OutboxWake

pytestmark = pytest.mark.worker

NOTIFY = "im.notify.system.add"
ANNA = {
    "status": "found",
    "entity": {"type": "contact", "id": 12, "name": "Anna Kowalska", "url": ""},
    "responsible": {"id": 5, "name": "Marta Nowak"},
    "deals": [],
}


def _wipe() -> None:
    with schema_context("alpha"):
        ActionRun.objects.all().delete()
        Call.objects.filter(call_id__startswith="dispatch-").delete()
        Device.objects.filter(name="Dispatch phone").delete()
    OutboxWake.objects.all().delete()
    PeriodicTask.objects.all().delete()
    IntervalSchedule.objects.all().delete()


def _notify_runs(due: list[datetime]) -> list[int]:
    """Missed-call notifications of alpha, due at `due`; only the dispatcher can send them."""
    with schema_context("alpha"):
        device, _ = device_register(
            name="Dispatch phone", phone_number="+48500100999", bitrix24_user_id=5, country="PL"
        )
        action = ScenarioAction.objects.filter(action_type="notify").first()
        assert action is not None
        ids = []
        for index, due_at in enumerate(due):
            now = timezone.now()
            call = Call.objects.create(
                device=device, call_id=f"dispatch-{index}", direction="incoming",
                phone_number="+48600111222", phone_raw="+48600111222", status="ended",
                outcome="missed", started_at=now, ended_at=now, crm=ANNA, crm_status="found",
                route={"user": {"id": 5}},
            )  # fmt: skip
            run = run_plan(
                call_id=call.pk,
                action_type="notify",
                dedupe_key=f"dispatch:{call.pk}",
                due_at=due_at,
                params={"action": action.as_config(), "trigger": "incoming_missed"},
            )
            ids.append(run.pk)
        return ids


def _runs(ids: list[int]) -> list[ActionRun]:
    with schema_context("alpha"):
        return list(ActionRun.objects.filter(pk__in=ids).order_by("due_at"))


def _all_finished(ids: list[int]) -> Callable[[], bool]:
    def all_finished() -> bool:
        return all(run.status in ("done", "failed", "skipped") for run in _runs(ids))

    return all_finished


def test_after_the_schedules_reread_the_dispatcher_still_runs_every_tenants_due_work(
    celery_worker: str, alpha_portal: Any, committed_db: Callable
) -> None:
    from simtrix.celery import app

    committed_db(_wipe)
    _wipe()
    [run_id] = _notify_runs([timezone.now() + timedelta(seconds=1)])
    scheduler = symbol_by_name(settings.CELERY_BEAT_SCHEDULER)(app=app)
    # Five minutes pass: beat reads its whole schedule again from the database.
    scheduler._last_full_sync -= timedelta(seconds=beat_schedulers.SCHEDULE_SYNC_MAX_INTERVAL + 1)
    reread = scheduler.schedule
    assert set(settings.CELERY_BEAT_SCHEDULE) <= set(reread)
    for entry in reread.values():
        # Nothing stored chooses a schema: every entry runs in public, where it was sent from.
        assert (entry.options.get("headers") or {}).get("_schema_name", "public") == "public"

    time.sleep(1)
    scheduler.apply_entry(reread["outbox-dispatch"])

    wait_for(_all_finished([run_id]), timeout=30)
    [run] = _runs([run_id])
    assert (run.status, run.attempts) == ("done", 1)
    assert len(ok_requests(alpha_portal, NOTIFY)) == 1


def test_beat_and_a_worker_past_several_rereads_run_every_planned_run_once(
    celery_worker: str, alpha_portal: Any, committed_db: Callable, tmp_path: Path
) -> None:
    """The soak test, shortened: the schedule is re-read every 2 s instead of 300."""
    committed_db(_wipe)
    _wipe()
    start = timezone.now() + timedelta(seconds=3)
    ids = _notify_runs([start + timedelta(seconds=0.5 * index) for index in range(20)])
    log = tmp_path / "beat.log"
    env = {
        **os.environ,
        "DATABASE_URL": subprocess_database_url(),
        "CELERY_TASK_DEFAULT_QUEUE": celery_worker,
    }
    with log.open("w") as output:
        beat = subprocess.Popen(
            [sys.executable, "-m", "devtools.beat", "--resync", "2", "-A", "simtrix", "beat",
             "-l", "DEBUG", "--pidfile="],
            cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            finished = _all_finished(ids)
            deadline = time.monotonic() + 90
            while not finished() and time.monotonic() < deadline:
                time.sleep(0.2)
            # Beat goes on until it has re-read its schedule a few times (a slow machine starts
            # it late), and past the last run: a re-read after it must not break anything.
            while log.read_text().count("Forcing full sync") < 4 and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(2.5)
        finally:
            beat.terminate()
            try:
                beat.wait(timeout=15)
            except subprocess.TimeoutExpired:
                beat.kill()
                beat.wait(timeout=5)
    beat_log = log.read_text()
    assert beat_log.count("Forcing full sync") >= 4, beat_log[-3000:]
    runs = _runs(ids)
    seen = [(run.status, run.attempts, run.due_at, run.claimed_at, run.last_error) for run in runs]
    assert [(run.status, run.attempts) for run in runs] == [("done", 1)] * len(ids), seen
    # Exactly once in Bitrix24, and none before it was due: a run the dispatcher sent without
    # its ETA would start up to 1.5 s early; a worker's timer may fire a few microseconds early.
    assert len(ok_requests(alpha_portal, NOTIFY)) == len(ids)
    early = timedelta(milliseconds=50)
    assert all(
        run.claimed_at and run.due_at and run.claimed_at >= run.due_at - early for run in runs
    ), seen
