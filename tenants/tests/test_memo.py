from __future__ import annotations

import pytest
from django_tenants.utils import schema_context

from tenants import memo
from tenants.memo import tenant_memo, tenant_memo_forget
from tenants.models import Tenant


def test_a_memo_is_per_tenant_and_forgotten_on_request(tenants: dict[str, Tenant]) -> None:
    loads: list[str] = []

    def load(value: str) -> str:
        loads.append(value)
        return value

    with schema_context("alpha"):
        assert tenant_memo("demo", lambda: load("alpha-1")) == "alpha-1"
        assert tenant_memo("demo", lambda: load("alpha-2")) == "alpha-1"  # memoised
    with schema_context("beta"):
        assert tenant_memo("demo", lambda: load("beta-1")) == "beta-1"  # never alpha's
    with schema_context("alpha"):
        tenant_memo_forget("demo")
        assert tenant_memo("demo", lambda: load("alpha-3")) == "alpha-3"
        assert tenant_memo("demo", lambda: load("alpha-4"), fresh=True) == "alpha-4"
    with schema_context("beta"):
        assert tenant_memo("demo", lambda: load("beta-2")) == "beta-1"  # alpha's forget only
    assert loads == ["alpha-1", "beta-1", "alpha-3", "alpha-4"]


def test_a_memo_expires(tenants: dict[str, Tenant], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memo, "MEMO_SECONDS", 0.0)
    with schema_context("alpha"):
        assert tenant_memo("expiring", lambda: 1) == 1
        assert tenant_memo("expiring", lambda: 2) == 2


def test_a_memo_may_keep_its_own_time(tenants: dict[str, Tenant]) -> None:
    with schema_context("alpha"):
        assert tenant_memo("long", lambda: 1, seconds=60) == 1
        assert tenant_memo("long", lambda: 2, seconds=60) == 1
        assert tenant_memo("short", lambda: 1, seconds=0) == 1
        assert tenant_memo("short", lambda: 2, seconds=0) == 2
