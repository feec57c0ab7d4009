"""Bitrix24 calling SIMtrix: events verified by the tenant's token, stored, then worked off."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from django.test import Client
from django.utils import timezone

from crm import client as b24
from crm.cache import cache_get
from crm.client import Bitrix24Client
from crm.events import event_process, events_due, events_handler_url, form_nested
from crm.models import Bitrix24Connection, InboundEvent
from crm.selectors import crm_find_by_phone
from tenants.models import Tenant

TOKEN = "outbound-webhook-token-1234"


def _post(fields: dict[str, str], host: str = "alpha.localhost") -> Any:
    return Client(HTTP_HOST=host).post(
        "/bitrix24/events/",
        data=urlencode(fields),
        content_type="application/x-www-form-urlencoded",
    )


def _event(name: str, token: str = TOKEN, **data: str) -> dict[str, str]:
    fields = {
        "event": name,
        "event_handler_id": "17",
        "ts": "1773236988",
        "auth[domain]": "portal.example",
        "auth[member_id]": "abc",
        "auth[application_token]": token,
    }
    fields.update({f"data{key}": value for key, value in data.items()})
    return fields


@pytest.fixture
def webhook_tenant(alpha: Tenant) -> Tenant:
    Bitrix24Connection.objects.update_or_create(
        singleton=1,
        defaults={
            "auth_mode": "webhook",
            "webhook_url": "https://portal.example/rest/1/secret/",
            "events_token": TOKEN,
        },
    )
    return alpha


def test_php_style_keys_become_nested_dicts() -> None:
    tree = form_nested(
        [
            ("event", "ONCRMCONTACTUPDATE"),
            ("data[FIELDS][ID]", "12"),
            ("auth[application_token]", "t"),
            ("data[LIST][0]", "a"),
            ("data[LIST][1]", "b"),
        ]
    )
    assert tree == {
        "event": "ONCRMCONTACTUPDATE",
        "data": {"FIELDS": {"ID": "12"}, "LIST": {"0": "a", "1": "b"}},
        "auth": {"application_token": "t"},
    }


def test_an_event_with_the_tenants_token_is_stored_and_answered_at_once(
    webhook_tenant: Tenant,
) -> None:
    response = _post(_event("ONCRMCONTACTUPDATE", **{"[FIELDS][ID]": "12"}))
    assert response.status_code == 200
    event = InboundEvent.objects.get()
    assert (event.event, event.status, event.data) == (
        "ONCRMCONTACTUPDATE",
        "pending",
        {"FIELDS": {"ID": "12"}},
    )
    assert (event.handler_id, event.ts) == ("17", "1773236988")
    assert Bitrix24Connection.objects.get().last_event_at is not None


@pytest.mark.parametrize("token", ["wrong-token", ""])
def test_an_event_with_another_token_is_401_and_nothing_is_done(
    webhook_tenant: Tenant, token: str
) -> None:
    response = _post(_event("ONAPPUNINSTALL", token=token))
    assert response.status_code == 401
    assert not InboundEvent.objects.exists()
    connection = Bitrix24Connection.objects.get()
    assert connection.uninstalled_at is None
    assert connection.last_event_refused_at is not None


def test_a_tenant_without_an_events_token_refuses_every_event(alpha: Tenant) -> None:
    Bitrix24Connection.objects.update_or_create(
        singleton=1,
        defaults={"webhook_url": "https://portal.example/rest/1/s/", "events_token": ""},
    )
    assert _post(_event("ONEXTERNALCALLSTART", token="")).status_code == 401
    assert _post(_event("ONEXTERNALCALLSTART", token="anything")).status_code == 401
    assert not InboundEvent.objects.exists()


def test_another_tenants_token_is_refused(webhook_tenant: Tenant, beta: Tenant) -> None:
    response = _post(_event("ONEXTERNALCALLSTART"), host="beta.localhost")
    assert response.status_code == 401


def test_the_oauth_applications_token_verifies_its_events(alpha: Tenant) -> None:
    Bitrix24Connection.objects.update_or_create(
        singleton=1,
        defaults={
            "auth_mode": "oauth",
            "oauth_client_endpoint": "https://portal.example/rest/",
            "oauth_application_token": "app-token-from-install",
            "events_token": TOKEN,  # a webhook's token left over does not count
        },
    )
    assert _post(_event("ONAPPUNINSTALL", token=TOKEN)).status_code == 401
    assert _post(_event("ONAPPUNINSTALL", token="app-token-from-install")).status_code == 200


def test_a_request_without_an_event_name_is_400(webhook_tenant: Tenant) -> None:
    fields = _event("")
    assert _post(fields).status_code == 400
    assert not InboundEvent.objects.exists()


def test_get_is_not_allowed(webhook_tenant: Tenant) -> None:
    assert Client(HTTP_HOST="alpha.localhost").get("/bitrix24/events/").status_code == 405


def test_the_uninstall_event_marks_the_connection_uninstalled(webhook_tenant: Tenant) -> None:
    _post(_event("ONAPPUNINSTALL", **{"[CLEAN]": "0", "[LANGUAGE_ID]": "en"}))
    event = InboundEvent.objects.get()
    assert event_process(event.pk) == "done"
    connection = Bitrix24Connection.objects.get()
    assert connection.uninstalled_at is not None
    assert connection.last_error_code == "APP_UNINSTALLED"
    assert event_process(event.pk) == "not pending"  # processed once


def test_an_uninstall_taken_up_after_a_reinstall_leaves_the_new_installation(
    alpha: Tenant,
) -> None:
    Bitrix24Connection.objects.update_or_create(
        singleton=1,
        defaults={
            "auth_mode": "oauth",
            "oauth_client_endpoint": "https://portal.example/rest/",
            "oauth_application_token": "old-app-token",
            "oauth_access_token": "old-access",
            "oauth_installed_at": timezone.now() - timedelta(days=30),
        },
    )
    assert _post(_event("ONAPPUNINSTALL", token="old-app-token")).status_code == 200
    uninstall = InboundEvent.objects.get()
    # Installed again before the worker took the uninstall up.
    Bitrix24Connection.objects.update(
        oauth_application_token="new-app-token",
        oauth_access_token="new-access",
        oauth_installed_at=timezone.now(),
    )
    assert event_process(uninstall.pk) == "done"
    uninstall.refresh_from_db()
    assert uninstall.result == {"skipped": "installed again after this uninstall"}
    connection = Bitrix24Connection.objects.get()
    assert (connection.oauth_access_token, connection.oauth_application_token) == (
        "new-access",
        "new-app-token",
    )
    assert connection.uninstalled_at is None
    # The current installation's own uninstall does what it says, token included.
    assert _post(_event("ONAPPUNINSTALL", token="new-app-token")).status_code == 200
    latest = InboundEvent.objects.latest("pk")
    assert event_process(latest.pk) == "done"
    connection.refresh_from_db()
    assert connection.uninstalled_at is not None
    assert (connection.oauth_access_token, connection.oauth_application_token) == ("", "")
    assert _post(_event("ONCRMCONTACTUPDATE", token="new-app-token")).status_code == 401


def test_an_event_nobody_handles_is_ignored(webhook_tenant: Tenant) -> None:
    _post(_event("ONCRMDEALUPDATE", **{"[FIELDS][ID]": "71"}))
    event = InboundEvent.objects.get()
    assert event_process(event.pk) == "ignored"


def test_the_dispatcher_takes_up_an_event_whose_message_was_lost(webhook_tenant: Tenant) -> None:
    _post(_event("ONCRMDEALUPDATE", **{"[FIELDS][ID]": "71"}))
    event = InboundEvent.objects.get()
    assert events_due(timezone.now()) == event.next_attempt_at  # not due yet
    InboundEvent.objects.filter(pk=event.pk).update(next_attempt_at=timezone.now())
    events_due(timezone.now())
    event.refresh_from_db()
    assert event.next_attempt_at is not None
    assert event.next_attempt_at > timezone.now()  # leased again: queued to a worker


def test_a_contact_update_drops_the_cached_lookups_of_its_numbers(portal: Any) -> None:
    Bitrix24Connection.objects.filter(singleton=1).update(events_token=TOKEN)
    old = crm_find_by_phone(phone="+48600111222")
    assert old.entity is not None
    assert old.entity.id == 12
    assert cache_get("+48600111222") is not None
    # A number nobody has yet: cached as "not found".
    assert crm_find_by_phone(phone="+48600999888").status == "not_found"
    assert cache_get("+48600999888") is not None
    # Someone adds it to Anna Kowalska in Bitrix24; Bitrix24 tells SIMtrix.
    Bitrix24Client().run(
        b24.entity_update(
            "CONTACT", 12, {"PHONE": [{"VALUE": "+48 600 999 888", "VALUE_TYPE": "MOBILE"}]}
        )
    )
    assert _post(_event("ONCRMCONTACTUPDATE", **{"[FIELDS][ID]": "12"})).status_code == 200
    assert event_process(InboundEvent.objects.get().pk) == "done"
    assert cache_get("+48600111222") is None
    assert cache_get("+48600999888") is None
    found = crm_find_by_phone(phone="+48600999888")
    assert found.entity is not None
    assert found.entity.id == 12


def test_the_handler_url_is_the_tenants_primary_domain(alpha: Tenant, settings: Any) -> None:
    settings.SIMTRIX_PUBLIC_SCHEME = "http"
    settings.SIMTRIX_PUBLIC_PORT = "8000"
    assert events_handler_url() == "http://alpha.localhost:8000/bitrix24/events/"
    settings.SIMTRIX_PUBLIC_SCHEME = "https"
    settings.SIMTRIX_PUBLIC_PORT = ""
    assert events_handler_url() == "https://alpha.localhost/bitrix24/events/"
