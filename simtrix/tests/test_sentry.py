"""Error tracking: off without SENTRY_DSN; with it, events leave without phone numbers or
Bitrix24 credentials."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
import sentry_sdk
from django.contrib.auth.models import User
from django.db.models.signals import post_save
from django.test import Client
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport

from crm.models import Bitrix24Connection
from crm.services import connection_set_oauth_app
from simtrix.sentry import FILTERED, before_breadcrumb, scrub_phones, scrub_text, sentry_init
from tenants.models import Tenant

REPO = Path(__file__).resolve().parents[2]

NUMBERS = [
    "+48 600 111 222",
    "+48600111222",
    "600111222",
    "600 111 222",
    "48600111222",
    "600-111-222",
    "0048 600 111 222",
]


def _no_number_left(text: str) -> None:
    for number in [*NUMBERS, "111 222", "111222"]:
        assert number not in text, number


def test_an_event_is_scrubbed_everywhere_it_can_hold_a_number() -> None:
    event: dict[str, Any] = {
        "event_id": "0123456789abcdef0123456789abcdef",
        "timestamp": "2026-11-21T14:32:05.123456Z",
        "message": "Lookup of +48600111222: found",
        "request": {
            "url": "https://alpha.example/api/bridge/v1/lookup/",
            "query_string": "phone=600111222&lang=pl",
            "data": {"phone_number": "600 111 222", "direction": "incoming", "duration": 95},
        },
        "extra": {"body": '{"phone_number": "600 111 222", "type": "call.started"}'},
        "exception": {
            "values": [
                {
                    "type": "Bitrix24PermanentError",
                    "value": "No entity for +48 600 111 222",
                    "stacktrace": {
                        "frames": [
                            {
                                "function": "crm_find_by_phone",
                                "lineno": 120,
                                "vars": {
                                    "phone": "'+48600111222'",
                                    "e164": "'+48600111222'",
                                    "budget_s": "0.8",
                                    "forms": "['600111222', '48600111222']",
                                },
                            }
                        ]
                    },
                }
            ]
        },
        "contexts": {"crm": {"PHONE": [{"VALUE": "600111222", "VALUE_TYPE": "WORK"}]}},
        "breadcrumbs": {
            "values": [{"category": "query", "message": "SELECT ... WHERE phone = '600111222'"}]
        },
    }

    scrubbed = scrub_phones(event)

    _no_number_left(json.dumps(scrubbed))
    assert scrubbed["event_id"] == event["event_id"]  # Sentry's bookkeeping is intact
    assert scrubbed["timestamp"] == event["timestamp"]
    assert scrubbed["request"]["data"] == {
        "phone_number": FILTERED,
        "direction": "incoming",
        "duration": 95,
    }
    assert scrubbed["request"]["query_string"] == f"phone={FILTERED}&lang=pl"
    assert scrubbed["request"]["url"] == event["request"]["url"]
    frame = scrubbed["exception"]["values"][0]["stacktrace"]["frames"][0]
    assert frame["vars"]["budget_s"] == "0.8"
    assert frame["lineno"] == 120
    assert scrubbed["exception"]["values"][0]["type"] == "Bitrix24PermanentError"
    assert scrubbed["contexts"]["crm"]["PHONE"] == FILTERED
    assert '"type": "call.started"' in scrubbed["extra"]["body"]
    assert event["request"]["data"]["phone_number"] == "600 111 222"  # the original is untouched


@pytest.mark.parametrize(
    "text",
    [
        "call 2026-11-21 14:32:05 lasted 95 s",
        "event 6f1c7c3e-8d0c-4a43-9a57-1d9f3f2f0a11",
        "HTTP 503 after 3 attempts (call #12345)",
    ],
)
def test_text_without_numbers_is_left_alone(text: str) -> None:
    assert scrub_phones(text) == text


def test_without_a_dsn_nothing_is_started() -> None:
    assert sentry_init(dsn="") is False
    assert not sentry_sdk.get_client().is_active()


class _Collector(BaseHTTPRequestHandler):
    received: list[bytes]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        type(self).received.append(body)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def sentry_server() -> Iterator[tuple[int, list[bytes]]]:
    """A stand-in for Sentry's ingest on 127.0.0.1: records every envelope it is sent."""
    received: list[bytes] = []
    handler = type("Collector", (_Collector,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], received
    finally:
        server.shutdown()
        server.server_close()


_REPORT = textwrap.dedent(
    """
    import sys
    import sentry_sdk
    from simtrix.sentry import sentry_init

    assert sentry_init(dsn=sys.argv[1], environment="test")

    def look_up(phone_number):
        raise LookupError(f"nobody at {phone_number}")

    try:
        look_up("+48 600 111 222")
    except LookupError:
        sentry_sdk.capture_exception()
    sentry_sdk.flush(timeout=10)
    """
)


def test_with_a_dsn_errors_are_sent_without_phone_numbers(
    sentry_server: tuple[int, list[bytes]],
) -> None:
    port, received = sentry_server
    dsn = f"http://publickey@127.0.0.1:{port}/1"
    subprocess.run(
        [sys.executable, "-c", _REPORT, dsn],
        cwd=REPO,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "simtrix.settings"},
        check=True,
        timeout=60,
    )
    sent = b"".join(received).decode()
    assert "LookupError" in sent
    assert "look_up" in sent
    assert FILTERED in sent
    _no_number_left(sent)


@pytest.mark.parametrize(
    "text",
    [
        "caller 600 111 222 rang",
        "caller 600-111-222 rang",
        "caller 0048 600 111 222 rang",
        "office (22) 123 45 67 rang",
        "no match for 600111222",
    ],
)
def test_national_numbers_are_scrubbed_in_text(text: str) -> None:
    scrubbed = scrub_text(text)
    assert FILTERED in scrubbed
    assert not any(char.isdigit() for char in scrubbed.replace("(22)", "")), scrubbed
    assert scrubbed.startswith(text.split(maxsplit=1)[0])


@pytest.mark.parametrize(
    "text",
    [
        "sentry-sdk 2.75.0 on 127.0.0.1:8000",
        "took 1700000000.123 s",
        "2026-11-21T14:32:05.123456Z",
        "call 2026-11-21 14:32:05 lasted 95 s",
    ],
)
def test_versions_addresses_and_times_are_not_numbers(text: str) -> None:
    assert scrub_text(text) == text


@pytest.mark.parametrize(
    "text",
    [
        "a" * 100_000,
        "phone" * 20_000,
        "_phone_number" * 8_000,
        "token" * 20_000,
        "1 " * 50_000,
        "(1" * 50_000,
        "+1" * 50_000,
        "a=" * 50_000,
        "/rest/1/" * 12_500,
    ],
)
def test_a_100_kb_string_is_scrubbed_in_linear_time(text: str) -> None:
    # No clock: with the quadratic patterns this ran for minutes and the suite hung visibly.
    assert len(scrub_text(text)) > 0


SECRET_KEYS = ["access_token", "new_client_secret", "password", "new_webhook_url", "X-Api-Key"]


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_a_field_named_like_a_credential_is_blanked(key: str) -> None:
    scrubbed = scrub_phones({"data": {key: "opensesame", "rate_plan": "enterprise"}})
    assert scrubbed == {"data": {key: FILTERED, "rate_plan": "enterprise"}}


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("GET https://p.example/rest/1/whsecret42/crm.contact.list", "whsecret42"),
        ("new_webhook_url=https%3A%2F%2Fp.example%2Frest%2F1%2Fwhsecret42%2F&x=1", "whsecret42"),
        ("auth%5Baccess_token%5D=tok-4242&auth%5Bdomain%5D=p", "tok-4242"),
        ('{"refresh_token": "tok-4242", "expires": 3600}', "tok-4242"),
        ("grant_type=refresh_token&client_secret=cs-4242&refresh_token=rt-4242", "cs-4242"),
    ],
)
def test_credentials_in_text_are_masked(text: str, secret: str) -> None:
    assert secret not in scrub_text(text)


def test_an_outbound_requests_breadcrumb_keeps_no_query() -> None:
    crumb = {
        "type": "http",
        "category": "httplib",
        "data": {
            "url": "https://oauth.example/oauth/token/?client_secret=cs&refresh_token=rt",
            "http.method": "GET",
            "http.query": "client_secret=cs&refresh_token=rt",
            "http.fragment": "",
            "status_code": 200,
        },
    }
    assert before_breadcrumb(crumb, {})["data"] == {
        "url": "https://oauth.example/oauth/token/",
        "http.method": "GET",
        "status_code": 200,
    }


class _Envelopes(Transport):
    """Keeps what would be sent to Sentry, as the text it would be sent as."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[str] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        self.sent.append(envelope.serialize().decode())


@pytest.fixture
def sentry_envelopes() -> Iterator[list[str]]:
    """Sentry on, in this process (the Django integration sees the test client's requests),
    with every envelope kept; off again afterwards."""
    transport = _Envelopes()
    assert sentry_init(dsn="http://publickey@127.0.0.1:9/1", transport=transport)
    sentry_sdk.get_isolation_scope().clear_breadcrumbs()
    try:
        yield transport.sent
    finally:
        sentry_sdk.get_client().close()
        sentry_sdk.get_global_scope().set_client(None)  # off: a non-recording client


@pytest.fixture
def event_on_connection_save() -> Iterator[None]:
    """An event while a request saves the Bitrix24 connection: what an error there would send
    (the request's body, the breadcrumbs of its outbound requests)."""

    def capture(**kwargs: Any) -> None:
        sentry_sdk.capture_message("the connection was saved")

    post_save.connect(capture, sender=Bitrix24Connection, dispatch_uid="sentry-test")
    try:
        yield
    finally:
        post_save.disconnect(sender=Bitrix24Connection, dispatch_uid="sentry-test")


def _fails_with(url: str, token: str) -> None:
    raise RuntimeError("the portal refused")  # the secrets are only in the frame's locals


def _no_secret_in(sent: list[str], secrets: list[str]) -> str:
    text = "".join(sent)
    for secret in secrets:
        assert secret, "an empty secret proves nothing"
        assert secret not in text, secret
    return text


def test_an_admin_form_post_and_outbound_requests_reach_sentry_without_secrets(
    alpha: Tenant, alpha_portal: Any, sentry_envelopes: list[str], event_on_connection_save: None
) -> None:
    webhook = alpha_portal.add_webhook(5)
    webhook_secret = webhook.rstrip("/").rsplit("/", 1)[1]
    # Made at run time: the test's own source lines are part of the event (its context lines).
    typed_secret, client_secret, refresh_token = (uuid.uuid4().hex for _ in range(3))
    User.objects.create_superuser("alpha-admin", password="pw-alpha-1")
    client = Client(HTTP_HOST="alpha.localhost")
    client.post("/admin/login/", {"username": "alpha-admin", "password": "pw-alpha-1"})
    pk = Bitrix24Connection.objects.get().pk
    response = client.post(
        f"/admin/crm/bitrix24connection/{pk}/change/",
        {
            "auth_mode": "webhook",
            "new_webhook_url": webhook,
            "oauth_client_id": "",
            "new_client_secret": typed_secret,
            "oauth_token_url": "https://oauth.bitrix.info/oauth/token/",
            "rate_plan": "enterprise",
            "rate_limit_per_second": "",
            "rate_limit_burst": "",
            "lookup_budget_ms": "1200",
            "lookup_cache_ttl_s": "120",
        },
    )
    assert response.status_code == 302
    # Real outbound requests, as the client and the OAuth refresh make them.
    ca = alpha_portal.ca_cert_path
    requests.post(f"{webhook}profile.json", timeout=10, verify=ca)
    oauth_query = {"grant_type": "refresh_token", "client_secret": client_secret,
                   "refresh_token": refresh_token}  # fmt: skip
    requests.get(f"{alpha_portal.oauth_token_url}?{urlencode(oauth_query)}", timeout=10, verify=ca)
    try:
        _fails_with(webhook, refresh_token)
    except RuntimeError:
        sentry_sdk.capture_exception()
    sentry_sdk.flush()

    text = _no_secret_in(sentry_envelopes, [webhook_secret, typed_secret, client_secret,
                                            refresh_token])  # fmt: skip
    assert "the connection was saved" in text
    assert "the portal refused" in text
    assert '"new_webhook_url":"[Filtered]"' in text  # the body was sent, its secrets blanked
    assert '"rate_plan":"enterprise"' in text
    assert '"category":"httplib"' in text  # the outbound requests' crumbs were sent ...
    assert "/rest/5/****/profile.json" in text  # ... with the secret masked
    assert "/oauth/token/" in text
    assert "_fails_with" in text


def test_the_install_callbacks_tokens_never_reach_sentry(
    alpha: Tenant, alpha_portal: Any, sentry_envelopes: list[str], event_on_connection_save: None
) -> None:
    app = alpha_portal.add_oauth_app(scopes=["crm", "telephony", "user", "im", "task"])
    connection_set_oauth_app(
        client_id=app["client_id"],
        client_secret=app["client_secret"],
        token_url=alpha_portal.oauth_token_url,
    )
    fields = ["access_token", "refresh_token", "domain", "member_id", "application_token",
              "client_endpoint", "server_endpoint", "expires_in", "scope"]  # fmt: skip
    form = {f"auth[{name}]": str(app[name]) for name in fields}
    response = Client(HTTP_HOST="alpha.localhost").post("/bitrix24/install/", form)
    assert response.status_code == 200, response.content
    sentry_sdk.flush()

    conn = Bitrix24Connection.objects.get()
    text = _no_secret_in(
        sentry_envelopes,
        [app["access_token"], app["refresh_token"], app["client_secret"],
         app["application_token"], conn.oauth_access_token, conn.oauth_refresh_token],
    )  # fmt: skip
    assert "the connection was saved" in text
    assert '"auth[access_token]":"[Filtered]"' in text
