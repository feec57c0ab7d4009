"""tenants.wake: a wake row is the current tenant's, written with the caller's transaction."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone
from django_tenants.utils import schema_context

from tenants.models import OutboxWake, Tenant
from tenants.wake import tenant_wake


def test_a_wake_is_written_for_the_current_tenant_with_its_callers_transaction(
    alpha: Tenant, beta: Tenant
) -> None:
    at = timezone.now() + timedelta(minutes=3)
    OutboxWake.objects.all().delete()
    with schema_context("beta"):
        tenant_wake(at=at)
    with schema_context("alpha"), transaction.atomic():
        tenant_wake(at=at + timedelta(seconds=1))
        transaction.set_rollback(True)  # the run it was written for was not planned after all
    assert list(OutboxWake.objects.values_list("tenant__schema_name", "at")) == [("beta", at)]


def test_a_wake_for_a_schema_no_tenant_has_is_an_error(alpha: Tenant) -> None:
    OutboxWake.objects.all().delete()
    with schema_context("nobody"), pytest.raises(Tenant.DoesNotExist, match="nobody"):
        tenant_wake(at=timezone.now())
    assert not OutboxWake.objects.exists()
