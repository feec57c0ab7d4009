"""A portal's round trip and rate limit: keep-alive, and a limiter that learns (issue 19).

    DATABASE_URL=postgres://... REDIS_URL=redis://... DJANGO_SECRET_KEY=x \\
        python -m bench.portal_throughput [--lookups 100] [--burst 30] [--threads 6]

Creates a throwaway database (``simtrix_bench_<pid>`` on the same server) with one tenant on an
in-process sandbox portal, then measures:

- lookup latency (``crm_find_by_phone``, cache off) with a 50 ms round trip added by the sandbox
  to every request and 100 ms to every new connection (TCP + TLS handshakes: two round trips),
  with keep-alive (``SIMTRIX_BITRIX24_KEEPALIVE``) and without; rate limits out of the way;
- 503 ``QUERY_LIMIT_EXCEEDED`` answers seen when ``--burst`` lookups arrive at once (from
  ``--threads`` threads) at a portal draining 2 requests/s that blocks above 10, while the
  connection is configured for the standard plan (2/s, burst 50): with the estimate fixed
  (``SIMTRIX_BITRIX24_LIMITER_LEARNS`` off, as before) and learning.

Targets (issue 19): keep-alive saves the handshake on every lookup but the first of a
connection; at most 5 503s for a burst of 30 against burst 10.
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from typing import Any

ROUND_TRIP_MS = 50
HANDSHAKE_MS = 2 * ROUND_TRIP_MS
FOUND = ["+48600111222", "+48600111333", "+48 600 111 444", "+48221234567", "+48601222333"]


def _percentiles(samples: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return cuts[49], cuts[98]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lookups", type=int, default=100)
    parser.add_argument("--burst", type=int, default=30)
    parser.add_argument("--threads", type=int, default=6)
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "simtrix.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.test.utils import setup_databases, teardown_databases

    from bitrix24_sandbox import SandboxPortal

    settings.DATABASES["default"]["TEST"]["NAME"] = f"simtrix_bench_{os.getpid()}"
    settings.SIMTRIX_ALLOW_PRIVATE_ADDRESSES = True
    databases = setup_databases(verbosity=0, interactive=False)
    portal = SandboxPortal(seed=True, drain_per_second=None, bucket_size=None).start()
    os.environ["REQUESTS_CA_BUNDLE"] = portal.ca_cert_path
    try:
        _provision(portal)
        latency = _latency(portal, lookups=args.lookups)
        bursts = _bursts(portal, calls=args.burst, threads=args.threads)
    finally:
        portal.stop()
        teardown_databases(databases, verbosity=0)

    print(f"Lookup latency, {ROUND_TRIP_MS} ms round trip (+{HANDSHAKE_MS} ms per connection)")
    print(f"{'':<22}{'n':>6}{'p50 ms':>10}{'p99 ms':>10}{'connections':>13}")
    for name, samples, connections in latency:
        p50, p99 = _percentiles(samples)
        print(f"{name:<22}{len(samples):>6}{p50:>10.1f}{p99:>10.1f}{connections:>13}")
    print()
    print(f"Burst of {args.burst} lookups ({args.threads} threads), portal 2/s burst 10, "
          "configured 2/s burst 50")  # fmt: skip
    print(f"{'limiter':<22}{'503s':>6}{'failed':>8}{'seconds':>10}{'estimate after':>18}")
    for name, limited, failed, seconds, estimate in bursts:
        shown = f"{estimate[0]:.2f}/s, {estimate[1]}"
        print(f"{name:<22}{limited:>6}{failed:>8}{seconds:>10.1f}{shown:>18}")


def _provision(portal: Any) -> None:
    from django_tenants.utils import schema_context

    from crm.services import directory_sync
    from tenants.services import TenantSpec, tenant_provision

    tenant_provision(
        TenantSpec(
            schema="bench",
            name="Bench",
            domain="bench.localhost",
            bitrix24_webhook=portal.webhook_url(1),
            country="PL",
        )
    )
    with schema_context("bench"):
        directory_sync()


def _lookup(number: str) -> str:
    from crm.selectors import crm_find_by_phone

    return crm_find_by_phone(phone=number, use_cache=False, budget_s=float("inf")).status


def _latency(portal: Any, *, lookups: int) -> list[tuple[str, list[float], int]]:
    from django.test.utils import override_settings
    from django_tenants.utils import schema_context

    from crm.models import Bitrix24Connection
    from crm.outbound import keep_alive_close_all

    rows = []
    with schema_context("bench"):
        # Rate limits out of the way: the portal's is off, SIMtrix's set far above.
        Bitrix24Connection.objects.update(rate_limit_per_second=100000, rate_limit_burst=100000)
        for name, keep_alive in (("without keep-alive", False), ("with keep-alive", True)):
            with override_settings(SIMTRIX_BITRIX24_KEEPALIVE=keep_alive):
                keep_alive_close_all()
                portal.control.set_latency()
                for number in FOUND:  # warm-up: imports, the directory
                    _lookup(number)
                keep_alive_close_all()
                portal.control.set_latency(connect_ms=HANDSHAKE_MS, request_ms=ROUND_TRIP_MS)
                with portal.state.lock:
                    portal.state.rest_connection_ids.clear()
                samples = []
                for index in range(lookups):
                    started = time.perf_counter()
                    _lookup(FOUND[index % len(FOUND)])
                    samples.append((time.perf_counter() - started) * 1000)
                rows.append((name, samples, int(portal.control.state()["rest_connections"])))
        portal.control.set_latency()
        keep_alive_close_all()
    return rows


def _burst(calls: int, threads: int) -> tuple[int, float]:
    """``calls`` lookups from ``threads`` threads started together: (failed, seconds)."""
    from django.db import connection
    from django_tenants.utils import schema_context

    failed: list[str] = []
    share = [calls // threads + (1 if i < calls % threads else 0) for i in range(threads)]
    start = threading.Barrier(threads)

    def work(count: int) -> None:
        try:
            with schema_context("bench"):
                start.wait()
                for index in range(count):
                    status = _lookup(FOUND[index % len(FOUND)])
                    if status not in ("found", "not_found"):
                        failed.append(status)
        finally:
            connection.close()

    workers = [threading.Thread(target=work, args=(n,)) for n in share]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return len(failed), time.monotonic() - started


def _bursts(
    portal: Any, *, calls: int, threads: int
) -> list[tuple[str, int, int, float, tuple[float, int]]]:
    from django.test.utils import override_settings
    from django_tenants.utils import schema_context

    from crm.limiter import PortalLimiter
    from crm.models import Bitrix24Connection

    rows = []
    with schema_context("bench"):
        Bitrix24Connection.objects.update(rate_limit_per_second=None, rate_limit_burst=None)
    limiter = PortalLimiter(portal.domain, 2.0, 50)
    for name, learns in (("fixed (before)", False), ("learning (after)", True)):
        with override_settings(SIMTRIX_BITRIX24_LIMITER_LEARNS=learns):
            limiter.reset()
            portal.reset()
            portal.set_rate_limit(2.0, 10)
            failed, seconds = _burst(calls, threads)
            limited = int(portal.control.state()["rate_limited_count"])
            estimate = limiter.estimate() if learns else (2.0, limiter.effective_burst)
            rows.append((name, limited, failed, seconds, estimate))
    portal.set_rate_limit(None, None)
    limiter.reset()
    return rows


if __name__ == "__main__":
    main()
