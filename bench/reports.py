"""The reports on a busy tenant: 200 000 calls over 90 days, each report for the last 30 days.

    DATABASE_URL=postgres://... REDIS_URL=redis://... DJANGO_SECRET_KEY=x \\
        python -m bench.reports [--calls 200000] [--days 90] [--runs 30]

Creates a throwaway database (``simtrix_bench_<pid>`` on the same server) with one tenant in
Europe/Warsaw (office hours Monday to Friday, 9 to 18: the defaults), 20 lines carried by 15
agents, and seeds the calls with bulk inserts (what is measured is reading them, not the
bridge): incoming and outgoing, mostly in office hours, a fifth of the incoming missed, most
missed callers called back within hours, a callback task planned for each missed call. Then it
runs each report's query (reports.selectors) and each report's admin page (the filter form, the
query, the SVG, the template) `--runs` times, unfiltered and filtered to one line, and prints
p50/p95 in milliseconds. Target: p95 < 300 ms for each.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

TARGET_MS = 300.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument(
        "--keep", action="store_true", help="keep the database (to EXPLAIN the queries after)"
    )
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "simtrix.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.test.utils import setup_databases, teardown_databases

    settings.DATABASES["default"]["TEST"]["NAME"] = f"simtrix_bench_{os.getpid()}"
    # The test client's requests, as on a server: no redirect to https.
    settings.SECURE_SSL_REDIRECT = False
    settings.ALLOWED_HOSTS = ["*"]
    databases = setup_databases(verbosity=0, interactive=False)
    try:
        rows = _run(calls=args.calls, days=args.days, runs=args.runs)
    finally:
        if args.keep:
            print(f"kept the database {settings.DATABASES['default']['NAME']} (schema bench)")
        else:
            teardown_databases(databases, verbosity=0)
    width = max(len(name) for name, _ in rows)
    print(f"{'report (30 days)':<{width}}{'runs':>6}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}")
    slow = []
    for name, samples in rows:
        p50, p95 = _percentiles(samples)
        print(f"{name:<{width}}{len(samples):>6}{p50:>10.1f}{p95:>10.1f}{max(samples):>10.1f}")
        if p95 >= TARGET_MS:
            slow.append(name)
    print(f"target p95 < {TARGET_MS:.0f} ms: " + ("met" if not slow else f"MISSED by {slow}"))


def _percentiles(samples: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return cuts[49], cuts[94]


def _run(*, calls: int, days: int, runs: int) -> list[tuple[str, list[float]]]:
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client
    from django_tenants.utils import schema_context

    from reports import selectors
    from tenants.services import TenantSpec, tenant_provision

    tenant_provision(
        TenantSpec(
            schema="bench",
            name="Bench",
            domain="bench.localhost",
            timezone="Europe/Warsaw",
            country="PL",
        )
    )
    now = datetime.now(UTC)
    with schema_context("bench"):
        started = time.perf_counter()
        device_ids = _seed(calls=calls, days=days, now=now)
        print(f"seeded {calls} calls over {days} days in {time.perf_counter() - started:.0f} s")
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
        User.objects.create_superuser("bench", password="x")

    from reports.periods import PeriodKind, period_for
    from tenants.context import tenant_timezone

    rows: list[tuple[str, list[float]]] = []
    with schema_context("bench"):
        zone = tenant_timezone()
        today = now.astimezone(ZoneInfo(zone)).date()
        period = period_for(PeriodKind.LAST_30, today=today, zone=zone)
        window: dict[str, Any] = {"since": period.since, "until": period.until}
        one_line: dict[str, Any] = {**window, "device_ids": [device_ids[0]]}
        queries: list[tuple[str, Callable[[], Any]]] = [
            ("totals", lambda: selectors.report_totals(**window)),
            ("per day", lambda: selectors.report_days(**window)),
            ("missed by hour", lambda: selectors.report_missed_heatmap(**window)),
            ("not returned (all)", lambda: selectors.missed_not_returned(**window)),
            ("not returned (count)", lambda: selectors.missed_not_returned_count(**window)),
            ("callbacks", lambda: selectors.report_callbacks(**window)),
            ("agents and lines", lambda: selectors.report_team(**window)),
            ("totals, one line", lambda: selectors.report_totals(**one_line)),
            ("callbacks, one line", lambda: selectors.report_callbacks(**one_line)),
            ("not returned, one line", lambda: selectors.missed_not_returned(**one_line)),
        ]
        for name, query in queries:
            query()  # warm: the connection, the plans' caches
            rows.append((f"query: {name}", _timed(query, runs)))
        found = selectors.missed_not_returned(**window)
        returned = selectors.report_callbacks(**window)
        print(
            f"last 30 days: {selectors.report_totals(**window)['calls']} calls, "
            f"{returned['missed']} missed, {returned['returned']} returned, "
            f"{len(found)} not returned"
        )

    client = Client(HTTP_HOST="bench.localhost")
    with schema_context("bench"):
        client.force_login(User.objects.get(username="bench"))
    pages = ["overviewreport", "missedhoursreport", "notreturnedreport", "callbackreport",
             "teamreport"]  # fmt: skip
    for page in pages:
        url = f"/admin/reports/{page}/?period=30d"

        def get(url: str = url) -> None:
            response = client.get(url)
            assert response.status_code == 200, response.status_code

        get()
        rows.append((f"page: {page}", _timed(get, runs)))
        line = f"{url}&line={device_ids[0]}"

        def get_line(line: str = line) -> None:
            get(line)

        rows.append((f"page: {page}, one line", _timed(get_line, runs)))
    for page, table in [("overviewreport", "days"), ("notreturnedreport", "calls"),
                        ("teamreport", "agents")]:  # fmt: skip
        url = f"/admin/reports/{page}/export.csv?period=30d&table={table}"

        def export(url: str = url) -> None:
            response = client.get(url)
            assert response.status_code == 200, response.status_code
            b"".join(response.streaming_content)  # type: ignore[attr-defined]

        rows.append((f"csv: {page} {table}", _timed(export, runs)))
    return rows


def _timed(work: Callable[[], Any], runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def _seed(*, calls: int, days: int, now: datetime) -> list[int]:
    """The calls, by bulk insert; returns the lines' ids."""
    from calls.models import Call, Device
    from crm.models import Bitrix24User
    from scenarios.choices import ActionType
    from scenarios.models import ActionRun

    rng = random.Random(17)
    agents = list(range(101, 116))
    Bitrix24User.objects.bulk_create(
        [Bitrix24User(id=a, name=f"Agent {a}", active=True, seen_at=now) for a in agents]
    )
    devices = Device.objects.bulk_create(
        [
            Device(
                name=f"Line {n:02d}",
                phone_number=f"+48500100{n:03d}",
                bitrix24_user_id=agents[n % len(agents)],
                token_hash=f"bench-{n}",
                token_hint="bench",
            )
            for n in range(20)
        ]
    )
    zone = ZoneInfo("Europe/Warsaw")
    callers = [f"+4860{n:07d}" for n in range(30_000)]
    start = now - timedelta(days=days)
    made: list[Call] = []
    missed_calls: list[Call] = []

    def moment() -> datetime:
        # Mostly on weekdays in office hours, some evenings and weekends.
        day = start + timedelta(days=rng.randrange(days))
        local = day.astimezone(zone).replace(hour=0, minute=0, second=0, microsecond=0)
        if local.weekday() < 5 and rng.random() < 0.85:
            hour = rng.uniform(8, 18.5)
        else:
            hour = rng.uniform(0, 24)
        return local + timedelta(hours=hour)

    def add(*, direction: str, number: str, at: datetime, outcome: str) -> None:
        answered = outcome == "answered"
        ring = timedelta(seconds=rng.randint(3, 40))
        talk = rng.randint(20, 600) if answered else 0
        made.append(
            Call(
                device=devices[rng.randrange(len(devices))],
                call_id=f"bench-{len(made)}",
                direction=direction,
                phone_number=number,
                phone_raw=number,
                status="ended",
                outcome=outcome,
                started_at=at,
                answered_at=at + ring if answered else None,
                ended_at=at + ring + timedelta(seconds=talk),
                duration_seconds=talk,
                crm={"status": "not_found"},
                crm_status="not_found",
            )
        )

    while len(made) < calls:
        at = moment()
        if at > now:
            continue
        number = rng.choice(callers)
        if rng.random() < 0.6:
            roll = rng.random()
            outcome = (
                "answered" if roll < 0.7 else "rejected" if roll < 0.78 else
                rng.choice(["missed", "missed", "no_answer", "busy"])
            )  # fmt: skip
            add(direction="incoming", number=number, at=at, outcome=outcome)
            if outcome not in ("answered", "rejected"):
                missed_calls.append(made[-1])
                if rng.random() < 0.75:  # called back, most within hours
                    back = at + timedelta(minutes=rng.expovariate(1 / 90))
                    if back < now and len(made) < calls:
                        add(direction="outgoing", number=number, at=back, outcome="answered")
        else:
            outcome = "answered" if rng.random() < 0.6 else rng.choice(["busy", "no_answer"])
            add(direction="outgoing", number=number, at=at, outcome=outcome)
    made.sort(key=lambda call: call.started_at or now)  # rows in time order, as they arrive
    Call.objects.bulk_create(made, batch_size=5000)
    runs = []
    for call in missed_calls:
        done = rng.random() < 0.9
        runs.append(
            ActionRun(
                call=call,
                action_type=ActionType.CALLBACK_TASK,
                dedupe_key=f"bench-task-{call.pk}",
                status=ActionRun.Status.DONE if done else ActionRun.Status.FAILED,
                params={"responsible_user_id": call.device.bitrix24_user_id},
                result={"task_id": call.pk, "responsible_id": call.device.bitrix24_user_id}
                if done
                else {},
                due_at=call.ended_at,
                done_at=call.ended_at,
            )
        )
    ActionRun.objects.bulk_create(runs, batch_size=5000)
    return [device.pk for device in devices]


if __name__ == "__main__":
    main()
