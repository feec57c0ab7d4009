"""A portal that moved: Bitrix24 cloud answers HTTP 302 to the new domain after a rename.

The sandbox answers 302 for its old name (127.0.0.1, where alpha is connected) and serves the
same portal under the new one (``localhost``, which its certificate covers).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client
from pytest_django import Settings

from crm import client as b24
from crm.client import Bitrix24Client
from crm.errors import Bitrix24Error
from crm.models import Bitrix24Connection, RequestLog
from crm.services import connection_set_oauth_app, connection_test
from crm.tests.conftest import top_level


@pytest.fixture
def moved(portal: Any) -> Iterator[Any]:
    yield portal
    portal.set_moved(None)


def _secret(portal: Any) -> str:
    return str(portal.state.admin_secret)


def _attempts() -> list[tuple[int | None, str]]:
    rows = RequestLog.objects.filter(parent__isnull=True).order_by("id")
    return [(r.http_status, r.error_code) for r in rows]


def test_a_moved_portal_is_followed_once_and_the_connection_updated(
    moved: Any, caplog: Any
) -> None:
    new = f"https://localhost:{moved.port}"
    moved.set_moved(new)

    with caplog.at_level(logging.WARNING, logger="crm.session"):
        contact = Bitrix24Client().run(b24.entity_get("CONTACT", 12))

    assert contact["NAME"] == "Anna"
    assert Bitrix24Connection.objects.get().webhook_url == f"{new}/rest/1/{_secret(moved)}/"
    assert [(r["status"], r["error"]) for r in top_level(moved)] == [(302, "MOVED"), (200, None)]
    assert _attempts() == [(302, "PORTAL_MOVED"), (200, "")]
    assert f"moved to {new}: the connection was updated" in caplog.text
    # From now on the new address is used directly.
    Bitrix24Client().run(b24.entity_get("CONTACT", 12))
    assert len(top_level(moved)) == 3


def test_test_connection_follows_a_move(moved: Any) -> None:
    moved.set_moved(f"https://localhost:{moved.port}")

    check = connection_test()

    assert check.ok, check.error
    assert Bitrix24Connection.objects.get().portal_domain == f"localhost:{moved.port}"


def test_a_non_idempotent_request_is_sent_again_after_a_move(moved: Any) -> None:
    # The old address executed nothing (a 302), so the lead is created exactly once.
    moved.set_moved(f"https://localhost:{moved.port}")
    leads = len(moved.state.entities["LEAD"])

    Bitrix24Client().run(b24.Req("crm.lead.add", {"fields": {"TITLE": "Moved"}}, idempotent=False))

    assert len(moved.state.entities["LEAD"]) == leads + 1


@pytest.mark.parametrize(
    ("target", "allow_http", "problem"),
    [
        ("http://localhost:{port}", False, "it must start with https://"),
        (
            "http://localhost:{port}",
            True,
            "from https:// to http:// would send the secret in clear",
        ),
        ("https://2130706433:{port}", False, "four decimal numbers"),
        ("https://169.254.169.254:{port}", False, "link-local address"),
        ("https://user@localhost:{port}", False, "user@host"),
    ],
)
def test_a_move_to_an_address_that_breaks_the_rules_is_not_followed(
    moved: Any, settings: Settings, target: str, allow_http: bool, problem: str
) -> None:
    settings.SIMTRIX_ALLOW_HTTP_PORTALS = allow_http
    before = Bitrix24Connection.objects.get().webhook_url
    moved.set_moved(target.format(port=moved.port))

    with pytest.raises(Bitrix24Error) as caught:
        Bitrix24Client().run(b24.entity_get("CONTACT", 12))

    assert caught.value.code == "PORTAL_MOVED"
    assert not caught.value.transient
    assert problem in caught.value.description
    assert "update the connection" in caught.value.description
    assert _secret(moved) not in caught.value.description
    assert [r["status"] for r in top_level(moved)] == [302]  # never followed
    conn = Bitrix24Connection.objects.get()
    assert conn.webhook_url == before
    assert conn.last_error_code == "PORTAL_MOVED"


def test_a_move_to_an_address_that_does_not_answer_is_reported(moved: Any) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    before = Bitrix24Connection.objects.get().webhook_url
    moved.set_moved(f"https://localhost:{closed}")

    with pytest.raises(Bitrix24Error) as caught:
        Bitrix24Client().run(b24.entity_get("CONTACT", 12), max_attempts=1)

    assert caught.value.code == "PORTAL_MOVED"
    assert caught.value.description == (
        f"The portal moved to https://localhost:{closed}, which did not answer like a Bitrix24 "
        "portal: check the new address and update the connection"
    )
    assert caught.value.transient  # the new address may come up: the work is not lost
    assert not caught.value.ambiguous  # it refused the connection: nothing was sent
    assert Bitrix24Connection.objects.get().webhook_url == before
    assert _attempts() == [(302, "PORTAL_MOVED"), (None, "CONNECTION_ERROR")]
    check = connection_test()
    assert not check.ok
    assert "The portal moved to" in check.error


def test_a_moved_oauth_portal_gets_its_new_rest_endpoint(moved: Any) -> None:
    app = moved.add_oauth_app()
    connection_set_oauth_app(
        client_id=app["client_id"],
        client_secret=app["client_secret"],
        token_url=moved.oauth_token_url,
    )
    form = {f"auth[{k}]": str(app[k]) for k in ("access_token", "refresh_token", "client_endpoint")}
    assert Client(HTTP_HOST="alpha.localhost").post("/bitrix24/install/", form).status_code == 200
    assert Bitrix24Connection.objects.get().oauth_client_endpoint == f"{moved.url}/rest/"
    new = f"https://localhost:{moved.port}"
    moved.set_moved(new)

    contact = Bitrix24Client().run(b24.entity_get("CONTACT", 12))

    assert contact["NAME"] == "Anna"
    conn = Bitrix24Connection.objects.get()
    assert conn.oauth_client_endpoint == f"{new}/rest/"
    assert conn.portal_domain == f"localhost:{moved.port}"
