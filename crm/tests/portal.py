"""Pytest fixtures for the Bitrix24 sandbox portal (loaded by the root conftest).

``sandbox_portal`` (session)
    A started ``bitrix24_sandbox.SandboxPortal`` on 127.0.0.1 over real HTTPS, with the seed data
    and Bitrix24's standard rate limit (2 requests/s, bucket 50). ``REQUESTS_CA_BUNDLE`` points at
    its CA for the whole test run, and ``SIMTRIX_ALLOW_PRIVATE_ADDRESSES`` is on (set before any
    fixture runs, so Celery workers and other processes started by tests get both too).

``alpha_portal`` (function)
    The sandbox reset to its seed (no faults, standard rate limit), tenant ``alpha`` connected to
    it through the admin webhook (user 1) with default settings, alpha's directory synced
    (users, pipelines, stages, lead statuses, sources, CRM fields), alpha's cached lookups and
    the portal's limiter cleared, no event handlers bound (apps' or outbound webhooks'), and both
    request logs emptied (the sandbox's and alpha's
    ``RequestLog``, with alpha's ``Intent`` rows), so a test counts only its own requests
    (``portal.state.query_requests()``; ``in_batch=False`` for HTTP requests). Returns the
    portal. Works with ``db`` (its writes are rolled back with the test) and with
    ``committed_db`` (they are committed).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

CA_BUNDLE = os.path.join(tempfile.gettempdir(), f"simtrix-b24-sandbox-ca-{os.getpid()}.pem")


def pytest_configure(config: pytest.Config) -> None:
    from django.conf import settings

    # Processes started later (a Celery worker, a load test) inherit this; the file is written
    # when the sandbox starts. crm.outbound passes it to `requests` as the CA bundle.
    os.environ["REQUESTS_CA_BUNDLE"] = CA_BUNDLE
    # The sandbox listens on 127.0.0.1, a private address (crm/outbound.py): allowed for this
    # process and the ones it starts. Tests of the refusals switch it off (`settings` fixture).
    os.environ["SIMTRIX_ALLOW_PRIVATE_ADDRESSES"] = "1"
    settings.SIMTRIX_ALLOW_PRIVATE_ADDRESSES = True


@pytest.fixture(scope="session")
def sandbox_portal() -> Iterator[Any]:
    from bitrix24_sandbox import SandboxPortal

    portal = SandboxPortal(host="127.0.0.1", port=0, seed=True).start()
    shutil.copyfile(portal.ca_cert_path, CA_BUNDLE)
    try:
        yield portal
    finally:
        portal.stop()


def portal_connect(portal: Any, *, schema: str = "alpha", sync_directory: bool = True) -> None:
    """Points ``schema``'s Bitrix24 connection at the sandbox, with default settings."""
    from django_tenants.utils import schema_context

    from crm.cache import cache_clear
    from crm.limiter import PortalLimiter
    from crm.models import Bitrix24Connection, Intent, RequestLog
    from crm.services import connection_set_webhook, directory_sync

    with schema_context(schema):
        connection_set_webhook(webhook_url=portal.webhook_url(1))
        Bitrix24Connection.objects.filter(singleton=1).update(
            rate_plan=Bitrix24Connection.RatePlan.STANDARD,
            rate_limit_per_second=None,
            rate_limit_burst=None,
            lookup_budget_ms=1500,
            lookup_cache_ttl_s=300,
            last_error_code="",
            last_error="",
            last_error_at=None,
        )
        cache_clear()
        PortalLimiter(portal.domain, 2.0, 50).reset()
        if sync_directory:
            directory_sync()
        # A test sees only its own requests and intents.
        RequestLog.objects.all().delete()
        Intent.objects.all().delete()


@pytest.fixture
def alpha_portal(sandbox_portal: Any, tenants: Any, django_db_blocker: Any) -> Iterator[Any]:
    from django.db import connection

    sandbox_portal.reset()
    sandbox_portal.set_rate_limit(2.0, 50)
    with django_db_blocker.unblock():
        # Inside the `db` fixture's transaction everything is rolled back after the test;
        # otherwise (committed_db) the teardown removes what this fixture wrote.
        committed = not connection.in_atomic_block
        before = _connection_snapshot() if committed else None
        portal_connect(sandbox_portal)
    with sandbox_portal.state.lock:
        sandbox_portal.state.requests.clear()
        # reset() keeps these as credentials: an earlier test's event handlers (an OAuth app's
        # bindings, an outbound webhook) must not receive this test's events.
        sandbox_portal.state.event_handlers.clear()
        sandbox_portal.state.outbound_webhooks.clear()
    yield sandbox_portal
    if committed:
        with django_db_blocker.unblock():
            _restore(before)


def _connection_snapshot() -> dict[str, Any] | None:
    from django_tenants.utils import schema_context

    from crm.models import Bitrix24Connection

    with schema_context("alpha"):
        row = Bitrix24Connection.objects.filter(singleton=1).first()
        if row is None:
            return None
        fields = row._meta.concrete_fields
        return {
            f.attname: getattr(row, f.attname) for f in fields if f.name not in ("id", "singleton")
        }


def _restore(snapshot: dict[str, Any] | None) -> None:
    from django_tenants.utils import schema_context

    from crm import models
    from crm.cache import cache_clear

    with schema_context("alpha"):
        for model in (
            models.RequestLog,
            models.Intent,
            models.Stage,
            models.Pipeline,
            models.LeadStatus,
            models.LeadSource,
            models.Bitrix24User,
            models.Department,
            models.EntityField,
        ):
            model.objects.all().delete()
        if snapshot is None:
            models.Bitrix24Connection.objects.all().delete()
        else:
            models.Bitrix24Connection.objects.filter(singleton=1).update(**snapshot)
        cache_clear()
