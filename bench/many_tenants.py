"""A thousand tenants with nothing due cost (almost) nothing; due work in a hundred is on time.

    python -m bench.many_tenants [--tenants 1000] [--busy 100] [--runs 1000] [--seconds 60]

Phase 1 (idle): `--tenants` provisioned tenants (`--busy` of them connected to the HTTPS
Bitrix24 sandbox, the rest with no Bitrix24), `celery beat` and one worker as the operations
contract starts them (`celery -A simtrix worker`, prefork, its default concurrency), nothing
due. Prints the CPU seconds beat and the worker (its pool processes included) used over
`--seconds`, read from /proc, and the same for one outbox sweep (every tenant woken once; beat
sends one an hour). Target (issue 11): beat + worker < 5 % of one core.

Phase 2 (busy): `--runs` notifications due across the `--busy` tenants at random moments of one
minute, sent only by the dispatcher. Prints p50/p90/p99/max of (claimed - due) and
(done - due). Target (issue 11): p99 of claimed - due < 1 s.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench._harness import lateness_table, percentile, throwaway_environment

TICKS = os.sysconf("SC_CLK_TCK")


def _tree_cpu(root: int) -> float:
    """CPU seconds (user + system) of a process and all its descendants."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / TICKS
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        children = [child for child, parent in parents.items() if parent == pid]
        tree.update(children)
        frontier.extend(children)
    return sum(times.get(pid, 0.0) for pid in tree)


def _cpu_over(processes: dict[str, int], seconds: float) -> dict[str, float]:
    before = {name: _tree_cpu(pid) for name, pid in processes.items()}
    time.sleep(seconds)
    return {name: _tree_cpu(pid) - before[name] for name, pid in processes.items()}


def _percent(used: dict[str, float], seconds: float) -> str:
    parts = [f"{name} {100 * value / seconds:.2f} %" for name, value in used.items()]
    total = 100 * sum(used.values()) / seconds
    return f"{', '.join(parts)}; together {total:.2f} % of one core"


def _idle(env: Any, seconds: float) -> float:
    """CPU of beat + worker with nothing due, and of one sweep; the idle share of one core."""
    from django.conf import settings
    from django.db import connection

    from scenarios.schedule import outbox_sweep

    worker = env.start("worker", "-l", "WARNING")
    beat = env.start("beat", "-l", "WARNING", "--pidfile=")
    processes = {"beat": beat.pid, "worker": worker.pid}
    time.sleep(15)  # start-up is not what is measured
    idle = _cpu_over(processes, seconds)
    print(f"\nIdle, over {seconds:.0f} s: {_percent(idle, seconds)}")
    woken = outbox_sweep()
    connection.close()
    sweep = _cpu_over(processes, 20)
    sweep_cost = sum(sweep.values()) - sum(idle.values()) * 20 / seconds
    every = settings.CELERY_BEAT_SCHEDULE["outbox-sweep"]["schedule"]
    print(
        f"One sweep ({woken} tenants woken): {sweep_cost:.2f} CPU-s beyond idle; "
        f"once every {every:.0f} s that is {100 * sweep_cost / every:.2f} % of one core"
    )
    return 100 * sum(idle.values()) / seconds


def _busy(env: Any, runs: int, rng: random.Random) -> list[Any]:
    """`runs` notifications due in one minute across the connected tenants; their rows."""
    from django.db import connection
    from django.utils import timezone

    from bench.action_lateness import _collect, _plan

    minute = (timezone.now() + timedelta(minutes=2)).replace(second=0, microsecond=0)
    per_tenant = runs // len(env.schemas)
    for schema in env.schemas:
        _plan(schema, per_tenant, minute, rng)
    total = per_tenant * len(env.schemas)
    connection.close()
    print(f"\n{total} runs in {len(env.schemas)} tenants, due from {minute:%H:%M:%S} UTC")
    deadline = minute + timedelta(seconds=150)
    while timezone.now() < deadline:
        rows = _collect(env.schemas)
        if sum(1 for status, *_ in rows if status in ("done", "failed", "skipped")) == total:
            break
        time.sleep(2)
    return _collect(env.schemas)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--busy", type=int, default=100)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    started = time.monotonic()
    with throwaway_environment(tenants=args.busy, bare_tenants=args.tenants - args.busy) as env:
        print(f"{args.tenants} tenants provisioned in {time.monotonic() - started:.0f}s")
        try:
            idle = _idle(env, args.seconds)
            rows = _busy(env, args.runs, random.Random(11))
        finally:
            env.stop_all()
    print(f"statuses: {dict(Counter(status for status, *_ in rows))}")
    claimed = [c for _, _, c, _ in rows if c is not None]
    done = [d for _, _, _, d in rows if d is not None]
    print(lateness_table([("claimed - due (s)", claimed), ("done - due (s)", done)], digits=3))
    p99 = percentile(claimed, 0.99)
    print(f"\nTarget: idle beat + worker < 5 %: {'met' if idle < 5 else 'NOT met'} ({idle:.2f} %)")
    print(f"Target: p99 of claimed - due < 1 s: {'met' if p99 < 1 else 'NOT met'} ({p99:.3f} s)")


if __name__ == "__main__":
    main()
