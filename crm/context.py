"""Which SIMtrix call the current Bitrix24 requests serve, without passing it everywhere."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_current_call_id: ContextVar[int | None] = ContextVar("crm_current_call_id", default=None)


@contextmanager
def crm_call_context(call_id: int | None) -> Iterator[None]:
    """Tags every Bitrix24 request made inside the block with ``call_id`` in the request log."""
    token = _current_call_id.set(call_id)
    try:
        yield
    finally:
        _current_call_id.reset(token)


def current_call_id() -> int | None:
    return _current_call_id.get()


_live: ContextVar[bool] = ContextVar("crm_live", default=False)


@contextmanager
def crm_live() -> Iterator[None]:
    """The requests made inside the block serve a phone that is ringing (the card that pops):
    they take the portal's priority lane (``crm.limiter``), ahead of the backlog, and are never
    held back to share a batch (``crm.coalesce``)."""
    token = _live.set(True)
    try:
        yield
    finally:
        _live.reset(token)


def crm_live_active() -> bool:
    return _live.get()
