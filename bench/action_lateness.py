"""Lateness of delayed actions: 1 000 actions due in the same minute across 20 tenants.

    python -m bench.action_lateness [--tenants 20] [--actions 1000] [--workers 4] [--threads 8]

Production set-up in miniature: a throwaway PostgreSQL database with 20 tenants, one HTTPS
Bitrix24 sandbox (its rate limit off, as each tenant would have its own portal), `celery beat`
sending the dispatcher once a second (one task in public that visits the tenants with due work),
and Celery worker processes. The runs are rows due at random moments of one minute, and only
the dispatcher sends them (what falls due before its next pass with that short ETA). Half are
notifications, half callback tasks (one Bitrix24 request each, the task through crm's intent
bookkeeping).

Prints p50/p90/p99/max of (claimed - due) and (done - due). Target (issue 5): p99 of done - due
under 5 s.
"""

from __future__ import annotations

import argparse
import random
import time
from datetime import datetime, timedelta
from typing import Any

from bench._harness import lateness_table, percentile, throwaway_environment

ANNA = {
    "status": "found",
    "entity": {"type": "contact", "id": 12, "name": "Anna Kowalska", "url": ""},
    "responsible": {"id": 5, "name": "Marta Nowak"},
    "deals": [{"id": 71, "title": "Legal review", "pipeline": "Contracts", "stage": "Talks"}],
}


def _plan(schema: str, count: int, minute: datetime, rng: random.Random) -> None:
    from django.utils import timezone
    from django_tenants.utils import schema_context

    from calls.models import Call, Device
    from scenarios.models import ScenarioAction
    from scenarios.outbox import run_plan

    with schema_context(schema):
        device = Device.objects.get()
        configs: dict[str, dict[str, Any]] = {}
        for kind in ("notify", "callback_task"):
            action = ScenarioAction.objects.filter(action_type=kind).first()
            assert action is not None, f"the default scenario has a {kind} action"
            configs[kind] = {**action.as_config()}
        configs["callback_task"]["skip_if_reached"] = False
        now = timezone.now()
        for index in range(count):
            call = Call.objects.create(
                device=device, call_id=f"lateness-{index}", direction="incoming",
                phone_number="+48600111222", phone_raw="+48600111222", status="ended",
                outcome="missed", started_at=now, ended_at=now, duration_seconds=0, crm=ANNA,
                crm_status="found", route={"user": {"id": 9}},
            )  # fmt: skip
            kind = "notify" if index % 2 else "callback_task"
            run_plan(
                call_id=call.pk,
                action_type=kind,
                dedupe_key=f"bench:{call.pk}",
                due_at=minute + timedelta(seconds=rng.uniform(0, 60)),
                params={"action": configs[kind], "trigger": "incoming_missed"},
            )


def _collect(schemas: list[str]) -> list[tuple[str, float, float | None, float | None]]:
    from django_tenants.utils import schema_context

    from scenarios.models import ActionRun

    rows = []
    for schema in schemas:
        with schema_context(schema):
            for status, due, claimed, done in ActionRun.objects.filter(
                dedupe_key__startswith="bench:"
            ).values_list("status", "due_at", "claimed_at", "done_at"):
                assert due is not None  # every run here was planned with a due_at
                rows.append((
                    status,
                    0.0,
                    (claimed - due).total_seconds() if claimed else None,
                    (done - due).total_seconds() if done else None,
                ))  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=20)
    parser.add_argument("--actions", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    rng = random.Random(5)
    started = time.monotonic()
    with throwaway_environment(tenants=args.tenants) as env:
        import os

        from django.utils import timezone

        print(f"{args.tenants} tenants provisioned in {time.monotonic() - started:.0f}s")
        os.environ["CELERY_TASK_DEFAULT_QUEUE"] = "bench"
        # The minute after next: planning and start-up are over before anything is due.
        minute = (timezone.now() + timedelta(minutes=2)).replace(second=0, microsecond=0)
        per_tenant = args.actions // args.tenants
        for schema in env.schemas:
            _plan(schema, per_tenant, minute, rng)
        total = per_tenant * len(env.schemas)
        print(f"{total} actions planned, due between {minute:%H:%M:%S} and +60 s (UTC)")
        try:
            for index in range(args.workers):
                env.start(
                    "worker", "--pool=threads", f"--concurrency={args.threads}", "-Q", "bench",
                    "-n", f"bench{index}@%h", "--without-heartbeat", "--without-gossip",
                    "--without-mingle", "-l", "WARNING",
                )  # fmt: skip
            env.start("beat", "-l", "WARNING", "--pidfile=")
            deadline = minute + timedelta(seconds=150)
            while timezone.now() < deadline:
                rows = _collect(env.schemas)
                if (
                    sum(1 for status, *_ in rows if status in ("done", "failed", "skipped"))
                    == total
                ):
                    break
                time.sleep(2)
        finally:
            env.stop_all()
        rows = _collect(env.schemas)
        statuses: dict[str, int] = {}
        for status, *_ in rows:
            statuses[status] = statuses.get(status, 0) + 1
        claimed = [c for _, _, c, _ in rows if c is not None]
        done = [d for _, _, _, d in rows if d is not None]
        print(f"statuses: {statuses}")
        requests = len([r for r in env.portal.state.requests if not r.get("in_batch")])
        print(f"Bitrix24 requests received by the sandbox: {requests}")
        print(lateness_table([("claimed - due (s)", claimed), ("done - due (s)", done)]))
        p99 = percentile(done, 0.99)
        print(f"\nTarget: p99 of done - due < 5 s: {'met' if p99 < 5 else 'NOT met'} ({p99:.2f} s)")


if __name__ == "__main__":
    main()
