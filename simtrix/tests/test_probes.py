"""The probes answer on any Host, before the host check and the tenant lookup; every other
answer, static files and unknown hosts included, carries the security headers."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.core.cache import caches
from django.test import Client

from scenarios import schedule
from tenants.models import Domain, Tenant

TOKEN = "scrape-me-" + "y" * 24


@pytest.fixture
def narrow_hosts(settings: Any) -> None:
    """ALLOWED_HOSTS as a production install sets it: the probes' Host is not in it."""
    settings.ALLOWED_HOSTS = [".customers.example"]
    settings.SIMTRIX_METRICS_TOKEN = TOKEN


@pytest.fixture
def recent_heartbeat() -> Any:
    caches["shared"].set(schedule._HEARTBEAT, time.time(), timeout=None)
    yield
    caches["shared"].delete(schedule._HEARTBEAT)


def test_probes_answer_on_a_host_no_tenant_owns_and_not_allowed(
    tenants: dict[str, Tenant], db: None, narrow_hosts: None, recent_heartbeat: None
) -> None:
    client = Client(HTTP_HOST="evil.example")
    healthz = client.get("/healthz")
    assert (healthz.status_code, healthz.json()) == (200, {"status": "ok"})
    readyz = client.get("/readyz")
    assert (readyz.status_code, readyz.json()["status"]) == (200, "ready")
    scraped = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert scraped.status_code == 200
    assert b"simtrix_outbox_due{" in scraped.content
    assert client.get("/metrics").status_code == 401
    # Only those paths: anything else on that host is still refused (django-tenants answers a
    # DisallowedHost with an empty 404).
    assert (client.get("/admin/").status_code, client.get("/admin/").content) == (404, b"")
    assert client.get("/healthz/").status_code == 404


def test_without_a_token_metrics_is_a_plain_404_on_any_host(
    tenants: dict[str, Tenant], db: None, narrow_hosts: None, settings: Any
) -> None:
    settings.SIMTRIX_METRICS_TOKEN = ""
    response = Client(HTTP_HOST="evil.example").get("/metrics")
    assert (response.status_code, response.content) == (404, b"Not Found\n")


def test_probes_answer_on_a_fresh_install_without_any_domain(
    tenants: dict[str, Tenant], db: None, recent_heartbeat: None
) -> None:
    Domain.objects.all().delete()  # as after `migrate_schemas` (rolled back with the test)
    client = Client(HTTP_HOST="localhost")
    assert client.get("/admin/").status_code == 404  # no tenant, not even the public one
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").json()["status"] == "ready"


def test_probes_run_in_the_public_schema_whatever_the_last_request_left(
    tenants: dict[str, Tenant], db: None, recent_heartbeat: None
) -> None:
    client = Client(HTTP_HOST="alpha.localhost")
    assert client.get("/admin/login/").status_code == 200
    assert client.get("/readyz").json()["checks"]["outbox"]["late"] == 0


def test_probes_are_not_redirected_to_https_on_an_unknown_host(
    tenants: dict[str, Tenant], db: None, narrow_hosts: None, settings: Any
) -> None:
    settings.SECURE_SSL_REDIRECT = True
    client = Client(HTTP_HOST="evil.example")
    assert client.get("/healthz").status_code == 200
    assert client.get("/admin/").status_code == 400  # the redirect needs the (refused) Host


@pytest.mark.parametrize(
    ("host", "path"),
    [
        ("alpha.localhost", "/static/admin/css/base.css"),
        ("localhost", "/static/admin/css/base.css"),
        ("unknown.localhost", "/admin/"),
        ("unknown.localhost", "/healthz"),
    ],
)
def test_static_files_unknown_hosts_and_probes_carry_the_security_headers(
    host: str, path: str, tenants: dict[str, Tenant], db: None
) -> None:
    response = Client(HTTP_HOST=host).get(path)
    assert response.status_code in (200, 404)
    if path.startswith("/static/"):
        assert response.status_code == 200
    assert "frame-ancestors 'none'" in response["Content-Security-Policy"]
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
