"""Small per-tenant rows read on every call (settings, the routing directory), memoised in the
process for a few seconds.

The process that changes one forgets it at once (`tenant_memo_forget`); other processes see the
change within MEMO_SECONDS. Keyed by the current tenant schema, so tenants never share a value.

Rows read by every run that are not memoised so (a tenant's scenarios, its office hours: an
admin's change takes effect with the next call) are memoised only inside `tenant_memo_scope`,
which a tenant's backlog lane opens around its runs (`tenant_scoped`): a change reaches the
lane SCOPE_SECONDS later at most.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar, cast

from tenants.connection import tenant_connection

MEMO_SECONDS = 10.0
SCOPE_SECONDS = 5.0

T = TypeVar("T")
_memo: dict[tuple[str, str], tuple[float, Any]] = {}


def tenant_memo(
    name: str, load: Callable[[], T], *, fresh: bool = False, seconds: float | None = None
) -> T:
    """`load()`'s value for the current tenant, at most `seconds` (default MEMO_SECONDS) old
    (`fresh`: load now)."""
    key = (tenant_connection.schema_name, name)
    cached = _memo.get(key)
    if not fresh and cached is not None and cached[0] > time.monotonic():
        return cached[1]
    value = load()
    _memo[key] = (time.monotonic() + (MEMO_SECONDS if seconds is None else seconds), value)
    return value


def tenant_memo_forget(*names: str) -> None:
    """The current tenant's values of `names` are read again when next wanted."""
    for name in names:
        _memo.pop((tenant_connection.schema_name, name), None)


def tenant_memo_clear() -> None:
    """Every tenant's values (tests: a rolled-back test must not leave values behind)."""
    _memo.clear()


_scope: ContextVar[dict[tuple[str, str], tuple[float, Any]] | None] = ContextVar(
    "tenant_memo_scope", default=None
)


@contextmanager
def tenant_memo_scope(
    shared: dict[tuple[str, str], tuple[float, Any]] | None = None,
) -> Iterator[None]:
    """Within, in this thread, `tenant_scoped` values are kept SCOPE_SECONDS (`shared`: a dict
    several threads keep them in together)."""
    token = _scope.set(shared if shared is not None else {})
    try:
        yield
    finally:
        _scope.reset(token)


def tenant_scoped(name: str, load: Callable[[], T]) -> T:
    """`load()`'s value for the current tenant: read now, or within `tenant_memo_scope` at most
    SCOPE_SECONDS old."""
    scope = _scope.get()
    if scope is None:
        return load()
    key = (tenant_connection.schema_name, name)
    cached = scope.get(key)
    if cached is not None and cached[0] > time.monotonic():
        return cast(T, cached[1])
    value = load()
    scope[key] = (time.monotonic() + SCOPE_SECONDS, value)
    return value
