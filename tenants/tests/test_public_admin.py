from __future__ import annotations

from django.contrib.auth.models import User
from django.test import Client
from django_tenants.utils import schema_context, schema_exists

from crm.models import Bitrix24Connection
from tenants.models import Domain, Tenant

WEBHOOK = "https://portal.example.com/rest/1/s3cr3t-value/"


def _operator(tenants: dict) -> Client:
    with schema_context("public"):
        User.objects.create_superuser("operator", password="pw-operator-1")
    client = Client(HTTP_HOST="localhost")
    response = client.post(
        "/admin/login/", {"username": "operator", "password": "pw-operator-1", "next": "/admin/"}
    )
    assert response.status_code == 302
    return client


def _form(**overrides: str) -> dict[str, str]:
    data = {
        "name": "Delta",
        "schema_name": "delta",
        "domain": "delta.localhost",
        "timezone": "Europe/Warsaw",
        "default_country": "PL",
        "language": "pl",
        "bitrix24_webhook": WEBHOOK,
    }
    data.update(overrides)
    return data


def test_operator_creates_a_tenant_from_the_admin_like_the_command(tenants: dict, db: None) -> None:
    client = _operator(tenants)
    response = client.post("/admin/tenants/tenant/add/", _form())
    assert response.status_code == 302, response.content.decode()[:2000]
    with schema_context("public"):
        tenant = Tenant.objects.get(schema_name="delta")
        assert (tenant.name, tenant.timezone) == ("Delta", "Europe/Warsaw")
        assert Domain.objects.get(domain="delta.localhost").tenant == tenant
    assert schema_exists("delta")
    with schema_context("delta"):
        assert Bitrix24Connection.objects.get().webhook_url == WEBHOOK
        from scenarios.models import Scenario

        assert Scenario.objects.exists()  # the default scenarios came with it
        # ...in the tenant's language, chosen on the form.
        assert Scenario.objects.filter(name="Połączenie przychodzące nieodebrane").exists()
    with schema_context("public"):
        assert Tenant.objects.get(schema_name="delta").language == "pl"
    # The webhook secret is never shown again.
    page = client.get(f"/admin/tenants/tenant/{tenant.pk}/change/").content.decode()
    assert "s3cr3t-value" not in page


def test_admin_refuses_a_taken_domain_and_changes_nothing(tenants: dict, db: None) -> None:
    client = _operator(tenants)
    with schema_context("public"):
        before = Tenant.objects.count()
    response = client.post("/admin/tenants/tenant/add/", _form(domain="beta.localhost"))
    assert response.status_code == 200
    assert "already used by another tenant" in response.content.decode()
    with schema_context("public"):
        assert Tenant.objects.count() == before
    assert not schema_exists("delta")


def test_admin_refuses_a_bad_schema_name(tenants: dict, db: None) -> None:
    client = _operator(tenants)
    response = client.post("/admin/tenants/tenant/add/", _form(schema_name="Bad-Name"))
    assert response.status_code == 200
    assert "Invalid schema name" in response.content.decode()
    assert not schema_exists("Bad-Name")
