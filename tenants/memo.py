"""Small per-tenant rows read on every call (settings, the routing directory), memoised in the
process for a few seconds.

The process that changes one forgets it at once (`tenant_memo_forget`); other processes see the
change within MEMO_SECONDS. Keyed by the current tenant schema, so tenants never share a value.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from tenants.connection import tenant_connection

MEMO_SECONDS = 10.0

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
