"""A portal's round trip and rate limit: keep-alive, a limiter that learns, a backlog (issue 19).

    DATABASE_URL=postgres://... BENCH_REDIS_URL=redis://... DJANGO_SECRET_KEY=x \\
        python -m bench.portal_throughput [--part backlog|latency|burst|all] \\
            [--lookups 100] [--burst 30] [--threads 6] \\
            [--calls 300] [--known 0.7] [--workers 2] [--timeout 600] [--ring-every 5] \\
            [--posters 4] [--replay batch|single] [--log worker.log]

Creates a throwaway database (``bench._harness``: real PostgreSQL, Redis on BENCH_REDIS_URL,
flushed) with one tenant and its phone on an in-process HTTPS sandbox portal, then measures
(``--part``, default all):

- **latency**: lookup latency (``crm_find_by_phone``, cache off) with a 50 ms round trip added
  by the sandbox to every request and 100 ms to every new connection (TCP + TLS handshakes: two
  round trips), with keep-alive (``SIMTRIX_BITRIX24_KEEPALIVE``) and without; rate limits out
  of the way;
- **burst**: 503 ``QUERY_LIMIT_EXCEEDED`` answers seen when ``--burst`` lookups arrive at once
  (from ``--threads`` threads) at a portal draining 2 requests/s that blocks above 10, while the
  connection is configured for the standard plan (2/s, burst 50): with the estimate fixed
  (``SIMTRIX_BITRIX24_LIMITER_LEARNS`` off, as before) and learning;
- **backlog**, the main one: a phone back online replays its queue. ``--calls`` calls of the
  last 10 minutes (answered, missed, rejected, busy; ``--known`` of them from numbers of the
  sandbox seed, the others unknown, each its own) are reported at once through the bridge API,
  each call's events back to back (``--replay batch``: one ``{"events": [...]}`` per call, the
  queue's replay, which skips the inline lookup; ``single``: one request per event), from
  ``--posters`` threads, against the portal at 2 requests/s with burst 50 (the standard plan,
  as configured). The production set-up does the work: ``celery beat`` (the dispatcher, once a
  second) and one ``celery worker`` (``--workers``: its concurrency) with the default scenarios.
  Meanwhile, every ``--ring-every`` seconds (or as soon as the one before answered) a new
  incoming call rings (``call.started``, a known caller: a contact added to the sandbox for
  it, so its lookup is never cached); it keeps ringing. A ringing call costs two requests that
  cannot wait to share a batch (its lookup, the register that pops its card): at one every
  half second they alone are more than the portal's 2 a second, and no backlog can drain; the
  default, one every 5 s, is a busy team's front desk.
  Measured until every call is logged in Bitrix24 (its ``b24_finished_at`` set, or its
  ``log_call`` run finished) or ``--timeout`` seconds after the first report:

  - calls logged per second: logged / (last logged - first report), and how many were logged,
    failed, and still pending;
  - requests per call: HTTP requests the sandbox received meanwhile (a ``batch`` is one, 503s
    included) / calls; commands per call (each command of a batch counted); both include the
    ringing calls' requests, shown apart as the request log attributes them;
  - 503s (the sandbox's count; the tenant's request log agrees or says otherwise);
  - the ringing calls: their ``call.started`` request time p50/p99 and what it answered (the
    caller ``found`` within the tenant's lookup budget, or ``pending``), and the time until
    their ``register_call`` run was done (the card popped) p50/p99.

  The bench's one phone sends what many would: its per-device throttle is raised out of the
  way. ``--log`` appends the worker's and beat's output to a file (errors of the runs).

Targets (issue 19): keep-alive saves the handshake on every lookup but the first of a
connection; at most 5 503s for a burst of 30 against burst 10; a backlog logged at 20 calls/s
or more, while ringing calls' lookups answer ``found`` within the lookup budget.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import threading
import time
import uuid
from collections import Counter
from datetime import timedelta
from typing import Any

from bench._harness import percentile, table, throwaway_environment

ROUND_TRIP_MS = 50
HANDSHAKE_MS = 2 * ROUND_TRIP_MS
FOUND = ["+48600111222", "+48600111333", "+48 600 111 444", "+48221234567", "+48601222333"]
# Callers of the backlog in the sandbox seed: contacts, companies and leads.
KNOWN = [
    "+48600111222", "+48600111333", "+48600111444", "+48600111555", "+48221234567",
    "+48587654321", "+48601222333", "+48602333444",
]  # fmt: skip
# (outcome, weight); an answered call is incoming two times in three, busy ones are outgoing.
OUTCOMES = [("answered", 40), ("missed", 30), ("rejected", 15), ("busy", 15)]
OFFLINE = timedelta(minutes=10)  # the backlog's calls ended during the last ten minutes
PROGRESS_EVERY = 30.0
CARD_GRACE = 30.0  # after the backlog: how long the last ringing calls' cards may take


def _percentiles(samples: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return cuts[49], cuts[98]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["backlog", "latency", "burst", "all"], default="all")
    parser.add_argument("--lookups", type=int, default=100, help="latency: lookups per variant")
    parser.add_argument("--burst", type=int, default=30, help="burst: lookups at once")
    parser.add_argument("--threads", type=int, default=6, help="burst: threads")
    parser.add_argument("--calls", type=int, default=300, help="backlog: calls reported")
    parser.add_argument("--known", type=float, default=0.7, help="backlog: share of known callers")
    parser.add_argument("--workers", type=int, default=2, help="backlog: worker concurrency")
    parser.add_argument("--timeout", type=float, default=600.0, help="backlog: seconds at most")
    parser.add_argument(
        "--ring-every",
        type=float,
        default=5.0,
        help="backlog: seconds between ringing calls (0: none)",
    )
    parser.add_argument("--posters", type=int, default=4, help="backlog: threads reporting")
    parser.add_argument("--replay", choices=["batch", "single"], default="batch")
    parser.add_argument("--log", help="backlog: append the worker's and beat's output here")
    args = parser.parse_args()
    parts = ["latency", "burst", "backlog"] if args.part == "all" else [args.part]

    with throwaway_environment(tenants=1, rate_limited=True) as env:
        schema = env.schemas[0]
        if "latency" in parts:
            _latency_print(_latency(env.portal, schema, lookups=args.lookups))
        if "burst" in parts:
            bursts = _bursts(env.portal, schema, calls=args.burst, threads=args.threads)
            _bursts_print(bursts, calls=args.burst, threads=args.threads)
        if "backlog" in parts:
            try:
                result = _backlog(env, schema, args)
            finally:
                env.stop_all()
            _backlog_print(result, args)


# --- Latency and burst: lookups in this process ---------------------------------------------


def _latency_print(latency: list[tuple[str, list[float], int]]) -> None:
    print(f"Lookup latency, {ROUND_TRIP_MS} ms round trip (+{HANDSHAKE_MS} ms per connection)")
    print(f"{'':<22}{'n':>6}{'p50 ms':>10}{'p99 ms':>10}{'connections':>13}")
    for name, samples, connections in latency:
        p50, p99 = _percentiles(samples)
        print(f"{name:<22}{len(samples):>6}{p50:>10.1f}{p99:>10.1f}{connections:>13}")
    print(flush=True)


def _bursts_print(bursts: list[Any], *, calls: int, threads: int) -> None:
    print(f"Burst of {calls} lookups ({threads} threads), portal 2/s burst 10, "
          "configured 2/s burst 50")  # fmt: skip
    print(f"{'limiter':<22}{'503s':>6}{'failed':>8}{'seconds':>10}{'estimate after':>18}")
    for name, limited, failed, seconds, estimate in bursts:
        shown = f"{estimate[0]:.2f}/s, {estimate[1]}"
        print(f"{name:<22}{limited:>6}{failed:>8}{seconds:>10.1f}{shown:>18}")
    print(flush=True)


def _lookup(number: str) -> str:
    from crm.selectors import crm_find_by_phone

    return crm_find_by_phone(phone=number, use_cache=False, budget_s=float("inf")).status


def _latency(portal: Any, schema: str, *, lookups: int) -> list[tuple[str, list[float], int]]:
    from django.test.utils import override_settings
    from django_tenants.utils import schema_context

    from crm.models import Bitrix24Connection
    from crm.outbound import keep_alive_close_all

    rows = []
    portal.set_rate_limit(None, None)
    with schema_context(schema):
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


def _burst(schema: str, calls: int, threads: int) -> tuple[int, float]:
    """``calls`` lookups from ``threads`` threads started together: (failed, seconds)."""
    from django.db import connection
    from django_tenants.utils import schema_context

    failed: list[str] = []
    share = [calls // threads + (1 if i < calls % threads else 0) for i in range(threads)]
    start = threading.Barrier(threads)

    def work(count: int) -> None:
        try:
            with schema_context(schema):
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
    portal: Any, schema: str, *, calls: int, threads: int
) -> list[tuple[str, int, int, float, tuple[float, int]]]:
    from django.test.utils import override_settings
    from django_tenants.utils import schema_context

    from crm.limiter import PortalLimiter
    from crm.models import Bitrix24Connection

    rows = []
    with schema_context(schema):
        Bitrix24Connection.objects.update(rate_limit_per_second=None, rate_limit_burst=None)
    limiter = PortalLimiter(portal.domain, 2.0, 50)
    for name, learns in (("fixed (before)", False), ("learning (after)", True)):
        with override_settings(SIMTRIX_BITRIX24_LIMITER_LEARNS=learns):
            limiter.reset()
            portal.reset()
            portal.set_rate_limit(2.0, 10)
            failed, seconds = _burst(schema, calls, threads)
            limited = int(portal.control.state()["rate_limited_count"])
            estimate = limiter.estimate() if learns else (2.0, limiter.effective_burst)
            rows.append((name, limited, failed, seconds, estimate))
    portal.set_rate_limit(None, None)
    limiter.reset()
    return rows


# --- Backlog: a phone's queue replayed, real worker and beat --------------------------------


def _backlog_calls(count: int, known: float) -> list[list[dict[str, Any]]]:
    """Each call's events in the order the phone reports them; ended during the last OFFLINE."""
    from django.utils import timezone

    rng = random.Random(19)
    now = timezone.now()
    outcomes, weights = zip(*OUTCOMES, strict=True)
    calls = []
    for index in range(count):
        outcome = rng.choices(outcomes, weights)[0]
        if outcome == "busy":
            direction = "outgoing"
        elif outcome == "answered":
            direction = "incoming" if rng.random() < 2 / 3 else "outgoing"
        else:
            direction = "incoming"
        number = KNOWN[index % len(KNOWN)] if rng.random() < known else f"+48501{index:06d}"
        talk = rng.randint(20, 300) if outcome == "answered" else 0
        ended = now - OFFLINE + (index + 1) * (OFFLINE / count) - timedelta(seconds=1)
        started = ended - timedelta(seconds=talk + 15)
        call_id = f"backlog-{index}"

        def event(type_: str, at: Any, _call_id: str = call_id, **fields: Any) -> dict[str, Any]:
            return {"event_id": str(uuid.uuid4()), "type": type_, "call_id": _call_id,
                    "occurred_at": at.isoformat(), **fields}  # fmt: skip

        events = [event("call.started", started, direction=direction, phone_number=number)]
        if outcome == "answered":
            events.append(event("call.answered", started + timedelta(seconds=15)))
        events.append(event("call.ended", ended, outcome=outcome, duration_seconds=talk))
        calls.append(events)
    return calls


def _client(schema: str, token: str) -> Any:
    from rest_framework.test import APIClient

    client = APIClient(HTTP_HOST=f"{schema}.localhost")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def _report(schema: str, token: str, calls: list[list[dict[str, Any]]], *, threads: int,
            replay: str) -> list[str]:  # fmt: skip
    """Every call's events posted back to back, the calls shared by `threads`: the errors."""
    from django.db import connection

    errors: list[str] = []
    start = threading.Barrier(threads)

    def work(share: list[list[dict[str, Any]]]) -> None:
        client = _client(schema, token)
        try:
            start.wait()
            for events in share:
                bodies = [{"events": events}] if replay == "batch" else events
                for body in bodies:
                    response = client.post("/api/bridge/v1/events/", body, format="json")
                    if response.status_code not in (200, 201):
                        errors.append(f"{response.status_code} {response.content[:200]!r}")
                    elif replay == "batch":
                        results = response.json()["results"]
                        errors.extend(str(r) for r in results if r["status"] == "invalid")
        finally:
            connection.close()

    posters = [threading.Thread(target=work, args=(calls[i::threads],)) for i in range(threads)]
    for poster in posters:
        poster.start()
    for poster in posters:
        poster.join()
    return errors


class Ringer(threading.Thread):
    """A new incoming call from a new known caller every `every` seconds (or as soon as the one
    before answered, when that took longer), until stopped: each call.started timed, with the
    crm status it answered."""

    def __init__(self, portal: Any, schema: str, token: str, every: float) -> None:
        super().__init__()
        self.portal, self.schema, self.token, self.every = portal, schema, token, every
        self.halt = threading.Event()
        self.rung: list[dict[str, Any]] = []

    def run(self) -> None:
        from django.db import connection

        client = _client(self.schema, self.token)
        next_at = time.monotonic()
        try:
            while not self.halt.is_set():
                self.rung.append(self._ring(client, len(self.rung)))
                next_at = max(next_at + self.every, time.monotonic())
                self.halt.wait(next_at - time.monotonic())
        finally:
            connection.close()

    def _ring(self, client: Any, index: int) -> dict[str, Any]:
        from django.utils import timezone

        number = f"+48602{index:06d}"
        self.portal.add_entity("CONTACT", {
            "NAME": "Ringing", "LAST_NAME": f"Caller {index}", "ASSIGNED_BY_ID": 5,
            "PHONE": [{"VALUE_TYPE": "WORK", "VALUE": number}],
        })  # fmt: skip
        call_id = f"ring-{index}"
        body = {"event_id": str(uuid.uuid4()), "type": "call.started", "call_id": call_id,
                "occurred_at": timezone.now().isoformat(), "direction": "incoming",
                "phone_number": number}  # fmt: skip
        posted = time.time()
        started = time.perf_counter()
        response = client.post("/api/bridge/v1/events/", body, format="json")
        elapsed = time.perf_counter() - started
        ok = response.status_code in (200, 201)
        status = response.json()["crm"]["status"] if ok else f"HTTP {response.status_code}"
        return {"call_id": call_id, "posted": posted, "seconds": elapsed, "crm": status}


def _progress(schema: str) -> dict[str, Any]:
    """The backlog's calls: logged (when), failed; their runs' statuses."""
    from django_tenants.utils import schema_context

    from calls.models import Call
    from scenarios.models import ActionRun

    with schema_context(schema):
        finished = dict(
            Call.objects.filter(call_id__startswith="backlog-").values_list(
                "call_id", "b24_finished_at"
            )
        )
        runs = list(
            ActionRun.objects.filter(call__call_id__startswith="backlog-").values_list(
                "call__call_id", "action_type", "status", "done_at"
            )
        )
    logged: dict[str, float] = {
        call_id: at.timestamp() for call_id, at in finished.items() if at is not None
    }
    failed: set[str] = set()
    over = (ActionRun.Status.FAILED, ActionRun.Status.SKIPPED, ActionRun.Status.CANCELLED)
    for call_id, action_type, status, done_at in runs:
        if action_type != "log_call" or call_id in logged:
            continue
        if status == ActionRun.Status.DONE and done_at is not None:
            logged[call_id] = done_at.timestamp()
        elif status in over:
            failed.add(call_id)
    return {
        "logged": logged,
        "failed": failed,
        "runs": Counter((action_type, status) for _, action_type, status, _ in runs),
    }


def _portal_counts(portal: Any) -> dict[str, int]:
    """What the sandbox received since its log was cleared (token refreshes aside): requests (a
    batch is one, 503s too), commands it ran (each of a batch), 503 QUERY_LIMIT_EXCEEDED."""
    rows = [r for r in portal.state.query_requests() if r.get("method") != "oauth.token"]
    commands = [
        r for r in rows if r.get("method") != "batch" and r.get("error") != "QUERY_LIMIT_EXCEEDED"
    ]
    return {
        "requests": sum(1 for r in rows if not r.get("in_batch")),
        "commands": len(commands),
        "limited": int(portal.state.rate_limited_count),
    }


def _wait_ready(portal: Any, timeout: float = 120.0) -> None:
    """Until beat and the worker run the dispatcher, and beat's start-up jobs (directory and
    lines sync) are over: the portal quiet for 3 s."""
    from scenarios.schedule import dispatcher_heartbeat

    deadline = time.monotonic() + timeout
    while dispatcher_heartbeat()["last_pass_at"] is None:
        if time.monotonic() > deadline:
            raise SystemExit("the worker or beat did not come up (see --log)")
        time.sleep(0.5)
    seen, quiet_since = len(portal.state.requests), time.monotonic()
    while time.monotonic() - quiet_since < 3 and time.monotonic() < deadline:
        time.sleep(0.5)
        if len(portal.state.requests) != seen:
            seen, quiet_since = len(portal.state.requests), time.monotonic()


def _backlog_prepare(env: Any, schema: str, args: Any) -> tuple[str, float, int]:
    """The standard plan, the worker and beat up, every count from zero: (the phone's token,
    the lookup budget in seconds, the last request log id before)."""
    import redis
    from django_tenants.utils import schema_context

    from calls.models import CallSettings, Device
    from calls.selectors import call_settings_forget
    from calls.services import device_rotate_token
    from crm.limiter import PortalLimiter
    from crm.models import Bitrix24Connection, RequestLog

    portal = env.portal
    with schema_context(schema):
        # As configured for the standard plan: 2/s, burst 50 (the portal's numbers too).
        Bitrix24Connection.objects.update(rate_limit_per_second=None, rate_limit_burst=None)
        budget = Bitrix24Connection.objects.get().lookup_budget_ms / 1000
        CallSettings.objects.update_or_create(singleton=1, defaults={"throttle_per_minute": 10**6})
        call_settings_forget()
        token = device_rotate_token(device=Device.objects.get())
    portal.reset()
    portal.set_rate_limit(2.0, 50)
    # Nothing left of the parts before: no queued task, no limiter estimate, no cached caller.
    redis.Redis.from_url(os.environ["REDIS_URL"]).flushdb()
    env.start("worker", "-l", "WARNING", "--concurrency", str(args.workers), log=args.log)
    env.start("beat", "-l", "WARNING", "--pidfile=", log=args.log)
    _wait_ready(portal)
    with portal.state.lock:
        portal.state.requests.clear()
        portal.state.rate_limited_count = 0
    portal.set_rate_limit(2.0, 50)  # its bucket empty
    PortalLimiter(portal.domain, 2.0, 50).reset()
    with schema_context(schema):
        log_from = RequestLog.objects.order_by("-id").values_list("id", flat=True).first() or 0
    return token, budget, log_from


def _backlog_drain(
    schema: str, portal: Any, args: Any, *, first: float, ringer: Ringer, log_from: int
) -> dict[str, Any]:
    """Until every backlog call is logged or failed, or the timeout; progress now and then.
    The portal's and the request log's counts are taken then."""
    deadline = first + args.timeout
    next_progress = first + PROGRESS_EVERY
    while True:
        progress = _progress(schema)
        finished = len(progress["logged"]) + len(progress["failed"])
        now = time.time()
        if finished >= args.calls or now >= deadline:
            break
        if now >= next_progress:
            counts = _portal_counts(portal)
            print(f"  {now - first:4.0f} s: logged {len(progress['logged'])}/{args.calls}, "
                  f"failed {len(progress['failed'])}, requests {counts['requests']}, "
                  f"503s {counts['limited']}, ringing calls {len(ringer.rung)}",
                  flush=True)  # fmt: skip
            next_progress += PROGRESS_EVERY
        time.sleep(1)
    return {
        **progress,
        "elapsed": now - first,
        "timed_out": finished < args.calls,
        "counts": _portal_counts(portal),
        **_log_split(schema, log_from),
    }


def _cards(schema: str, rung: list[dict[str, Any]], *, until: float) -> dict[str, Any]:
    """The ringing calls' register_call runs: seconds from call.started to done, statuses."""
    from django_tenants.utils import schema_context

    from scenarios.models import ActionRun

    posted = {r["call_id"]: r["posted"] for r in rung}
    while True:
        with schema_context(schema):
            runs = list(
                ActionRun.objects.filter(
                    call__call_id__in=list(posted), action_type="register_call"
                ).values_list("call__call_id", "status", "done_at")
            )
        popped = [
            done_at.timestamp() - posted[call_id]
            for call_id, status, done_at in runs
            if status == ActionRun.Status.DONE and done_at is not None
        ]
        if len(popped) == len(posted) or time.time() >= until:
            return {"popped": popped, "statuses": Counter(status for _, status, _ in runs)}
        time.sleep(1)


def _log_split(schema: str, log_from: int) -> dict[str, Any]:
    """The tenant's request log since `log_from`: 503s, and whose the requests and the
    commands were (the backlog's calls, the ringing ones, none)."""
    from django_tenants.utils import schema_context

    from calls.models import Call
    from crm.models import RequestLog

    with schema_context(schema):
        rows = RequestLog.objects.filter(id__gt=log_from)
        limited = rows.filter(parent__isnull=True, error_code="QUERY_LIMIT_EXCEEDED").count()
        whose = dict(Call.objects.values_list("pk", "call_id"))
        requests: Counter[str] = Counter()
        commands: Counter[str] = Counter()
        for call_pk, parent, is_batch, error in rows.values_list(
            "call_id", "parent_id", "is_batch", "error_code"
        ):
            who = (whose.get(call_pk or 0) or "none-").split("-")[0]
            if parent is None:
                requests[who] += 1
            # A batch's row is not a command; its commands' rows are (is_batch: in one).
            sent = error not in ("QUERY_LIMIT_EXCEEDED", "NOT_EXECUTED")
            if sent and not (is_batch and parent is None):
                commands[who] += 1
        # The batches' fill: commands per batch request (the lane's shared ones and the rest).
        sizes = Counter(
            rows.filter(parent__isnull=False).values_list("parent_id", flat=True)
        ).values()
    return {
        "limited_logged": limited,
        "requests_by": requests,
        "commands_by": commands,
        "batch_sizes": sorted(sizes),
    }


def _backlog(env: Any, schema: str, args: Any) -> dict[str, Any]:
    token, budget, log_from = _backlog_prepare(env, schema, args)
    calls = _backlog_calls(args.calls, args.known)
    print(f"Backlog: worker (concurrency {args.workers}) and beat up; reporting {args.calls} "
          f"calls ({args.replay} replay)", flush=True)  # fmt: skip
    ringer = Ringer(env.portal, schema, token, args.ring_every)
    first = time.time()
    if args.ring_every > 0:
        ringer.start()
    errors = _report(schema, token, calls, threads=args.posters, replay=args.replay)
    reported = time.time() - first
    print(f"  reported in {reported:.1f} s, {len(errors)} errors", flush=True)
    for error in errors[:5]:
        print(f"  error: {error}")
    drained = _backlog_drain(
        schema, env.portal, args, first=first, ringer=ringer, log_from=log_from
    )
    ringer.halt.set()
    if ringer.is_alive():
        ringer.join()
    grace = 0 if drained["timed_out"] else CARD_GRACE
    cards = _cards(schema, ringer.rung, until=time.time() + grace)
    return {
        **drained,
        "first": first,
        "reported": reported,
        "errors": errors,
        "budget": budget,
        "rung": ringer.rung,
        "cards": cards,
    }


def _fill(sizes: list[int]) -> str:
    if not sizes:
        return "-"
    p50, p99 = (
        percentile([float(n) for n in sizes], 0.5),
        percentile([float(n) for n in sizes], 0.99),
    )
    return f"{p50:.0f} / {p99:.0f} / {max(sizes)} ({len(sizes)} batches)"


def _span(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    """p50 / p99 of `values` times `scale`."""
    if not values:
        return "-"
    p50, p99 = percentile(values, 0.5) * scale, percentile(values, 0.99) * scale
    return f"{p50:.{digits}f} / {p99:.{digits}f}"


def _backlog_print(result: dict[str, Any], args: Any) -> None:
    calls, counts, rung = args.calls, result["counts"], result["rung"]
    logged, failed = result["logged"], result["failed"]
    pending = calls - len(logged) - len(failed)
    last = max(logged.values(), default=result["first"]) - result["first"]
    rate = len(logged) / last if last > 0 else 0.0
    budget = result["budget"]
    within = sum(1 for r in rung if r["crm"] == "found" and r["seconds"] <= budget)
    answers = Counter(r["crm"] for r in rung)
    popped = result["cards"]["popped"]

    def split(by: Counter[str]) -> str:
        return f"{by['backlog']} / {by['ring']} / {by['none']}"

    stopped = f"timeout at {result['elapsed']:.0f} s" if result["timed_out"] else "all finished"
    ring = (
        f"{len(rung)} calls rang (every {args.ring_every} s, or as soon as the one before "
        f"answered: {result['elapsed'] / max(len(rung), 1):.2f} s apart)"
        if args.ring_every > 0
        else "no call rang"
    )
    print(f"\nBacklog of {calls} calls ({args.known:.0%} known callers; {args.replay} replay from "
          f"{args.posters} threads in {result['reported']:.1f} s), portal 2/s burst 50, worker "
          f"concurrency {args.workers}; {ring}; {stopped}")  # fmt: skip
    rows = [
        ["calls logged / s", f"{rate:.2f}", ">= 20"],
        ["logged / failed / pending", f"{len(logged)} / {len(failed)} / {pending}",
         f"{calls} / 0 / 0"],
        ["first report -> last logged (s)", f"{last:.1f}", ""],
        ["HTTP requests received (batch = 1)", counts["requests"], ""],
        ["  per call", f"{counts['requests'] / calls:.2f}", ""],
        ["  request log: backlog / ringing / no call*", split(result["requests_by"]), ""],
        ["  the backlog calls' own, per call", f"{result['requests_by']['backlog'] / calls:.2f}",
         ""],
        ["commands (in batches too) per call", f"{counts['commands'] / calls:.2f}", ""],
        ["commands per batch request: p50 / p99 / max",
         _fill(result["batch_sizes"]), "<= 50"],
        ["  request log: backlog / ringing / no call*", split(result["commands_by"]), ""],
        ["  the backlog calls' own, per call", f"{result['commands_by']['backlog'] / calls:.2f}",
         ""],
        ["503 QUERY_LIMIT_EXCEEDED (sandbox / log)",
         f"{counts['limited']} / {result['limited_logged']}", ""],
    ]  # fmt: skip
    rows += [
        ["ringing calls", len(rung), ""],
        ["  call.started p50 / p99 (ms)", _span([r["seconds"] for r in rung], 1000, 0),
         f"<= {budget * 1000:.0f}"],
        ["  crm status answered",
         ", ".join(f"{name} {n}" for name, n in sorted(answers.items())) or "-", "found"],
        ["  found within the budget", f"{within} / {len(rung)}", f"{len(rung)} / {len(rung)}"],
        ["  card popped (register_call done)", f"{len(popped)} / {len(rung)}", ""],
        ["  card popped after p50 / p99 (s)", _span(popped), ""],
    ] if rung else []  # fmt: skip
    print(table(rows, ["backlog", "value", "target"]))
    print("* no call: lookups at call.started, before the call exists (the ringing calls', "
          "the backlog's with --replay single), lookups finished in the background, "
          "periodic jobs")  # fmt: skip
    runs = sorted(result["runs"].items())
    print("runs of the backlog calls: " + ", ".join(f"{k} {s} {n}" for (k, s), n in runs))
    if result["cards"]["statuses"]:
        print(f"register_call runs of the ringing calls: {dict(result['cards']['statuses'])}")
    met = rate >= 20 and not pending
    found = "not measured" if not rung else "met" if within == len(rung) else "NOT met"
    print(f"\nTargets: >= 20 calls/s logged: {'met' if met else 'NOT met'} ({rate:.2f}); "
          f"ringing lookups found within the budget: {found} ({within}/{len(rung)})")  # fmt: skip


if __name__ == "__main__":
    main()
