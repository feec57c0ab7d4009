from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from pytest_django import DjangoCaptureOnCommitCallbacks

from calls.services import SUPPORT_GROUP, support_group_ensure
from crm import client as b24
from crm.client import Bitrix24Client
from crm.models import Bitrix24Connection, Bitrix24User, RequestLog

CONNECTION_LIST = "/admin/crm/bitrix24connection/"


@pytest.fixture
def admin_client(portal: Any) -> Client:
    User.objects.create_superuser("alpha-admin", password="pw-alpha-1")
    client = Client(HTTP_HOST="alpha.localhost")
    assert (
        client.post(
            "/admin/login/",
            {"username": "alpha-admin", "password": "pw-alpha-1", "next": "/admin/"},
        ).status_code
        == 302
    )
    return client


def _action(client: Client, action: str) -> str:
    pk = Bitrix24Connection.objects.get().pk
    response = client.post(
        CONNECTION_LIST, {"action": action, "_selected_action": [pk]}, follow=True
    )
    assert response.status_code == 200
    return response.content.decode()


@pytest.mark.parametrize(
    "model",
    ["bitrix24connection", "requestlog", "intent", "bitrix24user", "department", "pipeline",
     "stage", "leadstatus", "leadsource", "inboundevent"],
)  # fmt: skip
def test_admin_pages_render(admin_client: Client, model: str) -> None:
    assert admin_client.get(f"/admin/crm/{model}/").status_code == 200


def test_connection_page_never_shows_the_webhook_secret(admin_client: Client, portal: Any) -> None:
    secret = portal.webhook_url(1).rstrip("/").rsplit("/", 1)[1]
    pk = Bitrix24Connection.objects.get().pk
    page = admin_client.get(f"{CONNECTION_LIST}{pk}/change/").content.decode()
    assert "/rest/1/****/" in page
    assert secret not in page
    assert secret not in admin_client.get(CONNECTION_LIST).content.decode()


def test_the_connection_page_shows_the_events_url_and_whether_events_arrive(
    admin_client: Client,
) -> None:
    pk = Bitrix24Connection.objects.get().pk
    page = admin_client.get(f"{CONNECTION_LIST}{pk}/change/").content.decode()
    assert "https://alpha.localhost/bitrix24/events/" in page
    assert "no event received yet" in page
    assert "not set: events are refused" in page
    response = admin_client.post(
        f"{CONNECTION_LIST}{pk}/change/",
        {
            "auth_mode": "webhook",
            "new_webhook_url": "",
            "oauth_client_id": "",
            "new_client_secret": "",
            "new_events_token": "the-outbound-webhooks-token",
            "oauth_token_url": "https://oauth.bitrix.info/oauth/token/",
            "rate_plan": "standard",
            "rate_limit_per_second": "",
            "rate_limit_burst": "",
            "lookup_budget_ms": "1500",
            "lookup_cache_ttl_s": "300",
        },
    )
    assert response.status_code == 302
    assert Bitrix24Connection.objects.get().events_token == "the-outbound-webhooks-token"
    event = {"event": "ONCRMDEALUPDATE", "auth[application_token]": "the-outbound-webhooks-token"}
    assert Client(HTTP_HOST="alpha.localhost").post("/bitrix24/events/", event).status_code == 200
    page = admin_client.get(f"{CONNECTION_LIST}{pk}/change/").content.decode()
    assert "last event received" in page
    assert "stored (hidden)" in page
    assert "the-outbound-webhooks-token" not in page


def test_wrong_webhook_secret_is_shown_clearly(admin_client: Client, portal: Any) -> None:
    Bitrix24Connection.objects.update(webhook_url=f"{portal.url}/rest/1/not-the-secret/")

    page = _action(admin_client, "test_connection")

    expected = "Invalid request credentials (INVALID_CREDENTIALS): check the webhook URL"
    assert f"Bitrix24 connection failed: {expected}" in page
    # And it stays on the connection list until the connection works again.
    assert expected in admin_client.get(CONNECTION_LIST).content.decode()


def test_test_connection_checks_scopes(admin_client: Client, portal: Any) -> None:
    assert "Connected. Scopes:" in _action(admin_client, "test_connection")

    Bitrix24Connection.objects.update(webhook_url=portal.add_webhook(1, scopes=["crm", "user"]))
    page = _action(admin_client, "test_connection")
    assert "Missing scopes: telephony, im, task" in page
    assert Bitrix24Connection.objects.get().last_error_code == "INSUFFICIENT_SCOPE"


def test_test_connection_warns_of_each_missing_optional_scope(
    admin_client: Client, portal: Any
) -> None:
    scopes = ["crm", "telephony", "user", "im", "task"]  # what the README asks for
    Bitrix24Connection.objects.update(webhook_url=portal.add_webhook(1, scopes=scopes))

    page = _action(admin_client, "test_connection")

    assert "Connected. Scopes:" in page
    assert "Optional scope department is not granted" in page
    assert "Optional scope timeman is not granted: routing by work-day status is off" in page
    assert "Bitrix24 connection failed" not in page


def test_sync_directory_action(admin_client: Client) -> None:
    page = _action(admin_client, "sync_directory")
    assert "Synced 6 users, 2 pipelines, 9 stages, 5 lead statuses, 12 sources." in page


def test_saving_a_new_webhook_url_keeps_it_masked(admin_client: Client, portal: Any) -> None:
    pk = Bitrix24Connection.objects.get().pk
    new_url = portal.add_webhook(5)
    response = admin_client.post(
        f"{CONNECTION_LIST}{pk}/change/",
        {
            "auth_mode": "webhook",
            "new_webhook_url": new_url,
            "oauth_client_id": "",
            "new_client_secret": "",
            "oauth_token_url": "https://oauth.bitrix.info/oauth/token/",
            "rate_plan": "enterprise",
            "rate_limit_per_second": "",
            "rate_limit_burst": "",
            "lookup_budget_ms": "1200",
            "lookup_cache_ttl_s": "120",
        },
    )
    assert response.status_code == 302
    conn = Bitrix24Connection.objects.get()
    assert conn.webhook_url == new_url
    assert (conn.rate_limit, conn.lookup_budget_ms) == ((5.0, 250), 1200)


def test_a_new_webhook_syncs_the_directory_at_once(
    admin_client: Client,
    portal: Any,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    from simtrix.celery import app

    Bitrix24User.objects.all().delete()
    pk = Bitrix24Connection.objects.get().pk
    page = admin_client.get(f"{CONNECTION_LIST}{pk}/change/")
    form = page.context["adminform"].form
    data = {name: form[name].value() or "" for name in form.fields}
    data["new_webhook_url"] = portal.add_webhook(5)
    app.conf.task_always_eager = True
    try:
        with django_capture_on_commit_callbacks(execute=True) as queued:
            response = admin_client.post(f"{CONNECTION_LIST}{pk}/change/", data, follow=True)
    finally:
        app.conf.task_always_eager = False

    assert response.status_code == 200
    assert "is syncing in the background" in response.content.decode()
    assert len(queued) == 1
    assert Bitrix24User.objects.filter(id=5, name="Marta Nowak").exists()

    # Saving other settings changes no portal: nothing to sync.
    data["new_webhook_url"] = ""
    data["lookup_budget_ms"] = "1300"
    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = admin_client.post(f"{CONNECTION_LIST}{pk}/change/", data, follow=True)
    assert response.status_code == 200
    assert queued == []


def test_request_log_is_read_only(admin_client: Client) -> None:
    Bitrix24Client().run(b24.entity_get("CONTACT", 12))
    row = RequestLog.objects.get()

    assert admin_client.get("/admin/crm/requestlog/add/").status_code == 403
    assert admin_client.post(f"/admin/crm/requestlog/{row.pk}/delete/").status_code == 403
    page = admin_client.get(f"/admin/crm/requestlog/{row.pk}/change/")
    assert page.status_code == 200
    assert b'name="method"' not in page.content  # shown, not editable
    found = admin_client.get("/admin/crm/requestlog/", {"q": "crm.contact.get"}).content.decode()
    assert "crm.contact.get" in found
    filtered = admin_client.get("/admin/crm/requestlog/", {"http_status": "200"})
    assert filtered.status_code == 200


def test_support_staff_may_view_the_request_log(alpha: Any) -> None:
    support_group_ensure()
    codenames = set(
        Group.objects.get(name=SUPPORT_GROUP).permissions.values_list("codename", flat=True)
    )
    assert "view_requestlog" in codenames
    assert "change_requestlog" not in codenames
