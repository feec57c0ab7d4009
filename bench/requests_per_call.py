"""Bitrix24 requests per call for each default scenario.

    python -m bench.requests_per_call

Each call goes through the bridge API (call.started with the caller lookup, then the end) with
the default scenarios; its runs execute in this process (Celery eager mode: the worker's code,
without the broker hop). The sandbox counts the HTTP requests it receives (a `batch` is one).
"Immediate" is what happens while the call rings and right after it ends; "delayed" are the
actions due later (callback task after 30 min, post-call sync after 5 min), run by making them due.

Targets (issue 5): at most 3 immediate requests for an answered known call, 4 for a missed one.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from bench._harness import table, throwaway_environment

# (scenario, direction, number, outcome, talk seconds); known numbers are contacts of the
# sandbox seed, a different one per call so that one call's callback task is not completed by
# the next (which would add a tasks.task.complete).
CALLS = [
    ("incoming answered, known", "incoming", "+48600111222", "answered", 95),
    ("incoming missed, known", "incoming", "+48600111555", "missed", 0),
    ("incoming rejected, known", "incoming", "+48600111444", "rejected", 0),
    ("outgoing answered, known", "outgoing", "+48600111444", "answered", 60),
    ("outgoing busy, known", "outgoing", "+48600111222", "busy", 0),
    ("incoming missed, unknown number", "incoming", "+48600999001", "missed", 0),
    ("incoming answered, unknown number", "incoming", "+48600999002", "answered", 30),
]


def _requests(portal: Any) -> list[str]:
    return [
        r["method"]
        for r in portal.state.query_requests(in_batch=False)
        if r.get("method") != "oauth.token"
    ]


def main() -> None:
    with throwaway_environment(tenants=1) as env:
        from django.utils import timezone
        from django_tenants.utils import schema_context
        from rest_framework.test import APIClient

        from calls.services import device_rotate_token
        from crm.cache import cache_clear
        from scenarios.models import ActionRun
        from scenarios.outbox import runs_dispatch
        from simtrix.celery import app

        app.conf.task_always_eager = True
        schema = env.schemas[0]
        with schema_context(schema):
            from calls.models import Device

            token = device_rotate_token(device=Device.objects.get())
        client = APIClient(HTTP_HOST=f"{schema}.localhost")
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")

        rows = []
        for index, (label, direction, number, outcome, talk) in enumerate(CALLS):
            with schema_context(schema):
                cache_clear()  # every call pays for its own lookup
            with env.portal.state.lock:
                env.portal.state.requests.clear()
            call_id = f"bench-{index}"
            start = timezone.now() - timedelta(seconds=10 + talk)  # the call just ended

            def send(type_: str, at: Any, _call_id: str = call_id, **fields: Any) -> None:
                body = {"event_id": str(uuid.uuid4()), "type": type_, "call_id": _call_id,
                        "occurred_at": at.isoformat(), **fields}  # fmt: skip
                response = client.post("/api/bridge/v1/events/", body, format="json")
                assert response.status_code in (200, 201), response.content

            send("call.started", start, direction=direction, phone_number=number)
            if outcome == "answered":
                send("call.answered", start + timedelta(seconds=5))
            send("call.ended", start + timedelta(seconds=5 + talk), outcome=outcome,
                 duration_seconds=talk)  # fmt: skip
            immediate = _requests(env.portal)
            with env.portal.state.lock:
                env.portal.state.requests.clear()
            with schema_context(schema):
                delayed_runs = ActionRun.objects.filter(
                    call__call_id=call_id, status=ActionRun.Status.SCHEDULED
                )
                delayed_types = sorted(delayed_runs.values_list("action_type", flat=True))
                delayed_runs.update(due_at=timezone.now(), dispatched_at=None)
                runs_dispatch()
                failed = list(
                    ActionRun.objects.filter(call__call_id=call_id)
                    .exclude(status__in=["done", "skipped"])
                    .values_list("action_type", "status", "last_error")
                )
            delayed = _requests(env.portal)
            rows.append([
                label, len(immediate), ", ".join(immediate), len(delayed),
                ", ".join(delayed_types) or "-", "; ".join(map(str, failed)) or "ok",
            ])  # fmt: skip
        print(
            table(
                rows,
                ["scenario", "immediate", "requests", "delayed", "delayed actions", "runs"],
            )
        )
        print("\nTargets: answered known call <= 3 immediate requests, missed known call <= 4.")


if __name__ == "__main__":
    main()
