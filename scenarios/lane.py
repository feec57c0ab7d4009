"""A tenant's backlog run together, its Bitrix24 requests sharing batches (issue 19).

A portal lets 2 requests a second through. When a tenant has more due runs than its bucket
lets through at once now (`crm.coalesce.crm_portal_free_slots`), a worker that picks a run up
hands it back (`outbox.run_unclaim`, not an attempt) and starts the tenant's lane instead: one
task that runs the tenant's due runs many at once, each in its own thread, inside one
`crm.coalesce.Coalescer`, so their requests ride in shared `batch` requests (up to 50 commands
each) instead of one request each. Under light load nothing changes: the portal is not crowded
and every run goes out at once, alone.

- One lane per tenant at a time (a Redis lease, renewed as its threads take runs); a lane that
  dies lets its lease expire within `LEASE_SECONDS`, its runs are taken back like any dead
  worker's (the outbox's run lease), and what it was handed is sent again by the dispatcher.
  Each run is claimed as always (`outbox.run_claim`, under SKIP LOCKED here), so
  exactly-once holds as it does for a run alone: the same claim, intents and markers.
- Runs a ringing phone waits for (`outbox.LIVE_ACTIONS` while the call is not over) never go
  into the lane: they are sent ahead of it and take the portal's priority lane.
- A lane stops taking runs after `DRAIN_SECONDS` and starts its successor, so no task outlives
  Celery's time limits however long the backlog.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import cache
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Q
from django.utils import timezone
from django_tenants.utils import schema_context

from calls.models import Call
from crm.coalesce import Coalescer, crm_coalescer, crm_portal_free_slots
from crm.redis_client import get_redis
from crm.session import crm_session_reuse
from scenarios.models import ActionRun
from scenarios.outbox import (
    CLAIM_EARLY,
    LANE_PRIORITY,
    LIVE_ACTIONS,
    lane_key,
    lane_running,
    run_claim,
    run_claim_next,
    run_claimed_execute,
    run_is_live,
    run_unclaim,
    runs_send,
)
from tenants.connection import tenant_connection
from tenants.fanout import task_queue
from tenants.memo import tenant_memo_scope

logger = logging.getLogger(__name__)

# The lane's lease, renewed by every thread as it claims a run or waits for one: a lane that
# died holds its tenant's backlog back this long at most (then a worker starts another).
LEASE_SECONDS = 15
# How often each of its threads renews the lease (not before every run).
RENEW_SECONDS = 1.0
DRAIN_SECONDS = 60.0
# A thread that finds nothing due waits this long while others still execute runs.
IDLE_SECONDS = 2.0
IDLE_POLL_SECONDS = 0.25
# A lane that ends with no crowd left sends at most this many leftover runs itself (more are
# the dispatcher's, or the next lane's).
RESEND_AT_END = 500
# Defaults of SIMTRIX_LANE_THREADS (runs at once, each with its own database connection) and
# SIMTRIX_BITRIX24_COALESCE (off only to measure the difference).
THREADS = 24


def lane_threads() -> int:
    return max(1, int(getattr(settings, "SIMTRIX_LANE_THREADS", THREADS)))


def lane_enabled() -> bool:
    return bool(getattr(settings, "SIMTRIX_BITRIX24_COALESCE", True))


def run_or_coalesce(run_id: int, *, live: bool = False) -> str:
    """A worker's run: executed now, or handed to the tenant's lane when the portal is crowded.

    `live`: the message says a phone waits for it (outbox.LIVE_ACTIONS); any other run is left
    untouched to the tenant's lane while one runs (it claims the due runs itself)."""
    if not live and lane_enabled() and lane_running():
        return "coalesced"
    run = run_claim(run_id)
    if run is None:
        return "not-claimed"
    live = run_is_live(run)
    if not live and lane_enabled() and _crowded() and run_unclaim(run):
        lane_start()
        return "coalesced"
    return run_claimed_execute(run, live=live)


def _crowded() -> bool:
    """More due runs (this one among them, each at least a request) than the portal lets
    through at once now: a queue of calls coming in together goes to the lane from its first
    run, not after the burst is spent one request each."""
    free = crm_portal_free_slots()
    if free is None:
        return False
    # This run (claimed: no longer due) and the others, counted only as far as it matters.
    return 1 + ActionRun.objects.filter(_due())[:free].count() > free


def lane_start() -> bool:
    """Starts the current tenant's lane unless one is running; whether this call started it."""
    if not get_redis().set(lane_key(), "1", nx=True, px=LEASE_SECONDS * 1000):
        return False
    from scenarios.tasks import run_lane_task  # noqa: PLC0415 — Celery's loop: the task calls back here

    if not task_queue(run_lane_task, what="the backlog lane", priority=LANE_PRIORITY):
        # No broker: the runs are due and dispatched again later, alone or in a lane then.
        get_redis().delete(lane_key())
        return False
    return True


def lane_drain(*, threads: int | None = None, drain_seconds: float = DRAIN_SECONDS) -> int:
    """The lane's task: the current tenant's due runs, `threads` at a time; how many ran."""
    coalescer = crm_coalescer()
    ran = 0
    stop_at = time.monotonic() + drain_seconds
    try:
        if coalescer is not None:
            ran = _drain(coalescer, threads or lane_threads(), stop_at)
    finally:
        get_redis().delete(lane_key())
    lane_finish(overtime=time.monotonic() >= stop_at)
    return ran


def lane_finish(*, overtime: bool = False) -> None:
    """What a lane leaves behind as it ends (runs handed to it while it was finishing, or all it
    had no time for) goes on: to a successor lane while the portal is crowded (or the lane ran
    out of time), else to the workers at once, alone (not after the dispatcher's window)."""
    rows = list(
        ActionRun.objects.filter(_due())
        .order_by("due_at")
        .values_list("pk", "due_at", "action_type")[:RESEND_AT_END]
    )
    if not rows:
        return
    if overtime or _crowded():
        lane_start()
    else:
        runs_send(rows, now=timezone.now())


def _drain(coalescer: Coalescer, threads: int, stop_at: float) -> int:
    schema = tenant_connection.schema_name
    # What every run reads (the scenarios, office hours, the directory), read by one thread
    # for all of them every few seconds (tenants.memo); each thread keeps its own Bitrix24
    # session (crm.session.crm_session_reuse).
    reads: dict[Any, Any] = {}
    with ThreadPoolExecutor(threads, thread_name_prefix=f"lane-{schema}") as pool:
        futures = [pool.submit(_worker, schema, coalescer, stop_at, reads) for _ in range(threads)]
        ran = 0
        for future in futures:
            try:
                ran += future.result()
            except Exception:
                logger.exception("a lane thread of %s failed", schema)
    logger.info(
        "lane of %s: %d runs, %d batches carrying %d commands",
        schema,
        ran,
        coalescer.batches,
        coalescer.commands,
    )
    return ran


def _worker(schema: str, coalescer: Coalescer, stop_at: float, reads: dict[Any, Any]) -> int:
    ran = 0
    idle_since: float | None = None
    try:
        with schema_context(schema), crm_session_reuse(), tenant_memo_scope(reads):
            renewed = 0.0
            while time.monotonic() < stop_at:
                if time.monotonic() - renewed >= RENEW_SECONDS:
                    get_redis().pexpire(lane_key(), LEASE_SECONDS * 1000)
                    renewed = time.monotonic()
                run = _claim_next()
                if run is None:
                    # Nothing due now; a run still executing may plan what follows it (the
                    # register and the log after a lookup): wait for that a moment.
                    now = time.monotonic()
                    idle_since = idle_since or now
                    if coalescer.members == 0 or now - idle_since >= IDLE_SECONDS:
                        break
                    time.sleep(IDLE_POLL_SECONDS)
                    continue
                idle_since = None
                with coalescer.member():
                    # Not a ringing call's (_due): its call has ended, and stays so.
                    run_claimed_execute(run, live=False)
                ran += 1
    finally:
        connection.close()
    return ran


def _due(by: datetime | None = None) -> Q:
    """Runs due by `by` (now and CLAIM_EARLY) but those of ringing calls: they go ahead on
    their own (outbox.LIVE_ACTIONS)."""
    ringing = Q(action_type__in=LIVE_ACTIONS) & ~Q(call__status=Call.Status.ENDED)
    by = by or timezone.now() + CLAIM_EARLY
    return Q(status=ActionRun.Status.SCHEDULED, due_at__lte=by) & ~ringing


# Stands for the time in the compiled statement of _next_due (any time the ORM keeps as is).
_BY_MARK = datetime(2000, 1, 1, tzinfo=UTC)


@cache
def _next_due() -> tuple[str, tuple[Any, ...]]:
    """The statement selecting the next due run's id, compiled once (a lane claims hundreds of
    runs a second; table names are unqualified: the tenant's search_path picks its schema)."""
    query = ActionRun.objects.filter(_due(_BY_MARK)).order_by("due_at").values_list("pk")[:1]
    return query.query.sql_with_params()


def _claim_next() -> ActionRun | None:
    """The next due run, claimed (several threads claim side by side: SKIP LOCKED)."""
    sql, params = _next_due()
    by = timezone.now() + CLAIM_EARLY
    return run_claim_next(sql, [by if param == _BY_MARK else param for param in params])
