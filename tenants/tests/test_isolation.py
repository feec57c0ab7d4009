from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django_tenants.utils import schema_context

from calls.models import Device
from calls.services import device_register
from tenants.models import Tenant


def _admin_login(client: Client, username: str, password: str) -> bool:
    """Logs in through the host's own login page, so the middleware picks the schema."""
    response = client.post(
        "/admin/login/", {"username": username, "password": password, "next": "/admin/"}
    )
    return response.status_code == 302


def _register(name: str) -> Device:
    device, _ = device_register(
        name=name, phone_number="+48600111222", bitrix24_user_id=5, country="PL"
    )
    return device


def test_rows_written_in_one_schema_are_invisible_in_the_other(alpha: Tenant, beta: Tenant) -> None:
    _register("Alpha phone")
    assert list(Device.objects.values_list("name", flat=True)) == ["Alpha phone"]
    with schema_context("beta"):
        assert not Device.objects.exists()
        _register("Beta phone")
        assert list(Device.objects.values_list("name", flat=True)) == ["Beta phone"]
    assert list(Device.objects.values_list("name", flat=True)) == ["Alpha phone"]


def test_tenant_host_resolves_its_schema(alpha: Tenant, beta: Tenant) -> None:
    response = Client(HTTP_HOST="beta.localhost").get("/admin/login/")
    assert response.status_code == 200
    assert response.wsgi_request.tenant.schema_name == "beta"  # type: ignore[attr-defined]  # django-tenants' middleware sets it


def test_unknown_host_answers_404(alpha: Tenant) -> None:
    assert Client(HTTP_HOST="nobody.localhost").get("/admin/login/").status_code == 404


def test_inactive_tenant_is_not_served(alpha: Tenant, beta: Tenant) -> None:
    with schema_context("public"):
        Tenant.objects.filter(schema_name="beta").update(is_active=False)
    assert Client(HTTP_HOST="beta.localhost").get("/admin/login/").status_code == 404


def test_host_lookup_is_cached_and_a_deactivation_applies_at_once(
    alpha: Tenant, beta: Tenant
) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client = Client(HTTP_HOST="beta.localhost")
    assert client.get("/admin/login/").status_code == 200
    with CaptureQueriesContext(connection) as queries:
        assert client.get("/admin/login/").status_code == 200
    assert not any("tenants_domain" in query["sql"] for query in queries.captured_queries)
    with schema_context("public"):
        beta.is_active = False
        beta.save(update_fields=["is_active"])
    assert client.get("/admin/login/").status_code == 404


def test_public_admin_is_not_served_on_tenant_hosts(alpha: Tenant) -> None:
    with schema_context("public"):
        User.objects.create_superuser("operator", password="pw-operator-1")
    User.objects.create_superuser("alpha-admin", password="pw-alpha-1")
    public = Client(HTTP_HOST="localhost")
    assert _admin_login(public, "operator", "pw-operator-1")
    assert public.get("/admin/tenants/tenant/").status_code == 200
    tenant_host = Client(HTTP_HOST="alpha.localhost")
    assert _admin_login(tenant_host, "alpha-admin", "pw-alpha-1")
    assert tenant_host.get("/admin/tenants/tenant/").status_code == 404
    assert tenant_host.get("/admin/tenants/domain/").status_code == 404


def test_tenant_admin_is_not_served_on_the_public_host(alpha: Tenant) -> None:
    with schema_context("public"):
        User.objects.create_superuser("operator", password="pw-operator-1")
    User.objects.create_superuser("alpha-admin", password="pw-alpha-1")
    tenant_host = Client(HTTP_HOST="alpha.localhost")
    assert _admin_login(tenant_host, "alpha-admin", "pw-alpha-1")
    assert tenant_host.get("/admin/calls/device/").status_code == 200
    public = Client(HTTP_HOST="localhost")
    assert _admin_login(public, "operator", "pw-operator-1")
    assert public.get("/admin/calls/device/").status_code == 404
    assert public.get("/admin/crm/bitrix24connection/").status_code == 404


@pytest.mark.parametrize("other_host", ["beta.localhost", "localhost"])
def test_tenant_admin_user_cannot_log_in_on_another_host(alpha: Tenant, other_host: str) -> None:
    User.objects.create_superuser("alpha-admin", password="pw-alpha-1")
    credentials = {"username": "alpha-admin", "password": "pw-alpha-1", "next": "/admin/"}

    own = Client(HTTP_HOST="alpha.localhost").post("/admin/login/", credentials)
    assert own.status_code == 302

    other = Client(HTTP_HOST=other_host)
    response = other.post("/admin/login/", credentials)
    assert response.status_code == 200
    assert "Please enter the correct username and password" in response.content.decode()
    assert other.get("/admin/").status_code == 302  # still sent to the login page


def test_session_of_one_tenant_is_not_valid_on_another(alpha: Tenant, beta: Tenant) -> None:
    User.objects.create_superuser("alpha-admin", password="pw-alpha-1")
    alpha_client = Client(HTTP_HOST="alpha.localhost")
    assert _admin_login(alpha_client, "alpha-admin", "pw-alpha-1")
    beta_client = Client(HTTP_HOST="beta.localhost")
    beta_client.cookies = alpha_client.cookies
    assert beta_client.get("/admin/").status_code == 302


def test_cache_keys_are_per_tenant(alpha: Tenant, beta: Tenant) -> None:
    from django.core.cache import cache

    cache.set("lookup:+48600111222", "alpha's answer", 30)
    with schema_context("beta"):
        assert cache.get("lookup:+48600111222") is None
    assert cache.get("lookup:+48600111222") == "alpha's answer"
    cache.delete("lookup:+48600111222")
