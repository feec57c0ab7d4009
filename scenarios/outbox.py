"""Execution of planned work: exactly once, on time, never lost.

- `run_plan` writes the row inside the caller's transaction; an immediately due run is sent to
  Celery only after commit.
- `run_execute` claims the row with a conditional UPDATE (status scheduled -> running) that must
  touch exactly one row, so a duplicate or late message does nothing.
- Whatever makes a run need attention at some moment (planned, sent, retried, released) also
  writes `outbox_wake(at=...)` in the same transaction: a row in the public index that
  scenarios.schedule's dispatcher reads, so it visits only tenants with something due.
- `runs_dispatch` (one tenant, when the dispatcher visits it) sends due rows that were never
  sent or whose message was lost, and takes back runs whose worker died (lease expired). Runs
  due within the next tick are sent with that short ETA, so they start on time; long delays
  never rely on broker ETAs (Redis redelivers unacknowledged ETA messages after its visibility
  timeout).
- Handlers must be idempotent per run (they use `run_intent_key(run)` for Bitrix24 creates),
  because a run whose worker died mid-way is executed again.
- A chained run (`after`) becomes due when its predecessor finishes, its delay counted in the
  tenant's working time when `delay_in_working_time` is set (scenarios.worktime).
- Transient failures retry with exponential backoff and jitter (settings
  SIMTRIX_RUN_BACKOFF_BASE_SECONDS / _CAP_SECONDS / SIMTRIX_RUN_MAX_ATTEMPTS), then fail.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Collection
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone
from redis.exceptions import RedisError

from calls.models import Call
from common.sql import column, fetchall, fetchone, instance_insert, pk_column, prepared, table
from crm.context import crm_call_context, crm_live
from crm.errors import Bitrix24Error
from crm.redis_client import get_redis
from scenarios.choices import ActionType, InternalAction
from scenarios.models import ActionRun
from scenarios.worktime import due_at, work_schedule
from tenants.connection import tenant_connection
from tenants.context import tenant_language_active
from tenants.fanout import task_queue
from tenants.wake import tenant_wake

logger = logging.getLogger(__name__)

Handler = Callable[[ActionRun], dict[str, Any] | None]
HANDLERS: dict[str, Handler] = {}

# Defaults of the settings SIMTRIX_RUN_BACKOFF_BASE_SECONDS, ..._CAP_SECONDS, ..._MAX_ATTEMPTS:
# with them a run survives about an hour of Bitrix24 being down before it is `failed`.
BACKOFF_BASE_SECONDS = 5.0
BACKOFF_CAP_SECONDS = 600.0
MAX_ATTEMPTS = 12
# A chain goes on after these; a failed predecessor holds its successors until it is retried.
FINISHED_OK = (ActionRun.Status.DONE, ActionRun.Status.SKIPPED)
# A run sent with its ETA is claimed although the worker's timer may fire a moment early (it
# converts the ETA to its monotonic clock); eager mode, in tests, ignores ETAs altogether.
CLAIM_EARLY = timedelta(seconds=1)
LATE_AFTER = ActionRun.LATE_AFTER
# Runs a ringing phone waits for (the card popped, the caller found): while the call is not
# over they go ahead of the backlog (Celery priority LIVE_PRIORITY, the portal's priority lane)
# and never wait to share a batch (scenarios.lane).
LIVE_ACTIONS = frozenset(
    {InternalAction.REGISTER_CALL, InternalAction.LOOKUP_CALLER, ActionType.SHOW_CARD}
)
# Celery priorities (Redis: 0 is served first); every other task is sent with the default,
# CELERY_TASK_DEFAULT_PRIORITY. A lane starts ahead of the backlog's messages it takes over.
LIVE_PRIORITY = 0
LANE_PRIORITY = 3


class ActionSkipped(Exception):
    """The run has nothing to do (e.g. the caller was reached meanwhile); the reason is kept,
    and so is `result` (what was found out on the way, e.g. each condition's result)."""

    def __init__(self, reason: str, *, result: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.result = result or {}


class ActionDeferred(Exception):
    """The run is not due yet after all: it waits until `until` and runs again then (a moment
    read from Bitrix24 when it first ran, e.g. "one day before the deal's close date"). Not an
    attempt: the count of tries is left as it was."""

    def __init__(self, until: datetime) -> None:
        super().__init__(f"deferred until {until.isoformat()}")
        self.until = until


class PermanentActionError(Exception):
    """Retrying cannot help (bad configuration, a validation error from Bitrix24)."""


def action_handler(action_type: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        HANDLERS[action_type] = handler
        return handler

    return register


def run_intent_key(run: ActionRun, suffix: str = "") -> str:
    return f"run:{run.pk}{':' + suffix if suffix else ''}"


def late_filter(now: datetime) -> Q:
    """Runs due for longer than LATE_AFTER and not started: late."""
    return Q(status=ActionRun.Status.SCHEDULED, due_at__lt=now - LATE_AFTER)


def lease() -> timedelta:
    return timedelta(seconds=getattr(settings, "SIMTRIX_RUN_LEASE_SECONDS", 180))


def redispatch_after() -> timedelta:
    return timedelta(seconds=getattr(settings, "SIMTRIX_RUN_REDISPATCH_SECONDS", 30))


def _send(
    run_ids: list[int],
    *,
    etas: dict[int, datetime | None] | None = None,
    live: Collection[int] = (),
) -> None:
    """Each run to a worker (`live`: those of LIVE_ACTIONS, sent ahead of the others)."""
    from scenarios.tasks import run_action_task  # noqa: PLC0415 — Celery's loop: the task calls back here

    now = timezone.now()
    etas = etas or {}
    due_now = {
        run_id for run_id in run_ids if run_id not in live and _due_by(etas.get(run_id), now)
    }
    if due_now and lane_running():
        # The tenant's lane claims them itself (scenarios.lane): a message each would only
        # have a worker claim the run and hand it back. If the lane dies, their wake stands.
        run_ids = [run_id for run_id in run_ids if run_id not in due_now]
    for run_id in run_ids:
        eta = etas.get(run_id)
        # A broker that is down loses nothing: the runs' wake has the dispatcher send them
        # (and each further try would wait for the broker's connection timeout again).
        # A live run says so in its message: a worker that finds the tenant's lane running
        # leaves the others to it without reading them (scenarios.lane.run_or_coalesce).
        if not task_queue(
            run_action_task,
            run_id,
            *((True,) if run_id in live else ()),
            what=f"action run {run_id}",
            eta=eta if eta is not None and eta > now else None,
            priority=LIVE_PRIORITY if run_id in live else None,
        ):
            return


def _due_by(eta: datetime | None, now: datetime) -> bool:
    return eta is None or eta <= now


def lane_key() -> str:
    """The Redis lease the current tenant's lane (scenarios.lane) holds while it runs."""
    return f"simtrix:lane:{tenant_connection.schema_name}"


def lane_running() -> bool:
    """Whether the current tenant's lane is taking its due runs (Redis down: as if not)."""
    try:
        return bool(get_redis().exists(lane_key()))
    except RedisError:
        return False


def outbox_wake(*, at: datetime) -> None:
    """The dispatcher is to look at the current tenant's outbox by `at`.

    Part of the caller's transaction, like the run it is written for: committed together or not
    at all. An insert, so concurrent events of one tenant never wait on one another.
    """
    tenant_wake(at=at)


def _sent_wake(now: datetime) -> None:
    """A run was just sent: if its message is lost, it is due again after the window."""
    outbox_wake(at=now + redispatch_after())


@dataclass
class _SendOnCommit:
    """The runs an event's transaction sends once it commits, and the wake it wrote for them.

    One per transaction and tenant: the runs planned after the first join it, and so does their
    wake when it is no earlier (the dispatcher, visiting at the first, reads them all). Found in
    Django's `connection.run_on_commit`, the list of the current transaction's callbacks, which
    Django empties when the transaction ends and prunes when a savepoint rolls back: so the
    wake row this stands for is there exactly while this is.
    """

    schema: str
    wake_at: datetime
    run_ids: list[int] = field(default_factory=list)
    live: set[int] = field(default_factory=set)

    def add(self, run: ActionRun, *, ringing: bool) -> None:
        self.run_ids.append(run.pk)
        if ringing and run.action_type in LIVE_ACTIONS:
            self.live.add(run.pk)

    def __call__(self) -> None:
        _send(self.run_ids, live=self.live)


def _send_on_commit() -> _SendOnCommit | None:
    if not connection.in_atomic_block:
        return None
    # (savepoint ids, callback, robust): django-stubs still has the 2-tuples of Django < 4.2.
    for _, callback, *_ in connection.run_on_commit:
        if isinstance(callback, _SendOnCommit) and callback.schema == tenant_connection.schema_name:
            return callback
    return None


def _delayed(*, base: datetime, delay_seconds: int, working_time: bool) -> datetime:
    if not working_time:
        return base + timedelta(seconds=delay_seconds)

    return due_at(work_schedule(), base=base, delay_seconds=delay_seconds, working_time=True)


def run_plan(
    *,
    call_id: int,
    action_type: str,
    dedupe_key: str,
    due_at: datetime | None,
    params: dict[str, Any] | None = None,
    after: ActionRun | None = None,
    delay_seconds: int = 0,
    delay_in_working_time: bool = False,
    label: str = "",
    ringing: bool = False,
) -> ActionRun:
    """Plans work for a call (idempotent by dedupe_key); call inside the event's transaction.

    `ringing`: the call is not over, so a run of LIVE_ACTIONS goes ahead of the others (a call
    reported long after it ended, from a phone's queue, is the backlog's)."""
    now = timezone.now()
    if after is not None and due_at is None and _status_shared(after) in FINISHED_OK:
        # The predecessor finished before this run was planned: count the delay from now.
        due_at = _delayed(base=now, delay_seconds=delay_seconds, working_time=delay_in_working_time)
    sendable = due_at is not None and due_at <= now
    run = ActionRun(
        dedupe_key=dedupe_key,
        call_id=call_id,
        action_type=action_type,
        label=label,
        params=params or {},
        due_at=due_at,
        after=after,
        delay_seconds=delay_seconds,
        delay_in_working_time=delay_in_working_time,
        dispatched_at=now if sendable else None,
    )
    # Planning runs with every call event: one statement rather than get_or_create's four.
    created = instance_insert(run, unique=("dedupe_key",))
    if not created:
        return ActionRun.objects.get(dedupe_key=dedupe_key)
    pending = _send_on_commit()
    if sendable and pending is not None:
        pending.add(run, ringing=ringing)
    elif sendable:
        pending = _SendOnCommit(
            schema=tenant_connection.schema_name, wake_at=now + redispatch_after()
        )
        pending.add(run, ringing=ringing)
        outbox_wake(at=pending.wake_at)
        transaction.on_commit(pending)
    elif due_at is not None and (pending is None or due_at < pending.wake_at):
        outbox_wake(at=due_at)
    return run


def run_cancel(*, run_ids: list[int], reason: str) -> int:
    return ActionRun.objects.filter(pk__in=run_ids, status=ActionRun.Status.SCHEDULED).update(
        status=ActionRun.Status.CANCELLED, last_error=reason, done_at=timezone.now()
    )


def _max_attempts() -> int:
    return getattr(settings, "SIMTRIX_RUN_MAX_ATTEMPTS", MAX_ATTEMPTS)


def run_attempts_allowed() -> int:
    """How many times a run is tried before it fails (the call page counts against it)."""
    return _max_attempts()


def _backoff(attempts: int) -> timedelta:
    base = getattr(settings, "SIMTRIX_RUN_BACKOFF_BASE_SECONDS", BACKOFF_BASE_SECONDS)
    cap = getattr(settings, "SIMTRIX_RUN_BACKOFF_CAP_SECONDS", BACKOFF_CAP_SECONDS)
    ceiling = min(cap, base * 2 ** max(attempts - 1, 0))
    # "Equal jitter": never less than half the step, so a flood of retries spreads out.
    return timedelta(seconds=ceiling / 2 + random.uniform(0, ceiling / 2))


def _is_transient(exc: Exception) -> bool:
    if isinstance(exc, PermanentActionError):
        return False
    if isinstance(exc, Bitrix24Error):
        return exc.transient
    # Unknown failures are retried up to the cap rather than dropped.
    return True


def run_execute(run_id: int) -> str:
    """Executes one run if it is still due and unclaimed; returns its resulting status."""
    run = run_claim(run_id)
    if run is None:
        return "not-claimed"
    return run_claimed_execute(run)


def run_claim(run_id: int) -> ActionRun | None:
    """The run, claimed by this worker (running), if it is still due and unclaimed."""
    now = timezone.now()
    return _claimed(f"%s AND {column(ActionRun, 'due_at')} <= %s", [run_id, now + CLAIM_EARLY], now)


def run_claim_next(candidates: str, params: list[Any]) -> ActionRun | None:
    """The first of `candidates` (SQL selecting the ids of due runs, ordered, one; its
    parameters `params`) that no other worker is claiming right now, claimed (workers claiming
    side by side skip one another's: SKIP LOCKED)."""
    runs = table(ActionRun)
    return _claimed(f"({candidates} FOR UPDATE OF {runs} SKIP LOCKED)", params, timezone.now())


def _claimed(target: str, params: list[Any], now: datetime) -> ActionRun | None:
    """Claims the run whose id is `target` (SQL; its parameters `params`) if it is scheduled:
    one statement, the claim and the row read back, not an UPDATE and a SELECT."""
    status, attempts = column(ActionRun, "status"), column(ActionRun, "attempts")
    sql = (
        f"UPDATE {table(ActionRun)} SET {status} = %s, {column(ActionRun, 'claimed_at')} = %s, "  # noqa: S608 — names from the model, values as parameters
        f"{attempts} = {attempts} + 1 WHERE {pk_column(ActionRun)} = {target} "
        f"AND {status} = %s RETURNING *"
    )
    params = [ActionRun.Status.RUNNING, now, *params, ActionRun.Status.SCHEDULED]
    rows = list(ActionRun.objects.raw(sql, params))
    return rows[0] if rows else None


def run_unclaim(run: ActionRun) -> bool:
    """A claimed run handed back untouched, due as it was (not an attempt): another worker
    takes it (scenarios.lane). False if the claim was no longer this worker's."""
    return bool(
        _mine(run).update(
            status=ActionRun.Status.SCHEDULED,
            claimed_at=None,
            attempts=F("attempts") - 1,
            dispatched_at=timezone.now(),
        )
    )


def _mine(run: ActionRun) -> QuerySet[ActionRun]:
    """The run while this worker's claim on it holds."""
    return ActionRun.objects.filter(
        pk=run.pk, status=ActionRun.Status.RUNNING, claimed_at=run.claimed_at
    )


def run_is_live(run: ActionRun) -> bool:
    """Whether a phone still rings or talks for this run (see LIVE_ACTIONS)."""
    return (
        run.action_type in LIVE_ACTIONS
        and Call.objects.filter(pk=run.call_id).exclude(status=Call.Status.ENDED).exists()
    )


def run_claimed_execute(run: ActionRun, *, live: bool | None = None) -> str:
    """Executes a run this worker claimed (`run_claim`); returns its resulting status.

    `live`: whether a phone waits for it (`run_is_live`), when the caller knows already."""
    handler = HANDLERS.get(run.action_type)
    try:
        if handler is None:
            raise PermanentActionError(f"No handler for action type {run.action_type!r}.")

        with ExitStack() as stack:
            stack.enter_context(crm_call_context(run.call_id))
            stack.enter_context(tenant_language_active())
            if run_is_live(run) if live is None else live:
                stack.enter_context(crm_live())
            result = handler(run) or {}
    except ActionSkipped as exc:
        _run_finished(run, ActionRun.Status.SKIPPED, result=exc.result, last_error=str(exc))
        return ActionRun.Status.SKIPPED
    except ActionDeferred as exc:
        with transaction.atomic():
            if _mine(run).update(
                status=ActionRun.Status.SCHEDULED,
                due_at=exc.until,
                dispatched_at=None,
                attempts=F("attempts") - 1,
                last_error="",
            ):
                outbox_wake(at=exc.until)
        return ActionRun.Status.SCHEDULED
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        if _is_transient(exc) and run.attempts < _max_attempts():
            logger.warning("run %s (%s) failed, will retry: %s", run.pk, run.action_type, error)
            due_at = timezone.now() + _backoff(run.attempts)
            with transaction.atomic():
                if _mine(run).update(
                    status=ActionRun.Status.SCHEDULED,
                    due_at=due_at,
                    dispatched_at=None,
                    last_error=error,
                ):
                    outbox_wake(at=due_at)
            return ActionRun.Status.SCHEDULED
        logger.error("run %s (%s) failed for good: %s", run.pk, run.action_type, error)
        _mine(run).update(status=ActionRun.Status.FAILED, last_error=error, done_at=timezone.now())
        return ActionRun.Status.FAILED
    _run_finished(run, ActionRun.Status.DONE, result=result)
    return ActionRun.Status.DONE


def _col(name: str) -> str:
    return column(ActionRun, name)


@cache
def _finished_sql() -> str:
    status = _col("status")
    return (
        f"UPDATE {table(ActionRun)} SET {status} = %s, {_col('result')} = %s,"  # noqa: S608 — names from the model, values as parameters
        f" {_col('last_error')} = %s, {_col('done_at')} = %s WHERE {pk_column(ActionRun)} = %s"
        f" AND {status} = %s AND {_col('claimed_at')} = %s RETURNING {pk_column(ActionRun)}"
    )


@cache
def _successors_sql() -> str:
    columns = ", ".join(
        [pk_column(ActionRun)]
        + [_col(name) for name in ("action_type", "delay_seconds", "delay_in_working_time")]
    )
    return (
        f"SELECT {columns} FROM {table(ActionRun)} WHERE {_col('after')} = %s"  # noqa: S608 — names from the model, values as parameters
        f" AND {_col('status')} = %s AND {_col('due_at')} IS NULL"
    )


@cache
def _status_shared_sql() -> str:
    return (
        f"SELECT {_col('status')} FROM {table(ActionRun)}"  # noqa: S608 — names from the model, values as parameters
        f" WHERE {pk_column(ActionRun)} = %s FOR SHARE"
    )


def _status_shared(run: ActionRun) -> str | None:
    """The run's status as committed now, the row share-locked until the transaction ends: a
    run planned after it is either seen finished here, or its UPDATE to finished waits for
    this transaction, and the successors read after that UPDATE include the new run."""
    row = fetchone(_status_shared_sql(), [run.pk])
    return row[0] if row else None


def _run_finished(
    run: ActionRun, status: str, *, result: dict[str, Any] | None = None, last_error: str = ""
) -> None:
    """A claimed run finished (done, skipped), if the claim is still this worker's, and the
    runs chained after it released. Two statements, not one: the successors are read after
    the UPDATE has committed (it may have waited for a transaction planning one, run_plan's
    share lock), not in the snapshot the UPDATE began with."""
    (result_param,) = prepared(ActionRun, {"result": result or {}})
    params = [status, result_param, last_error, timezone.now()]
    claim = [run.pk, ActionRun.Status.RUNNING, run.claimed_at]
    if fetchone(_finished_sql(), params + claim) is not None:
        successors = fetchall(_successors_sql(), [run.pk, ActionRun.Status.SCHEDULED])
        _release_successors(successors)


def _release_successors(successors: list[tuple[Any, ...]]) -> None:
    """Chained runs ((pk, action_type, delay_seconds, delay_in_working_time) of each) become
    due once their predecessor has finished."""
    now = timezone.now()
    for pk, action_type, delay_seconds, working_time in successors:
        due_at = _delayed(base=now, delay_seconds=delay_seconds, working_time=working_time)
        with transaction.atomic():
            updated = ActionRun.objects.filter(pk=pk, due_at__isnull=True).update(
                due_at=due_at, dispatched_at=now if due_at <= now else None
            )
            if updated:
                outbox_wake(at=now + redispatch_after() if due_at <= now else due_at)
        if updated and due_at <= now:
            _send([pk], live=[pk] if action_type in LIVE_ACTIONS else [])


def run_retry(*, run_ids: list[int]) -> int:
    """A failed run tried again (the admin's Retry action)."""
    now = timezone.now()
    ids = list(
        ActionRun.objects.filter(pk__in=run_ids, status=ActionRun.Status.FAILED).values_list(
            "pk", flat=True
        )
    )
    with transaction.atomic():
        updated = ActionRun.objects.filter(pk__in=ids, status=ActionRun.Status.FAILED).update(
            status=ActionRun.Status.SCHEDULED,
            due_at=now,
            dispatched_at=now,
            attempts=0,
            done_at=None,
        )
        if updated:
            _sent_wake(now)
        transaction.on_commit(lambda: _send(ids))
    return updated


def runs_dispatch(*, limit: int = 500, lookahead: timedelta = timedelta(0)) -> int:
    """Sends every run due by now + `lookahead` that has no message in flight (those due later
    than now with that ETA); takes back runs of dead workers. One tenant: the current schema."""
    now = timezone.now()
    ActionRun.objects.filter(status=ActionRun.Status.RUNNING, claimed_at__lt=now - lease()).update(
        status=ActionRun.Status.SCHEDULED, due_at=now, dispatched_at=None
    )
    rows = list(
        ActionRun.objects.filter(status=ActionRun.Status.SCHEDULED, due_at__lte=now + lookahead)
        .filter(Q(dispatched_at__isnull=True) | Q(dispatched_at__lt=now - redispatch_after()))
        .order_by("due_at")
        .values_list("pk", "due_at", "action_type")[:limit]
    )
    return runs_send(rows, now=now)


def runs_send(rows: list[tuple[int, datetime | None, str]], *, now: datetime) -> int:
    """Sends these runs ((pk, due_at, action_type); those due later with that ETA), their
    message in flight from `now`; how many."""
    due = {pk: due_at for pk, due_at, _ in rows}
    if due:
        with transaction.atomic():
            ActionRun.objects.filter(pk__in=due).update(dispatched_at=now)
            _sent_wake(now)
        _send(list(due), etas=due, live={pk for pk, _, kind in rows if kind in LIVE_ACTIONS})
    return len(due)
