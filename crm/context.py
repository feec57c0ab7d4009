"""Which SIMtrix call the Bitrix24 requests made right now serve (for the request log)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

current_call_id: ContextVar[int | None] = ContextVar("crm_current_call_id", default=None)


@contextmanager
def crm_call_context(call_id: int | None) -> Iterator[None]:
    token = current_call_id.set(call_id)
    try:
        yield
    finally:
        current_call_id.reset(token)
