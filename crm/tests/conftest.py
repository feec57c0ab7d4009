from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django_tenants.utils import schema_context

from crm.cache import cache_clear


def top_level(portal: Any, method: str | None = None) -> list[dict[str, Any]]:
    """HTTP requests the sandbox received (not batch sub-calls, not token refreshes)."""
    rows = portal.state.query_requests(method=method, in_batch=False)
    return [r for r in rows if r.get("method") != "oauth.token"]


@pytest.fixture
def portal(alpha: Any, alpha_portal: Any) -> Iterator[Any]:
    """The sandbox with tenant alpha connected, inside alpha's schema (rolled back after)."""
    yield alpha_portal
    with schema_context("alpha"):
        cache_clear()
