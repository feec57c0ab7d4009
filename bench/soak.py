"""Soak: real beat and a worker for longer than two schedule re-reads, with faults on purpose;
every planned run is done, once.

    python -m bench.soak [--minutes 12] [--tenants 4] [--rate 2] [--faults] [--resync 300]

Beat starts as the operations contract says (`celery -A simtrix beat`, whose schedule
django-celery-beat re-reads every 300 s; `--resync` shortens that for a quick look) with one
worker (`celery -A simtrix worker`). A planner plans `--rate` missed-call notifications a
second in random tenants, due 1-60 s later (one in ten at once, sent on commit). With
`--faults`, after the second re-read: Redis is flushed (every queued message lost), then the
portal is down for 30 s, then the worker is killed with SIGKILL (mid-run, no acknowledgement)
and started again. Then planning stops, and the bench waits for every run to finish (a killed
worker's runs come back after their lease, 180 s).

Prints planned / done / other statuses, runs claimed more than once (a retry after the outage or
a run taken back from the killed worker), the notifications Bitrix24 accepted (as many as done runs:
each once), and lateness (claimed - due) of the runs that no fault was near.
"""

from __future__ import annotations

import argparse
import random
import signal
import threading
import time
from collections import Counter
from datetime import timedelta
from typing import Any

from bench._harness import lateness_table, throwaway_environment
from bench.action_lateness import ANNA

RESYNC_DEFAULT = 300.0


def _planner(env: Any, rate: float, stop: threading.Event, planned: list[tuple[str, int]]) -> None:
    from django.db import connection
    from django.utils import timezone
    from django_tenants.utils import schema_context

    from calls.models import Call, Device
    from scenarios.models import ScenarioAction
    from scenarios.outbox import run_plan

    rng = random.Random(7)
    configs = {}
    for schema in env.schemas:
        with schema_context(schema):
            action = ScenarioAction.objects.filter(action_type="notify").first()
            assert action is not None, "the default scenario has a notify action"
            configs[schema] = (Device.objects.get(), action.as_config())
    index = 0
    try:
        while not stop.wait(1 / rate):
            schema = rng.choice(env.schemas)
            device, config = configs[schema]
            now = timezone.now()
            delay = 0 if rng.random() < 0.1 else rng.uniform(1, 60)
            with schema_context(schema):
                call = Call.objects.create(
                    device=device, call_id=f"soak-{index}", direction="incoming",
                    phone_number="+48600111222", phone_raw="+48600111222", status="ended",
                    outcome="missed", started_at=now, ended_at=now, crm=ANNA, crm_status="found",
                    route={"user": {"id": 9}},
                )  # fmt: skip
                run = run_plan(
                    call_id=call.pk,
                    action_type="notify",
                    dedupe_key=f"soak:{call.pk}",
                    due_at=now + timedelta(seconds=delay),
                    params={"action": config, "trigger": "incoming_missed"},
                )
            planned.append((schema, run.pk))
            index += 1
    finally:
        connection.close()


def _runs(env: Any) -> list[dict[str, Any]]:
    from django_tenants.utils import schema_context

    from scenarios.models import ActionRun

    rows = []
    for schema in env.schemas:
        with schema_context(schema):
            rows += [
                {**row, "schema": schema}
                for row in ActionRun.objects.filter(dedupe_key__startswith="soak:").values(
                    "pk", "status", "attempts", "due_at", "claimed_at", "done_at"
                )
            ]
    return rows


def _faults(env: Any, args: Any, at: Any, restart: Any) -> list[tuple[str, Any, Any]]:
    """Redis flushed, the portal down 30 s, the worker killed: after the second re-read."""
    import os

    import redis
    from django.utils import timezone

    faults: list[tuple[str, Any, Any]] = []  # name, from, to (wall clock)
    after_rereads = 2 * args.resync + 30
    at(after_rereads)
    redis.Redis.from_url(os.environ["REDIS_URL"]).flushdb()
    faults.append(("redis flushed", timezone.now(), timezone.now()))
    at(after_rereads + 30)
    env.portal.set_fault("down")
    down_from = timezone.now()
    at(after_rereads + 60)
    env.portal.clear_faults()
    faults.append(("portal down 30 s", down_from, timezone.now()))
    at(after_rereads + 90)
    killed = timezone.now()
    restart()
    faults.append(("worker killed", killed, timezone.now()))
    print(f"faults done: {[name for name, *_ in faults]}", flush=True)
    return faults


def _report(env: Any, planned: int, rows: list[dict[str, Any]], faults: list[Any]) -> None:
    statuses = Counter(row["status"] for row in rows)
    requests = env.portal.state.query_requests("im.notify.system.add")
    # A done run had its notification accepted at least once, so as many acceptances as done
    # runs means once each. (A rerun would replace its notification by TAG, not repeat it; the
    # tags cannot be told apart here, where the tenants share one sandbox portal.)
    accepted = sum(1 for r in requests if r["status"] == 200)

    def touched(row: dict[str, Any]) -> bool:
        """Due around a fault, or until a lost message or a dead worker's lease is over."""
        slack = timedelta(seconds=5)
        recovery = timedelta(seconds=210)  # lease 180 s + the re-send window 30 s
        return any(start - slack <= row["due_at"] <= end + recovery for _, start, end in faults)

    clean = [row for row in rows if row["claimed_at"] and not touched(row)]
    lateness = [(row["claimed_at"] - row["due_at"]).total_seconds() for row in clean]
    print(f"\nfaults: {[name for name, *_ in faults] or 'none'}")
    print(f"planned {planned}, stored {len(rows)}, statuses {dict(statuses)}")
    print(f"runs claimed more than once: {sum(1 for row in rows if row['attempts'] > 1)}")
    print(f"notifications Bitrix24 accepted: {accepted} for {statuses.get('done', 0)} done runs")
    print(lateness_table([("claimed - due (s), no fault near", lateness)], digits=3))
    lost = planned - statuses.get("done", 0)
    print(f"\nEvery planned run done: {'yes' if lost == 0 else f'NO ({lost} not done)'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=12.0)
    parser.add_argument("--tenants", type=int, default=4)
    parser.add_argument("--rate", type=float, default=2.0, help="runs planned per second")
    parser.add_argument("--faults", action="store_true")
    parser.add_argument("--resync", type=float, default=RESYNC_DEFAULT)
    args = parser.parse_args()
    with throwaway_environment(tenants=args.tenants) as env:
        workers = [env.start("worker", "-l", "WARNING")]

        def restart() -> None:
            workers[-1].send_signal(signal.SIGKILL)
            workers[-1].wait(timeout=10)
            workers.append(env.start("worker", "-l", "WARNING"))

        env.start_module("devtools.beat", "--resync", str(args.resync), "-A", "simtrix",
                         "beat", "-l", "WARNING", "--pidfile=")  # fmt: skip
        started = time.monotonic()

        def at(seconds: float) -> None:
            time.sleep(max(0.0, started + seconds - time.monotonic()))

        print(f"beat (re-read every {args.resync:.0f} s) and a worker up; planning "
              f"{args.rate}/s for {args.minutes} min", flush=True)  # fmt: skip
        stop = threading.Event()
        planned: list[tuple[str, int]] = []
        planner = threading.Thread(target=_planner, args=(env, args.rate, stop, planned))
        planner.start()
        faults = []
        try:
            if args.faults:
                faults = _faults(env, args, at, restart)
            at(args.minutes * 60)
        finally:
            stop.set()
            planner.join(timeout=30)
        print(f"{len(planned)} runs planned; waiting for every one to finish", flush=True)
        deadline = time.monotonic() + 600
        rows = _runs(env)
        while time.monotonic() < deadline and not all(
            row["status"] in ("done", "failed", "skipped") for row in rows
        ):
            time.sleep(5)
            rows = _runs(env)
        env.stop_all()
        print(f"ran {time.monotonic() - started:.0f} s")
        _report(env, len(planned), rows, faults)


if __name__ == "__main__":
    main()
