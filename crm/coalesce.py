"""Many calls' Bitrix24 requests carried by one ``batch`` when the portal's bucket is the limit.

A portal drains 2 requests a second; a call spends 3 to 6. When a tenant has more due work than
its bucket lets through (``crm.limiter``: ``crowded``), the outbox runs that work together
(``scenarios.lane``): many runs at once, each in its own thread, inside one ``Coalescer``. Every
request those threads make goes through it instead of out on its own: a request waits, with the
others, for the next slot, and one ``batch`` (at most 50 commands) carries them all. A request
that is itself a ``batch`` (the lookup, a register with its card) keeps its commands together,
their ``$result[...]`` references renamed with them. Handlers do not change: they call ``crm``
as always and get their own answer back, or their own command's error.

- A batch goes out as soon as every thread that is running a run is waiting for an answer (no
  further request can join), when it holds 50 commands, or one drain interval of the portal
  after its first request (sooner, it would only wait for its slot: half a second at 2/s);
  one batch at a time, sent by one of the waiting threads, the slot taken first so that what
  arrives meanwhile rides along.
- The answer of each command is its request's own: a command's error fails only that request
  (and so only its run); an answer lost (a timeout, a dropped connection) is every request's
  ambiguous outcome, resolved as any other (``crm.intents``: searched for before it is sent
  again). Each request retries as it would alone (``Bitrix24Session``'s rules, its own
  attempts).
- Not coalesced, sent alone: a request with a deadline (a ringing phone waits for it), one made
  while a phone rings (``crm.context.crm_live``), a ``halt`` batch, and parameters a query string
  cannot carry as JSON does (a boolean, an empty list, a large file).
- The same read asked by several runs for the same batch (two calls from one number looked up
  at once) is sent once and answers them all; a write is always sent for itself.
- The request log keeps one row for the shared ``batch`` and one per command, each tagged with
  the call its run serves.
"""

from __future__ import annotations

import copy
import itertools
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from b24pysdk.utils.encoding import encode_params
from redis.exceptions import RedisError

from crm.context import crm_live_active, current_call_id
from crm.errors import Bitrix24Error, Bitrix24TransientError
from crm.limiter import MAX_RATE_WAIT, PortalLimiter, limiter_learns
from crm.mapping import php_dict
from crm.models import Bitrix24Connection

if TYPE_CHECKING:
    from crm.session import Bitrix24Session

logger = logging.getLogger(__name__)

MAX_COMMANDS = 50
# The least the first request of a batch waits for others while some thread is still busy.
WINDOW = 0.05
# Larger parameters (a recording's content) travel alone, as JSON.
MAX_QUERY_CHARS = 32_000

_REFERENCE = re.compile(r"\$result\[([^\]]+)\]")
_active: ContextVar[Coalescer | None] = ContextVar("crm_coalescer", default=None)


@dataclass
class Owner:
    """Whose a command of the shared batch is, for the request log."""

    call_id: int | None
    intent_key: str


@dataclass(eq=False)
class _Pending:
    method: str
    params: dict[str, Any]
    commands: dict[str, tuple[str, dict[str, Any]]] | None
    idempotent: bool
    owner: Owner
    enqueued_at: float = field(default_factory=time.monotonic)
    done: bool = False
    payload: dict[str, Any] = field(default_factory=dict)
    error: Bitrix24Error | None = None

    @property
    def size(self) -> int:
        return 1 if self.commands is None else len(self.commands)

    def signature(self) -> str | None:
        """What the request asks, when asking it twice is harmless (a read): two runs looking
        up the same number at once share one answer. None: it must be sent itself."""
        if not self.idempotent:
            return None
        if self.commands is None:
            return f"{self.method}?{encode_params(self.params)}"
        return "&".join(
            f"{key}:{method}?{encode_params(params)}"
            for key, (method, params) in self.commands.items()
        )

    def finish(
        self, *, payload: dict[str, Any] | None = None, error: Bitrix24Error | None = None
    ) -> None:
        self.payload = payload or {}
        self.error = error
        self.done = True


class Coalescer:
    """The requests of the threads running one tenant's backlog, sent together (see above)."""

    def __init__(self, domain: str, *, window: float | None = None) -> None:
        self.domain = domain
        # None: one drain interval of the portal (a request sent sooner would only wait for
        # its slot), learned from the first session that asks; never less than WINDOW.
        self.window = window if window is not None else WINDOW
        self._window_set = window is not None
        self._cond = threading.Condition()
        self._queue: deque[_Pending] = deque()
        self._members = 0
        self._waiting = 0
        self._sending = False
        self._keys = itertools.count()
        # What it did: batches sent, commands carried, requests answered by a twin's command.
        self.batches = 0
        self.commands = 0
        self.twins = 0

    @property
    def members(self) -> int:
        """How many threads run work through it now (a run whose end may make others due)."""
        return self._members

    @contextmanager
    def member(self) -> Iterator[None]:
        """The current thread runs work whose requests go through this coalescer: requests are
        held back for it while it is busy, and sent once it waits too (or has finished)."""
        with self._cond:
            self._members += 1
        token = _active.set(self)
        try:
            yield
        finally:
            _active.reset(token)
            with self._cond:
                self._members -= 1
                self._cond.notify_all()

    def takes(
        self,
        session: Bitrix24Session,
        method: str,
        params: dict[str, Any],
        commands: dict[str, tuple[str, dict[str, Any]]] | None,
        *,
        deadline: float | None,
    ) -> bool:
        if session.domain != self.domain or deadline is not None or crm_live_active():
            return False
        if commands is None:
            return method.lower() != "batch" and _query_safe(params)
        if params.get("halt") or len(commands) > MAX_COMMANDS:
            return False
        return all(_query_safe(p) for _, p in commands.values())

    def execute(
        self,
        session: Bitrix24Session,
        method: str,
        params: dict[str, Any],
        commands: dict[str, tuple[str, dict[str, Any]]] | None,
        *,
        idempotent: bool,
        intent_key: str,
        max_attempts: int,
    ) -> dict[str, Any]:
        """The request's answer as ``Bitrix24Session._execute`` returns it, sent in a shared
        batch; retried as that method would (its own attempts, its own idempotency)."""
        attempt = 0
        while True:
            attempt += 1
            pending = _Pending(
                method, params, commands, idempotent, Owner(current_call_id(), intent_key)
            )
            self._submit(session, pending)
            error = pending.error
            if error is None:
                return pending.payload
            retry = session.retry_allowed(error, attempt, max_attempts, idempotent=idempotent)
            # As alone: a method blocked for longer than a request may wait fails its run now
            # (the outbox retries it later) instead of holding the thread.
            if not retry or (error.retry_after or 0) > MAX_RATE_WAIT:
                raise error
            time.sleep(session._retry_delay(attempt, error))

    # ------------------------------------------------------------------------------------------

    def _submit(self, session: Bitrix24Session, pending: _Pending) -> None:
        with self._cond:
            if not self._window_set:
                self.window = max(WINDOW, session.limiter.interval)
                self._window_set = True
            self._queue.append(pending)
            self._waiting += 1
            self._cond.notify_all()
            try:
                while True:
                    while not pending.done and not self._turn():
                        self._cond.wait(self._nap())
                    if pending.done:
                        return
                    self._sending = True
                    self._cond.release()
                    try:
                        self._round(session)
                    finally:
                        self._cond.acquire()
                        self._sending = False
                        self._cond.notify_all()
            finally:
                self._waiting -= 1

    def _turn(self) -> bool:
        """Whether the waiting thread that asks sends the next batch now (lock held)."""
        if self._sending or not self._queue:
            return False
        return (
            sum(p.size for p in self._queue) >= MAX_COMMANDS
            or self._waiting >= self._members
            or time.monotonic() - self._queue[0].enqueued_at >= self.window
        )

    def _nap(self) -> float:
        if not self._queue:
            return self.window
        return max(0.001, self.window - (time.monotonic() - self._queue[0].enqueued_at))

    def _round(self, session: Bitrix24Session) -> None:
        """One batch: the slot first, then what is queued by then (lock not held). Whatever
        goes wrong, no request taken is left waiting for an answer that will never come."""
        try:
            session._wait_for_slot("batch", None, None)
        except Bitrix24Error as exc:
            taken, twins = self._take()
            for pending in taken:
                self._failed(pending, twins, exc)
            return
        taken, twins = self._take()
        try:
            self._send(session, taken, twins)
        except Exception as exc:
            logger.exception("a shared batch to %s failed", self.domain)
            error = Bitrix24TransientError(
                f"The shared batch failed: {type(exc).__name__}",
                code="BATCH_FAILED",
                ambiguous=True,
            )
            for pending in taken:
                if not pending.done:
                    self._failed(pending, twins, error)

    def _send(
        self, session: Bitrix24Session, taken: list[_Pending], twins: dict[int, list[_Pending]]
    ) -> None:
        taken = [p for p in taken if not self._blocked(session, p, twins)]
        if not taken:
            return
        merged, owners, names = self._merged(taken)
        self.batches += 1
        self.commands += len(merged)
        try:
            payload = session._execute(
                "batch",
                {"halt": 0},
                commands=merged,
                idempotent=all(p.idempotent for p in taken),
                deadline=None,
                intent_key=",".join(o.intent_key for o in owners.values() if o.intent_key),
                max_attempts=1,
                slot_taken=True,
                owners=owners,
            )
        except Bitrix24Error as exc:
            for pending in taken:
                self._failed(pending, twins, exc)
            return
        body = payload.get("result") or {}
        parts = {
            part: php_dict(body.get(part))
            for part in ("result", "result_error", "result_total", "result_next", "result_time")
        }
        for pending, rename in zip(taken, names, strict=True):
            _answer(session, pending, rename, parts)
            for twin in twins.get(id(pending), []):
                twin.finish(payload=copy.deepcopy(pending.payload), error=pending.error)

    def _merged(
        self, taken: list[_Pending]
    ) -> tuple[dict[str, tuple[str, dict[str, Any]]], dict[str, Owner], list[dict[str, str]]]:
        """The batch's commands (each request's renamed apart), whose each is, and each
        request's renaming (its own key -> the batch's)."""
        merged: dict[str, tuple[str, dict[str, Any]]] = {}
        owners: dict[str, Owner] = {}
        names: list[dict[str, str]] = []
        for pending in taken:
            prefix = f"q{next(self._keys)}"
            if pending.commands is None:
                rename = {"": prefix}
                merged[prefix] = (pending.method, pending.params)
            else:
                rename = {key: f"{prefix}_{key}" for key in pending.commands}
                for key, (sub_method, sub_params) in pending.commands.items():
                    merged[rename[key]] = (sub_method, _renamed(sub_params, rename))
            owners.update(dict.fromkeys(rename.values(), pending.owner))
            names.append(rename)
        return merged, owners, names

    @staticmethod
    def _failed(pending: _Pending, twins: dict[int, list[_Pending]], error: Bitrix24Error) -> bool:
        for one in [pending, *twins.get(id(pending), [])]:
            one.finish(error=error)
        return False

    def _blocked(
        self, session: Bitrix24Session, pending: _Pending, twins: dict[int, list[_Pending]]
    ) -> bool:
        """A request whose method Bitrix24 blocks for now (OPERATION_TIME_LIMIT), or that Redis
        cannot clear, is left out of the batch with that error: it waits (or fails its run) as
        it would alone."""
        methods = (
            {pending.method}
            if pending.commands is None
            else {m for m, _ in pending.commands.values()}
        )
        error = session.methods_blocked(methods)
        return error is not None and not self._failed(pending, twins, error)

    def _take(self) -> tuple[list[_Pending], dict[int, list[_Pending]]]:
        """What the next batch carries, up to MAX_COMMANDS commands, oldest first; and the
        twins of each (the same read asked by another run meanwhile: answered with it)."""
        with self._cond:
            taken: list[_Pending] = []
            first: dict[str, _Pending] = {}
            twins: dict[int, list[_Pending]] = {}
            size = 0
            while self._queue:
                pending = self._queue[0]
                signature = pending.signature()
                if signature is not None and signature in first:
                    twins.setdefault(id(first[signature]), []).append(self._queue.popleft())
                    continue
                if size + pending.size > MAX_COMMANDS:
                    break
                taken.append(self._queue.popleft())
                size += pending.size
                if signature is not None:
                    first[signature] = pending
            self.twins += sum(len(t) for t in twins.values())
            return taken, twins


def _answer(
    session: Bitrix24Session,
    pending: _Pending,
    rename: dict[str, str],
    parts: dict[str, dict[str, Any]],
) -> None:
    """A request's own answer out of the shared batch's."""
    results, errors = parts["result"], parts["result_error"]
    if pending.commands is None:
        key = rename[""]
        if key in errors:
            pending.finish(error=session.command_error(php_dict(errors[key]), pending.method))
        elif key in results:
            result = {
                "result": results[key],
                "total": parts["result_total"].get(key),
                "next": parts["result_next"].get(key),
            }
            pending.finish(payload=result)
        else:
            pending.finish(
                error=Bitrix24TransientError(
                    f"{pending.method} was not executed in the shared batch",
                    code="NOT_EXECUTED",
                    method=pending.method,
                )
            )
        return
    own = {
        part: {key: values[name] for key, name in rename.items() if name in values}
        for part, values in parts.items()
    }
    pending.finish(payload={"result": own})


def _renamed(value: Any, rename: dict[str, str]) -> Any:
    """``$result[key]`` references of one request's commands, renamed as its commands were."""
    if isinstance(value, str):
        return _REFERENCE.sub(lambda m: f"$result[{rename.get(m[1], m[1])}]", value)
    if isinstance(value, dict):
        return {k: _renamed(v, rename) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_renamed(v, rename) for v in value]
    return value


def _query_safe(params: dict[str, Any]) -> bool:
    """Whether a batch's query string carries these parameters as a JSON body would: not a
    boolean ("True"), not an empty list or object (dropped), nothing large."""

    def safe(value: Any) -> bool:
        if isinstance(value, bool):
            return False
        if isinstance(value, dict):
            return bool(value) and all(safe(v) for v in value.values())
        if isinstance(value, list | tuple):
            return bool(value) and all(safe(v) for v in value)
        return True

    if not all(safe(v) for v in params.values()):
        return False
    return len(encode_params(params)) <= MAX_QUERY_CHARS


def active_coalescer() -> Coalescer | None:
    return _active.get()


def _connected() -> Bitrix24Connection | None:
    """The current tenant's connection, if it names a portal."""
    connection = Bitrix24Connection.objects.filter(singleton=1).first()
    return connection if connection is not None and connection.portal_domain else None


def crm_portal_free_slots() -> int | None:
    """How many requests of the backlog the current tenant's portal lets through at once now
    (``PortalLimiter.free_slots``). None without a connection or without Redis: the work then
    goes out as always."""
    connection = _connected()
    if connection is None:
        return None
    try:
        return PortalLimiter(connection.portal_domain, *connection.rate_limit).free_slots(
            learns=limiter_learns()
        )
    except RedisError:
        return None


def crm_coalescer() -> Coalescer | None:
    """A coalescer for the current tenant's portal, or None without a connection."""
    connection = _connected()
    return None if connection is None else Coalescer(connection.portal_domain)
