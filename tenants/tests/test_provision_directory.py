"""A new tenant knows its portal's people from its first call, not from the next hourly sync."""

from __future__ import annotations

from typing import Any

from django_tenants.utils import schema_context

from calls.selectors import route_public
from calls.services import device_register
from calls.tests.conftest import Bridge
from crm.models import Bitrix24Connection, Bitrix24User
from scenarios.routing.rules import Route
from tenants.services import TenantSpec, tenant_provision


def test_provisioning_syncs_the_directory_so_the_first_lookup_has_names(
    tenants: dict, db: None, sandbox_portal: Any
) -> None:
    sandbox_portal.reset()
    tenant_provision(
        TenantSpec(
            schema="gamma",
            name="Gamma",
            domain="gamma.localhost",
            bitrix24_webhook=sandbox_portal.webhook_url(1),
        )
    )
    with schema_context("gamma"):
        assert Bitrix24Connection.objects.get().directory_synced_at is not None
        assert Bitrix24User.objects.get(id=5).name == "Marta Nowak"
        _, token = device_register(
            name="Jan's phone", phone_number="+48500100300", bitrix24_user_id=3, country="PL"
        )

    response = Bridge(token, host="gamma.localhost").post(
        "lookup/", {"phone_number": "+48 600 111 222"}
    )

    assert response.status_code == 200
    body = response.json()
    assert body["crm"]["responsible"] == {"id": 5, "name": "Marta Nowak"}
    route = body["route"]["user"]
    assert route["name"]
    assert not route["name"].startswith("User #"), route


def test_provisioning_with_an_unreachable_portal_still_creates_the_tenant(
    tenants: dict, db: None
) -> None:
    tenant = tenant_provision(
        TenantSpec(
            schema="delta",
            name="Delta",
            domain="delta.localhost",
            # Nothing listens there: the sync is queued for later, the tenant exists.
            bitrix24_webhook="https://127.0.0.1:9/rest/1/secret-delta/",
        )
    )
    assert tenant.schema_name == "delta"
    with schema_context("delta"):
        connection = Bitrix24Connection.objects.get()
        assert connection.directory_synced_at is None
        assert Bitrix24User.objects.count() == 0


def test_a_routed_user_the_directory_does_not_know_yet_is_never_nameless() -> None:
    known: Route = {"user": {"id": 5, "name": "Marta Nowak"}, "rule": "Others"}
    unknown: Route = {"user": {"id": 8, "name": ""}, "rule": "Others"}
    assert route_public(known) == known
    assert route_public(unknown) == {"user": {"id": 8, "name": "User #8"}, "rule": "Others"}
