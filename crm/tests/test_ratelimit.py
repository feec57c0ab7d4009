from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django_tenants.utils import schema_context

from conftest import subprocess_database_url
from crm import client as b24
from crm.client import Bitrix24Client
from crm.limiter import PortalLimiter
from crm.models import Bitrix24Connection, RequestLog

REPO = Path(__file__).resolve().parents[2]


def test_limiter_allows_the_burst_then_paces_at_the_drain_rate() -> None:
    limiter = PortalLimiter(f"test-{uuid.uuid4().hex[:8]}", per_second=10, burst=5)
    try:
        waits = [limiter.reserve(max_wait=5) for _ in range(7)]
    finally:
        limiter.reset()

    # Burst 5 minus one slot of headroom go at once; then one slot per 1/(10 * 0.9) s.
    assert waits[:4] == [0, 0, 0, 0]
    assert waits[4] == pytest.approx(limiter.interval, abs=0.02)
    assert waits[5] == pytest.approx(2 * limiter.interval, abs=0.02)
    assert waits[6] == pytest.approx(3 * limiter.interval, abs=0.02)


def test_limiter_refuses_instead_of_waiting_past_max_wait() -> None:
    limiter = PortalLimiter(f"test-{uuid.uuid4().hex[:8]}", per_second=1, burst=2)
    try:
        assert limiter.reserve(max_wait=0) == 0
        assert limiter.reserve(max_wait=0) is None  # the slot would be in ~1.1 s
        # A refusal reserves nothing: the next caller willing to wait gets the same slot.
        assert limiter.reserve(max_wait=5) == pytest.approx(limiter.interval, abs=0.05)
    finally:
        limiter.reset()


def test_limiter_block_holds_everyone_back() -> None:
    limiter = PortalLimiter(f"test-{uuid.uuid4().hex[:8]}", per_second=100, burst=100)
    try:
        limiter.block(0.5)
        assert limiter.reserve(max_wait=5) == pytest.approx(0.5, abs=0.05)
    finally:
        limiter.reset()


WORKER = textwrap.dedent(
    """
    import json, os, sys
    import django
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "simtrix.settings")
    django.setup()
    from django_tenants.utils import schema_context
    from crm import client as b24
    from crm.client import Bitrix24Client

    calls = int(sys.argv[1])
    ok = 0
    with schema_context("alpha"):
        client = Bitrix24Client()
        sys.stdout.write("ready\\n"); sys.stdout.flush()
        sys.stdin.readline()  # start together
        for _ in range(calls):
            if client.run(b24.entity_get("CONTACT", 12))["ID"] in ("12", 12):
                ok += 1
    print(json.dumps({"ok": ok}))
    """
)


def test_processes_bursting_together_stay_under_the_portals_limit(
    alpha_portal: Any, committed_db: Callable[[Callable[[], None]], None]
) -> None:
    portal = alpha_portal
    drain, bucket, processes, calls = 10.0, 6, 3, 8
    portal.set_rate_limit(drain, bucket)
    with schema_context("alpha"):
        Bitrix24Connection.objects.update(rate_limit_per_second=drain, rate_limit_burst=bucket)
    committed_db(lambda: _restore_limits(portal))
    env = {**os.environ, "DATABASE_URL": subprocess_database_url()}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(calls)],
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    for worker in workers:
        assert worker.stdout is not None  # stdout=PIPE
        assert worker.stdout.readline().strip() == "ready"
    started = time.monotonic()
    for worker in workers:
        assert worker.stdin is not None  # stdin=PIPE
        worker.stdin.write("go\n")
        worker.stdin.flush()
    results = [
        json.loads(worker.communicate(timeout=60)[0].strip().splitlines()[-1]) for worker in workers
    ]
    elapsed = time.monotonic() - started

    total = processes * calls
    assert [r["ok"] for r in results] == [calls] * processes
    answered = [r["status"] for r in portal.state.query_requests(method="crm.contact.get")]
    assert answered == [200] * total  # the portal never had to refuse: no 503 at all
    assert portal.state.rate_limited_count == 0
    # Paced, not merely lucky: past the burst the calls were spread at the drain rate.
    assert elapsed >= (total - bucket) / drain * 0.9
    with schema_context("alpha"):
        assert RequestLog.objects.filter(method="crm.contact.get", http_status=200).count() == total
        assert not RequestLog.objects.exclude(error_code="").exists()


def _restore_limits(portal: Any) -> None:
    portal.set_rate_limit(2.0, 50)
    with schema_context("alpha"):
        Bitrix24Connection.objects.update(rate_limit_per_second=None, rate_limit_burst=None)
        RequestLog.objects.all().delete()


# ----------------------------------------------------------------------------------------------
# The limiter learns a portal's bucket


def test_a_503_lowers_the_estimate_once_per_reservation_and_it_creeps_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    limiter = PortalLimiter(f"test-{uuid.uuid4().hex[:8]}", per_second=2, burst=50)
    try:
        assert limiter.estimate() == (2.0, 45)
        before = limiter.acquire(max_wait=5)
        assert before is not None

        assert limiter.exceeded(before.at) == pytest.approx(0.5, abs=0.01)
        per_second, burst = limiter.estimate()
        assert per_second == pytest.approx(1.0, abs=0.01)
        assert burst == 22
        # Another request reserved before the decrease, answered 503 meanwhile: no second one.
        assert limiter.exceeded(before.at) == pytest.approx(0.5, abs=0.01)
        # The bucket counts as full: the next request waits about one (slower) interval (a
        # ringing phone's; the backlog's waits for the priority lane's share to drain too).
        after = limiter.acquire(max_wait=5, priority=True)
        assert after is not None
        assert after.wait == pytest.approx(limiter.interval * 2, abs=0.1)
        assert limiter.exceeded(after.at) == pytest.approx(0.25, abs=0.01)
        assert limiter.estimate()[1] == 11
        # Without learning, the configured numbers hold.
        assert limiter.exceeded(after.at, learns=False) == 1.0
        assert limiter.estimate()[1] == 11

        monkeypatch.setattr("crm.limiter.LEARN_RECOVERY_PER_SECOND", 1.0)
        time.sleep(0.5)
        assert limiter.estimate()[1] >= 30  # 0.25 + 0.5 of the configured numbers
    finally:
        limiter.reset()
    assert limiter.estimate() == (2.0, 45)


def _burst_against_a_smaller_bucket(portal: Any, calls: int = 30) -> int:
    """`calls` lookups in a row; the portal drains 5/s but blocks above 10 (configured: 50)."""
    portal.set_rate_limit(5.0, 10)
    Bitrix24Connection.objects.update(rate_limit_per_second=5.0, rate_limit_burst=50)
    PortalLimiter(portal.domain, 5.0, 50).reset()
    client = Bitrix24Client()
    for _ in range(calls):
        assert client.run(b24.entity_get("CONTACT", 12), max_attempts=20)["NAME"] == "Anna"
    return int(portal.control.state()["rate_limited_count"])


def test_a_burst_against_a_smaller_bucket_sees_a_handful_of_503s(portal: Any) -> None:
    limited = _burst_against_a_smaller_bucket(portal)

    assert 1 <= limited <= 5
    per_second, burst = PortalLimiter(portal.domain, 5.0, 50).estimate()
    assert per_second < 5.0
    assert burst < 45
    assert RequestLog.objects.filter(error_code="QUERY_LIMIT_EXCEEDED").count() == limited


def test_with_a_fixed_estimate_the_same_burst_sees_many_503s(portal: Any, settings: Any) -> None:
    settings.SIMTRIX_BITRIX24_LIMITER_LEARNS = False

    # Each 503 lets only what drained meanwhile through, then the next one comes (7-9 here).
    assert _burst_against_a_smaller_bucket(portal) > 3
    assert PortalLimiter(portal.domain, 5.0, 50).estimate() == (5.0, 45)
