"""Caller-lookup latency against an in-process sandbox portal: cache miss vs hit.

    DATABASE_URL=postgres://... REDIS_URL=redis://... DJANGO_SECRET_KEY=x \\
        python -m bench.lookup_latency [--misses 200] [--hits 2000]

Creates a throwaway database (``simtrix_bench_<pid>`` on the same server) with one tenant,
starts the sandbox with its rate limit off (and SIMtrix's limiter set out of the way), and
prints p50/p99 latency of ``crm_find_by_phone`` and the REST requests each lookup cost.
Targets: one REST request per cache miss, p99 on a hit under 10 ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable


def _percentiles(samples: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return cuts[49], cuts[98]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--misses", type=int, default=200)
    parser.add_argument("--hits", type=int, default=2000)
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "simtrix.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.test.utils import setup_databases, teardown_databases

    from bitrix24_sandbox import SandboxPortal

    settings.DATABASES["default"]["TEST"]["NAME"] = f"simtrix_bench_{os.getpid()}"
    databases = setup_databases(verbosity=0, interactive=False)
    portal = SandboxPortal(seed=True, drain_per_second=None, bucket_size=None).start()
    os.environ["REQUESTS_CA_BUNDLE"] = portal.ca_cert_path
    try:
        rows = _run(portal, misses=args.misses, hits=args.hits)
    finally:
        portal.stop()
        teardown_databases(databases, verbosity=0)
    print(f"{'lookup':<28}{'n':>7}{'p50 ms':>10}{'p99 ms':>10}{'REST req/lookup':>18}")
    for name, samples, requests in rows:
        p50, p99 = _percentiles(samples)
        print(f"{name:<28}{len(samples):>7}{p50:>10.2f}{p99:>10.2f}{requests:>18.2f}")


def _run(portal: object, *, misses: int, hits: int) -> list[tuple[str, list[float], float]]:
    from django_tenants.utils import schema_context

    from crm.cache import cache_clear
    from crm.models import Bitrix24Connection
    from crm.selectors import crm_find_by_phone
    from crm.services import directory_sync
    from tenants.services import TenantSpec, tenant_provision

    tenant_provision(
        TenantSpec(
            schema="bench",
            name="Bench",
            domain="bench.localhost",
            bitrix24_webhook=portal.webhook_url(1),  # type: ignore[attr-defined]
            country="PL",
        )
    )
    found = ["+48600111222", "+48600111333", "+48 600 111 444", "+48221234567", "+48601222333"]
    unknown = [f"+48500{n:06d}" for n in range(misses)]

    def rest_requests() -> int:
        state = portal.state  # type: ignore[attr-defined]
        return len(state.query_requests(in_batch=False))

    def measure(numbers: list[str], lookup: Callable[[str], object]) -> tuple[list[float], float]:
        before = rest_requests()
        samples = []
        for number in numbers:
            started = time.perf_counter()
            lookup(number)
            samples.append((time.perf_counter() - started) * 1000)
        return samples, (rest_requests() - before) / len(numbers)

    with schema_context("bench"):
        # "Rate limit disabled": the portal's is off; SIMtrix's own is set far out of the way.
        Bitrix24Connection.objects.update(rate_limit_per_second=100000, rate_limit_burst=100000)
        directory_sync()
        cache_clear()
        miss_found = [found[i % len(found)] for i in range(misses)]

        def miss(number: str) -> object:
            return crm_find_by_phone(phone=number, use_cache=False, budget_s=float("inf"))

        def hit(number: str) -> object:
            result = crm_find_by_phone(phone=number)
            assert result.cached
            return result

        for number in found:  # warm-up: connections, imports, the directory
            miss(number)
        rows = [
            ("miss, caller found", *measure(miss_found, miss)),
            ("miss, not found", *measure(unknown, miss)),
        ]
        cache_clear()
        for number in found:
            miss(number)
        hit_numbers = [found[i % len(found)] for i in range(hits)]
        rows.append(("hit (cached)", *measure(hit_numbers, hit)))
        cache_clear()
    return rows


if __name__ == "__main__":
    main()
