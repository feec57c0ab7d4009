"""Which bridge call the current code is handling, for the log lines (simtrix.logs).

The bridge names a call by its own `call_id` (a string the phone made up); SIMtrix's row id is
known only once the event found or created the call, and the lookup at `call.started` runs
before that. This is the bridge's id, set where an event enters (calls.intake), so every line
about the event, the lookup's Bitrix24 lines included, says which call it is. (The SIMtrix id,
where known, is crm.context's.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import wraps
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

_bridge_call_id: ContextVar[str | None] = ContextVar("simtrix_bridge_call_id", default=None)


def current_bridge_call_id() -> str | None:
    return _bridge_call_id.get()


@contextmanager
def bridge_call_context(call_id: str | None) -> Iterator[None]:
    token = _bridge_call_id.set(call_id or None)
    try:
        yield
    finally:
        _bridge_call_id.reset(token)


def bridge_call_logged(function: Callable[P, R]) -> Callable[P, R]:
    """Runs `function` with its keyword argument `call_id` (the bridge's) as the log context."""

    @wraps(function)
    def logged(*args: P.args, **kwargs: P.kwargs) -> R:
        call_id = kwargs.get("call_id")
        with bridge_call_context(call_id if isinstance(call_id, str) else None):
            return function(*args, **kwargs)

    return logged
