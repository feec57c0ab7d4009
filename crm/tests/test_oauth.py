from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import pytest
from django.core import serializers
from django.db import connection
from django.test import Client
from django_tenants.utils import schema_context
from pytest_django import DjangoCaptureOnCommitCallbacks

from crm import client as b24
from crm.client import Bitrix24Client
from crm.errors import Bitrix24PermanentError
from crm.events import events_bind
from crm.models import Bitrix24Connection, Bitrix24User, RequestLog
from crm.selectors import crm_find_by_phone
from crm.services import connection_set_oauth_app
from crm.tests.portal import portal_connect

SCOPES = ["crm", "telephony", "user", "im", "task", "department"]


def _install_form(app: dict[str, Any]) -> dict[str, str]:
    """What Bitrix24 posts to a local app's installation path (REFERENCE 1.2)."""
    fields = ["access_token", "refresh_token", "domain", "member_id", "application_token",
              "client_endpoint", "server_endpoint", "expires_in", "scope"]  # fmt: skip
    form = {f"auth[{name}]": str(app[name]) for name in fields}
    form["auth[status]"] = "L"
    return form


def _install(portal: Any, app: dict[str, Any], *, secret: str | None = None) -> Any:
    connection_set_oauth_app(
        client_id=app["client_id"],
        client_secret=secret or app["client_secret"],
        token_url=portal.oauth_token_url,
    )
    return Client(HTTP_HOST="alpha.localhost").post("/bitrix24/install/", _install_form(app))


def test_install_callback_stores_a_verified_token_pair(portal: Any) -> None:
    app = portal.add_oauth_app(scopes=SCOPES)

    response = _install(portal, app)

    assert response.status_code == 200, response.content
    conn = Bitrix24Connection.objects.get()
    assert conn.auth_mode == Bitrix24Connection.AuthMode.OAUTH
    assert conn.portal_domain == portal.domain
    # Verified by one refresh with our own secret: the stored pair is the rotated one.
    assert portal.state.refresh_count == 1
    assert conn.oauth_refresh_token not in ("", app["refresh_token"])
    assert conn.oauth_access_token not in ("", app["access_token"])
    assert conn.oauth_application_token == app["application_token"]

    lookup = crm_find_by_phone(phone="+48600111222")
    assert lookup.entity is not None
    assert lookup.entity.name == "Anna Kowalska"
    assert lookup.entity.url == f"{portal.url}/crm/contact/details/12/"
    assert portal.state.query_requests(in_batch=False)[-1]["auth"] == "oauth"


def test_install_syncs_the_directory_of_the_installed_portal(
    portal: Any, django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks
) -> None:
    from simtrix.celery import app as celery_app

    Bitrix24User.objects.all().delete()
    app = portal.add_oauth_app(scopes=SCOPES)
    celery_app.conf.task_always_eager = True
    try:
        with django_capture_on_commit_callbacks(execute=True) as queued:
            assert _install(portal, app).status_code == 200
    finally:
        celery_app.conf.task_always_eager = False

    assert len(queued) == 2  # the directory sync, the events' binding
    assert Bitrix24User.objects.get(id=5).name == "Marta Nowak"
    conn = Bitrix24Connection.objects.get()
    assert conn.directory_synced_at is not None
    assert "ONEXTERNALCALLSTART" in conn.events_bound


def test_install_binds_the_events_to_the_tenants_handler_and_drops_stale_ones(
    portal: Any, settings: Any
) -> None:
    settings.SIMTRIX_PUBLIC_SCHEME, settings.SIMTRIX_PUBLIC_PORT = "http", "8000"
    app = portal.add_oauth_app(scopes=SCOPES)
    assert _install(portal, app).status_code == 200
    client = Bitrix24Client()
    # An earlier installation pointed at another address.
    client.run(b24.event_bind("ONEXTERNALCALLSTART", "https://old.example.com/bitrix24/events/"))

    bound = events_bind()

    handler = "http://alpha.localhost:8000/bitrix24/events/"
    rows = client.run(b24.event_get())
    assert {(row["event"], row["handler"]) for row in rows} == {(name, handler) for name in bound}
    assert {"ONEXTERNALCALLSTART", "ONCRMCONTACTUPDATE", "ONAPPUNINSTALL"} <= set(bound)
    events_bind()  # again: nothing bound twice
    assert len(client.run(b24.event_get())) == len(bound)


def test_a_webhook_connection_binds_nothing(portal: Any) -> None:
    assert events_bind() == []


def test_install_with_a_foreign_refresh_token_is_refused(portal: Any) -> None:
    app = portal.add_oauth_app(scopes=SCOPES)

    response = _install(portal, app, secret="not-our-secret")

    assert response.status_code == 400
    assert b"invalid_client" in response.content
    assert Bitrix24Connection.objects.get().oauth_access_token == ""


def test_install_before_the_app_is_configured_is_refused(portal: Any) -> None:
    app = portal.add_oauth_app(scopes=SCOPES)
    response = Client(HTTP_HOST="alpha.localhost").post("/bitrix24/install/", _install_form(app))
    assert response.status_code == 400
    assert b"client id and secret" in response.content


def _legacy_install_form(app: dict[str, Any]) -> dict[str, str]:
    """What the placement-style install posts (b24restdocs oauth/simple-way.md)."""
    return {
        "DOMAIN": str(app["domain"]),
        "PROTOCOL": "1",
        "LANG": "en",
        "APP_SID": "dd8cec11e347088fe87c44870a9f1dba",
        "AUTH_ID": str(app["access_token"]),
        "AUTH_EXPIRES": "3600",
        "REFRESH_ID": str(app["refresh_token"]),
        "member_id": str(app["member_id"]),
        "status": "L",
    }


def test_install_callback_takes_the_legacy_tokens_from_the_body(portal: Any) -> None:
    app = portal.add_oauth_app(scopes=SCOPES)
    connection_set_oauth_app(
        client_id=app["client_id"],
        client_secret=app["client_secret"],
        token_url=portal.oauth_token_url,
    )

    response = Client(HTTP_HOST="alpha.localhost").post(
        "/bitrix24/install/", _legacy_install_form(app)
    )

    assert response.status_code == 200, response.content
    conn = Bitrix24Connection.objects.get()
    assert conn.auth_mode == Bitrix24Connection.AuthMode.OAUTH
    assert conn.oauth_refresh_token not in ("", app["refresh_token"])  # verified, rotated


def test_install_callback_never_reads_tokens_from_the_query_string(portal: Any) -> None:
    """Bitrix24 posts them; in a URL they would sit in every access log on the way."""
    app = portal.add_oauth_app(scopes=SCOPES)
    connection_set_oauth_app(
        client_id=app["client_id"],
        client_secret=app["client_secret"],
        token_url=portal.oauth_token_url,
    )
    query = urlencode(_legacy_install_form(app))

    response = Client(HTTP_HOST="alpha.localhost").post(f"/bitrix24/install/?{query}", {})

    assert response.status_code == 400
    assert b"carries no tokens" in response.content
    assert portal.state.refresh_count == 0  # the token was not even tried
    conn = Bitrix24Connection.objects.get()
    assert (conn.oauth_access_token, conn.oauth_refresh_token) == ("", "")


def test_install_callback_only_accepts_post(portal: Any) -> None:
    assert Client(HTTP_HOST="alpha.localhost").get("/bitrix24/install/").status_code == 405


def test_expired_token_is_refreshed_once_and_persisted(portal: Any) -> None:
    app = portal.add_oauth_app(scopes=SCOPES)
    assert _install(portal, app).status_code == 200
    before = Bitrix24Connection.objects.get()
    portal.control.expire_tokens()

    contact = Bitrix24Client().run(b24.entity_get("CONTACT", 12))

    assert contact["NAME"] == "Anna"
    after = Bitrix24Connection.objects.get()
    assert portal.state.refresh_count == 2  # install + this one
    assert after.oauth_refresh_token != before.oauth_refresh_token
    assert after.oauth_access_token != before.oauth_access_token
    statuses = [(r["method"], r["status"]) for r in portal.state.query_requests(in_batch=False)]
    assert statuses[-3:] == [
        ("crm.contact.get", 401),
        ("oauth.token", 200),
        ("crm.contact.get", 200),
    ]


def test_burnt_refresh_token_is_a_clear_error(portal: Any) -> None:
    app = portal.add_oauth_app(scopes=SCOPES)
    assert _install(portal, app).status_code == 200
    # Someone else used our refresh token: the portal burnt it.
    Bitrix24Connection.objects.update(oauth_refresh_token=app["refresh_token"])
    portal.control.expire_tokens()

    with pytest.raises(Bitrix24PermanentError) as caught:
        Bitrix24Client().run(b24.entity_get("CONTACT", 12))

    assert caught.value.code == "invalid_grant"
    assert "reinstall" in Bitrix24Connection.objects.get().last_error


def test_concurrent_callers_share_one_refresh(
    alpha_portal: Any, committed_db: Callable[[Callable[[], None]], None]
) -> None:
    portal = alpha_portal
    committed_db(lambda: portal_connect(portal, sync_directory=False))
    app = portal.add_oauth_app(scopes=SCOPES)
    with schema_context("alpha"):
        assert _install(portal, app).status_code == 200
        installed = Bitrix24Connection.objects.get()
    refreshes_before = portal.state.refresh_count
    portal.control.expire_tokens()

    barrier = threading.Barrier(6)
    results: list[Any] = []

    def caller() -> None:
        try:
            with schema_context("alpha"):
                client = Bitrix24Client()
                barrier.wait(timeout=10)
                results.append(client.run(b24.entity_get("CONTACT", 12))["NAME"])
        except Exception as exc:
            results.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=caller) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert results == ["Anna"] * 6
    assert portal.state.refresh_count - refreshes_before == 1
    with schema_context("alpha"):
        stored = Bitrix24Connection.objects.get()
        assert stored.oauth_refresh_token != installed.oauth_refresh_token
        # The persisted refresh token is the live one: the next expiry refreshes fine with it.
        portal.control.expire_tokens()
        assert Bitrix24Client().run(b24.entity_get("CONTACT", 14))["NAME"] == "Piotr"
        assert portal.state.refresh_count - refreshes_before == 2
        dump = serializers.serialize("json", RequestLog.objects.all())
    for secret in (stored.oauth_access_token, stored.oauth_refresh_token, app["client_secret"]):
        assert secret not in dump
