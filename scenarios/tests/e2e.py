"""Helpers of the end-to-end tests: the bridge API, a dispatcher loop, workers, clean-up.

Everything here is real: events go through the bridge API, runs are executed by Celery worker
processes over Redis, Bitrix24 is the HTTPS sandbox. The only stand-in is time: a run due in 30
minutes is made due now ("time passes") instead of waiting.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from django.db import connection
from django.utils import timezone
from django_tenants.utils import schema_context
from rest_framework.test import APIClient

from conftest import REPO, subprocess_database_url


def wait_for(condition: Callable[[], Any], timeout: float = 30, interval: float = 0.1) -> Any:
    """Polls until `condition()` is truthy; returns its value (fails the test on timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {condition.__name__}")
        time.sleep(interval)


class Phone:
    """The bridge app of one device: posts events like the Android app does."""

    def __init__(self, token: str, host: str = "alpha.localhost") -> None:
        self.client = APIClient(HTTP_HOST=host)
        self.client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")

    def send(self, event: dict[str, Any]) -> dict[str, Any]:
        response = self.client.post("/api/bridge/v1/events/", event, format="json")
        assert response.status_code in (200, 201), response.content
        return response.json()

    def event(self, type_: str, call_id: str, at: datetime, **fields: Any) -> dict[str, Any]:
        body = {
            "event_id": str(uuid.uuid4()),
            "type": type_,
            "call_id": call_id,
            "occurred_at": at.isoformat(),
            **fields,
        }
        self.send(body)
        return body

    def started(
        self, call_id: str, *, number: str, direction: str = "incoming", at: datetime | None = None
    ) -> dict[str, Any]:
        at = at or timezone.now()
        return self.event("call.started", call_id, at, direction=direction, phone_number=number)

    def ended(
        self, call_id: str, *, outcome: str, talk: int = 0, at: datetime | None = None
    ) -> list[dict[str, Any]]:
        """Answered (when it was) and ended; `at` is when it started ringing."""
        at = at or timezone.now() - timedelta(seconds=10 + talk)
        events = []
        if outcome == "answered":
            events.append(self.event("call.answered", call_id, at + timedelta(seconds=10)))
        events.append(
            self.event(
                "call.ended",
                call_id,
                at + timedelta(seconds=10 + talk),
                outcome=outcome,
                duration_seconds=talk,
            )
        )
        return events

    def call(
        self,
        call_id: str,
        *,
        number: str,
        outcome: str,
        direction: str = "incoming",
        talk: int = 0,
        at: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """A whole call, just over: started, answered when it was, ended."""
        at = at or timezone.now() - timedelta(seconds=10 + talk)
        started = self.started(call_id, number=number, direction=direction, at=at)
        return [started, *self.ended(call_id, outcome=outcome, talk=talk, at=at)]

    def note(self, call_id: str, text: str) -> None:
        response = self.client.post(
            f"/api/bridge/v1/calls/{call_id}/notes/", {"text": text}, format="json"
        )
        assert response.status_code == 201, response.content


@contextmanager
def dispatching(schema: str = "alpha", interval: float = 0.2) -> Iterator[None]:
    """What celery beat does every second per tenant, in a thread of the test process."""
    from scenarios.outbox import runs_dispatch

    stop = threading.Event()

    def loop() -> None:
        try:
            while not stop.wait(interval):
                with schema_context(schema):
                    runs_dispatch()
        finally:
            connection.close()

    thread = threading.Thread(target=loop, name="dispatcher", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)


def make_due(**filters: Any) -> int:
    """Time passes: the matching scheduled runs become due now."""
    from scenarios.models import ActionRun

    return ActionRun.objects.filter(status=ActionRun.Status.SCHEDULED, **filters).update(
        due_at=timezone.now(), dispatched_at=None
    )


def alpha_wipe() -> None:
    """Removes what an end-to-end test committed in alpha (calls, runs, devices, crm logs)."""
    from calls.models import (
        Call,
        CallEvent,
        CallNote,
        CallRecording,
        CallTransition,
        Device,
    )
    from commands.models import Command, Dial
    from crm.models import Intent, RequestLog
    from scenarios.document import DEFAULT_CONFIGURATION, scenario_config_import
    from scenarios.models import ActionRun, CallPlan, RoundRobinCursor
    from sms.models import SmsMessage

    with schema_context("alpha"):
        SmsMessage.objects.all().delete()  # and their events
        Dial.objects.all().delete()
        Command.objects.all().delete()
        ActionRun.objects.filter(after__isnull=False).delete()
        ActionRun.objects.all().delete()
        CallPlan.objects.all().delete()
        for model in (CallTransition, CallEvent, CallNote, CallRecording, Call, Device):
            model.objects.all().delete()
        RoundRobinCursor.objects.all().delete()
        RequestLog.objects.all().delete()
        Intent.objects.all().delete()
        scenario_config_import(data=DEFAULT_CONFIGURATION)


class Worker:
    """A Celery worker process of our own (one that a test may kill), on its own queue."""

    def __init__(self, queue: str, env: dict[str, str]) -> None:
        self.queue = queue
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "simtrix", "worker", "--pool=threads",
                "--concurrency=4", "-Q", self.queue, "--without-heartbeat", "--without-gossip",
                "--without-mingle", "-l", "WARNING",
            ],
            cwd=REPO,
            env=self.env,
        )  # fmt: skip
        return self

    def kill(self) -> None:
        """Dies like an OOM kill: no clean-up, no acknowledgement."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()


def worker_env(queue: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": subprocess_database_url(),
        "CELERY_TASK_DEFAULT_QUEUE": queue,
        **extra,
    }
