"""TENANT_LIMIT_SET_CALLS must never leave a connection on another tenant's schema."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django_tenants.utils import schema_context

from calls.models import Device
from calls.services import device_register
from tenants.connection import tenant_connection
from tenants.models import Tenant


def _current_search_path() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW search_path")
        return cursor.fetchone()[0]


def _register(name: str) -> None:
    device_register(name=name, phone_number="+48600111222", bitrix24_user_id=5, country="PL")


def test_set_calls_are_limited(alpha: Tenant) -> None:
    from django.conf import settings

    assert settings.TENANT_LIMIT_SET_CALLS is True
    Device.objects.count()
    assert tenant_connection.search_path_set_schemas == ["alpha", "public"]


def test_a_rolled_back_savepoint_does_not_strand_the_schema(alpha: Tenant, beta: Tenant) -> None:
    _register("alpha phone")

    def register_then_fail() -> None:
        with transaction.atomic():
            _register("beta phone")  # the SET to beta happens inside the savepoint...
            raise RuntimeError  # ...and is discarded with it

    with schema_context("beta"):
        with pytest.raises(RuntimeError):
            register_then_fail()
        assert "beta" in _current_search_path()
        assert not Device.objects.filter(name="alpha phone").exists()
    assert Device.objects.filter(name="alpha phone").exists()
    assert "alpha" in _current_search_path()


def test_switching_schemas_re_issues_the_search_path(alpha: Tenant, beta: Tenant) -> None:
    _register("alpha phone")
    with schema_context("beta"):
        assert not Device.objects.exists()
    assert Device.objects.count() == 1
