"""A domain write as data (``Op``), so it can run alone or share one ``batch`` with others.

Every write service in ``crm.services`` is built from an ``Op``: the request, how to read its
result into domain terms, and, for non-idempotent requests, the intent key and how to find the
object again after an ambiguous failure (``crm.intents``). Running an op alone costs one
request; ``crm_batch()`` sends up to 50 of them in one HTTP request::

    with crm_batch() as batch:
        finished = batch.add(crm_call_finish, intent_key=..., b24_call_id=..., ...)
        batch.add(crm_notify, user_id=5, message="Missed call from +48 600 111 222")
    finished.result()  # FinishedCall, or the error of that one command raised
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Generic, ParamSpec, TypeVar

from django.utils import timezone

from crm.client import Bitrix24Client, Req
from crm.errors import Bitrix24Error, Bitrix24PermanentError
from crm.intents import Done, intent_claim, intent_finish, intent_mark_found, intent_run

T = TypeVar("T")
P = ParamSpec("P")


def _identity(value: Any) -> Any:
    return value


@dataclass
class Op(Generic[T]):
    req: Req[Any]
    to_result: Callable[[Any], T] = _identity
    intent_key: str = ""
    find_existing: Callable[[Bitrix24Client], Any | None] | None = None
    resend_window: timedelta | None = None
    after: Callable[[Any], None] | None = None


def op_run(op: Op[T], client: Bitrix24Client | None = None) -> T:
    client = client or Bitrix24Client()
    if op.intent_key:
        finder = op.find_existing
        raw = intent_run(
            key=op.intent_key,
            method=op.req.method,
            send=lambda: client.run(op.req, intent_key=op.intent_key),
            find_existing=(lambda: finder(client)) if finder else None,
            resend_window=op.resend_window,
        )
    else:
        raw = client.run(op.req)
    if op.after:
        op.after(raw)
    return op.to_result(raw)


def batchable(
    build: Callable[..., Op[Any]],
) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """Marks a service as buildable into an ``Op``, so ``CrmBatch.add`` can take it."""

    def mark(func: Callable[P, T]) -> Callable[P, T]:
        func.build_op = build  # type: ignore[attr-defined]
        return func

    return mark


class Deferred(Generic[T]):
    """The result of one command of a batch, available once the batch has run."""

    _unset = object()

    def __init__(self) -> None:
        self._value: Any = self._unset
        self._error: Bitrix24Error | None = None

    def result(self) -> T:
        if self._error is not None:
            raise self._error
        if self._value is self._unset:
            raise RuntimeError("The batch has not run yet")
        return self._value

    @property
    def error(self) -> Bitrix24Error | None:
        return self._error

    def _resolve(self, value: Any) -> None:
        self._value = value

    def _fail(self, error: Bitrix24Error) -> None:
        self._error = error


class CrmBatch:
    """Independent writes sent together; see the module docstring."""

    def __init__(self, client: Bitrix24Client | None = None) -> None:
        self._client = client
        self._items: list[tuple[Op[Any], Deferred[Any]]] = []

    def add(self, service: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Deferred[T]:
        build = getattr(service, "build_op", None)
        if build is None:
            raise TypeError(f"{service.__name__} cannot be batched")
        deferred: Deferred[T] = Deferred()
        self._items.append((build(*args, **kwargs), deferred))
        return deferred

    def add_op(self, op: Op[T]) -> Deferred[T]:
        deferred: Deferred[T] = Deferred()
        self._items.append((op, deferred))
        return deferred

    def __len__(self) -> int:
        return len(self._items)

    def run(self) -> None:
        if not self._items:
            return
        client = self._client or Bitrix24Client()
        for start in range(0, len(self._items), 50):
            self._run_chunk(client, self._items[start : start + 50])

    def _run_chunk(
        self, client: Bitrix24Client, items: list[tuple[Op[Any], Deferred[Any]]]
    ) -> None:
        to_send: dict[str, tuple[Op[Any], Deferred[Any], Any]] = {}
        for index, (op, deferred) in enumerate(items):
            prepared = self._prepare(client, op, deferred)
            if prepared is not False:
                to_send[f"c{index}"] = (op, deferred, prepared)
        if not to_send:
            return
        keys = ",".join(op.intent_key for op, _, _ in to_send.values() if op.intent_key)
        try:
            results = client.run_batch(
                {key: op.req for key, (op, _, _) in to_send.items()}, intent_key=keys[:200]
            )
        except Bitrix24Error as exc:
            for _op, deferred, intent in to_send.values():
                if intent is not None:
                    intent_finish(intent, error=exc)
                deferred._fail(exc)
            raise
        for key, (op, deferred, intent) in to_send.items():
            value = results[key]
            if isinstance(value, Bitrix24Error):
                if intent is not None:
                    intent_finish(intent, error=value)
                deferred._fail(value)
                continue
            if intent is not None:
                intent_finish(intent, result=value)
            if op.after:
                op.after(value)
            deferred._resolve(op.to_result(value))

    def _prepare(self, client: Bitrix24Client, op: Op[Any], deferred: Deferred[Any]) -> Any:
        """The claimed intent (None without one) if the op must be sent, else False."""
        if not op.intent_key:
            return None
        try:
            claim = intent_claim(key=op.intent_key, method=op.req.method)
        except Bitrix24Error as exc:
            deferred._fail(exc)
            return False
        if isinstance(claim, Done):
            deferred._resolve(op.to_result(claim.result))
            return False
        intent, uncertain = claim
        if uncertain and self._recovered(client, op, deferred, intent):
            return False
        return intent

    @staticmethod
    def _recovered(
        client: Bitrix24Client, op: Op[Any], deferred: Deferred[Any], intent: Any
    ) -> bool:
        """After an ambiguous earlier attempt: the object already exists, or may not be resent."""
        if op.resend_window is not None and timezone.now() - intent.created_at > op.resend_window:
            error = Bitrix24PermanentError(
                f"{op.req.method} may have been executed long ago; it is not resent",
                code="INTENT_EXPIRED",
                method=op.req.method,
            )
            intent_finish(intent, error=error)
            deferred._fail(error)
            return True
        if op.find_existing is None:
            return False
        found = op.find_existing(client)
        if found is None:
            return False
        intent_mark_found(intent, found)
        deferred._resolve(op.to_result(found))
        return True


@contextmanager
def crm_batch(client: Bitrix24Client | None = None) -> Iterator[CrmBatch]:
    """Collects batchable services and sends them in one request when the block ends."""
    batch = CrmBatch(client)
    yield batch
    batch.run()
