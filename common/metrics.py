"""The Prometheus metrics every layer records into, and the one-line helpers that record them.

On the ground floor so that `crm`, `calls` and `scenarios` can count without importing the
wiring; `simtrix.metrics` serves them at `/metrics`, with the per-tenant outbox gauges it reads at
scrape time. Under gunicorn (and in the Celery worker) PROMETHEUS_MULTIPROC_DIR makes
prometheus-client keep each process's values in a file of that directory, named by host and pid
(common.metrics_files), which the view adds up; it must be set before this module is first
imported (gunicorn.conf.py, the compose file).

Labels are bounded sets, never free text: bridge event types are the contract's, lookup results
are four words, Bitrix24 methods are the client's own names (anything else is `other`) and a
failure's outcome is one of the codes crm tells apart (crm.errors.KNOWN_CODES) or `error`. No
counter has a tenant label: with a thousand tenants the series would be a thousand times more;
the outbox gauges are per tenant because a tenant's late work is the question they answer.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from functools import wraps
from typing import Any, ParamSpec, TypeVar

from prometheus_client import Counter, Gauge, Histogram, values

from common.metrics_files import multiprocess_directory, process_identifier

# Before any metric exists: its value files are named after this process as
# common.metrics_files names it (host and pid), not by the pid alone, which two containers
# sharing the directory may both have.
if multiprocess_directory():
    values.ValueClass = values.MultiProcessValue(process_identifier=process_identifier)

BRIDGE_EVENTS = Counter(
    "simtrix_bridge_events",
    "Call events reported by the bridge app, by type and what became of them.",
    ["type", "result"],
)
LOOKUPS = Counter(
    "simtrix_lookups",
    "Caller lookups in the CRM: hit (found), miss (not in the CRM), pending (past the budget, "
    "finished in the background), unavailable (Bitrix24 not connected or refusing).",
    ["result"],
)
LOOKUP_SECONDS = Histogram(
    "simtrix_lookup_duration_seconds",
    "How long a caller lookup took, cache included.",
    ["result"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0),
)
BITRIX24_REQUESTS = Counter(
    "simtrix_bitrix24_requests",
    "HTTP requests to Bitrix24 (every attempt, a batch counts once), by method and outcome.",
    ["method", "outcome"],
)
RATE_LIMIT_WAITS = Counter(
    "simtrix_bitrix24_rate_limit_waits",
    "Requests that waited for a slot of the portal's rate limit (waited), or found none in "
    "the time they had (gave_up).",
    ["outcome"],
)
COMMANDS_WAITING = Gauge(
    "simtrix_commands_waiting",
    "Phones' long polls waiting for a command now (summed over the live web processes).",
    multiprocess_mode="livesum",
)
COMMANDS_CLOSED = Counter(
    "simtrix_commands_closed",
    "Commands given to phones, by type and how they ended (done, failed, rejected, expired).",
    ["type", "status"],
)
RATE_LIMIT_WAIT_SECONDS = Counter(
    "simtrix_bitrix24_rate_limit_wait_seconds",
    "Seconds requests slept waiting for the portal's rate limit.",
)

# Bridge event results besides the receipt's own status (accepted, duplicate).
CONFLICT = "conflict"
ERROR = "error"

_METHOD = re.compile(r"[a-z0-9_.]{1,64}")

_LOOKUP_RESULTS = {"found": "hit", "not_found": "miss", "pending": "pending"}

P = ParamSpec("P")
R = TypeVar("R")


def bitrix24_method_label(method: str) -> str:
    lowered = method.lower()
    return lowered if _METHOD.fullmatch(lowered) else "other"


def bitrix24_request_record(*, method: str, outcome: str) -> None:
    """One HTTP attempt at Bitrix24 (crm.session's request log calls this for every row).

    `outcome` is `ok` or a bounded error label (crm.errors.Bitrix24Error.outcome)."""
    BITRIX24_REQUESTS.labels(bitrix24_method_label(method), outcome).inc()


def rate_limit_wait_record(wait: float) -> None:
    """The limiter's answer for one request: > 0 slept that long, < 0 gave up, 0 went at once."""
    if wait > 0:
        RATE_LIMIT_WAITS.labels("waited").inc()
        RATE_LIMIT_WAIT_SECONDS.inc(wait)
    elif wait < 0:
        RATE_LIMIT_WAITS.labels("gave_up").inc()


def lookup_result_label(status: str) -> str:
    return _LOOKUP_RESULTS.get(status, "unavailable")


def lookup_observed(function: Callable[P, R]) -> Callable[P, R]:
    """Counts and times a lookup that returns `(crm_object, ...)`; a call without a number is
    no lookup (a hidden caller) and is not counted."""

    @wraps(function)
    def observed(*args: P.args, **kwargs: P.kwargs) -> R:
        if not kwargs.get("phone_number"):
            return function(*args, **kwargs)
        started = time.perf_counter()
        result = function(*args, **kwargs)
        crm: Any = result[0] if isinstance(result, tuple) else result
        label = lookup_result_label(str(crm.get("status") or ""))
        LOOKUPS.labels(label).inc()
        LOOKUP_SECONDS.labels(label).observe(time.perf_counter() - started)
        return result

    return observed


def bridge_event_observed(
    *, conflict: type[Exception]
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Counts the events a receiving function records, by `event.type` and the receipt's status
    (`accepted`, `duplicate`); `conflict` is the exception of a reused event_id, any other
    exception is an `error`."""

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        @wraps(function)
        def observed(*args: P.args, **kwargs: P.kwargs) -> R:
            event_type = str(getattr(kwargs.get("event"), "type", "") or "unknown")
            try:
                receipt = function(*args, **kwargs)
            except conflict:
                BRIDGE_EVENTS.labels(event_type, CONFLICT).inc()
                raise
            except Exception:
                BRIDGE_EVENTS.labels(event_type, ERROR).inc()
                raise
            BRIDGE_EVENTS.labels(event_type, str(getattr(receipt, "status", ERROR))).inc()
            return receipt

        return observed

    return decorate
