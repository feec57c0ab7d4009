"""Events of the sandbox portal: event.bind & co, outbound webhooks, deliveries to a local
handler, click-to-call (ONEXTERNALCALLSTART), ONAPPUNINSTALL and external lines.

A tiny HTTP server in the test is the event handler; it records what the portal POSTs.
"""

from __future__ import annotations

import re
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
import requests
import trustme

from bitrix24_sandbox import SandboxPortal
from bitrix24_sandbox.control import SandboxControlError
from bitrix24_sandbox.delivery import form_fields
from bitrix24_sandbox.phone import international_phone, phone_extension

APP_AUTH_KEYS = [
    "access_token",
    "expires_in",
    "scope",
    "domain",
    "server_endpoint",
    "status",
    "client_endpoint",
    "member_id",
    "refresh_token",
    "application_token",
]
REDUCED_AUTH_KEYS = [
    "domain",
    "server_endpoint",
    "client_endpoint",
    "member_id",
    "application_token",
]


class Receiver:
    """A local event handler: records every POST (raw body, headers, ordered form fields)."""

    def __init__(self, name: str = "alpha.localhost", tls: ssl.SSLContext | None = None) -> None:
        self.name = name
        self.scheme = "https" if tls else "http"
        self.hits: list[dict[str, Any]] = []
        self.status = 200
        self.delay = 0.0
        self.on_hit: Callable[[dict[str, Any]], None] | None = None
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                pairs = parse_qsl(raw, keep_blank_values=True)
                hit: dict[str, Any] = {
                    "path": self.path,
                    "headers": dict(self.headers),
                    "raw": raw,
                    "pairs": pairs,
                    "form": dict(pairs),
                }
                receiver.hits.append(hit)
                if receiver.on_hit is not None:
                    receiver.on_hit(hit)
                time.sleep(receiver.delay)
                body = b"ok"
                self.send_response(receiver.status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/bitrix24/events/") -> str:
        return f"{self.scheme}://{self.name}:{self.port}{path}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def events_portal() -> Iterator[SandboxPortal]:
    portal = SandboxPortal(seed=True, drain_per_second=None, bucket_size=None).start()
    yield portal
    portal.stop()


@pytest.fixture
def portal(events_portal: SandboxPortal) -> SandboxPortal:
    events_portal.reset()
    # Bindings and outbound webhooks survive reset (they are configuration): start clean.
    with events_portal.state.lock:
        events_portal.state.event_handlers.clear()
        events_portal.state.outbound_webhooks.clear()
    return events_portal


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    yield rec
    rec.stop()


@pytest.fixture
def http(portal: SandboxPortal) -> Iterator[requests.Session]:
    session = requests.Session()
    session.trust_env = False
    session.verify = portal.ca_cert_path
    yield session
    session.close()


def call(
    session: requests.Session, base: str, method: str, params: dict[str, Any] | None = None
) -> requests.Response:
    return session.post(base + method, json=params or {}, timeout=10)


def ok(
    session: requests.Session, base: str, method: str, params: dict[str, Any] | None = None
) -> Any:
    resp = call(session, base, method, params)
    assert resp.status_code == 200, resp.text
    return resp.json()["result"]


def err(resp: requests.Response, status: int, code: str, text: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["error"] == code, body
    if text is not None:
        assert body["error_description"] == text
    return body


class App:
    """An OAuth app of the portal and a shortcut to call REST methods with its token."""

    def __init__(self, portal: SandboxPortal, http: requests.Session, **kwargs: Any) -> None:
        self.info = portal.add_oauth_app(**kwargs)
        self.http = http
        self.rest = self.info["client_endpoint"]

    def call(self, method: str, **params: Any) -> requests.Response:
        return call(self.http, self.rest, method, {**params, "auth": self.info["access_token"]})

    def ok(self, method: str, **params: Any) -> Any:
        resp = self.call(method, **params)
        assert resp.status_code == 200, resp.text
        return resp.json()["result"]


def auth_of(form: dict[str, str]) -> dict[str, str]:
    return {k[5:-1]: v for k, v in form.items() if k.startswith("auth[")}


# --------------------------------------------------------------------------------------------
# event.bind / event.get / event.unbind


def test_bind_get_unbind(portal: SandboxPortal, http: requests.Session) -> None:
    app = App(portal, http, scopes=["crm", "telephony"])
    handler = "https://simtrix.example/bitrix24/events/"
    assert app.ok("event.bind", event="onCrmContactUpdate", handler=handler) is True
    assert app.ok("event.bind", EVENT="ONEXTERNALCALLSTART", HANDLER=handler, AUTH_TYPE=5)
    assert app.ok("event.bind", event="OnAppUninstall", handler=handler, event_type="offline")
    assert app.ok("event.get") == [
        {"event": "ONCRMCONTACTUPDATE", "handler": handler, "auth_type": "0", "offline": 0},
        {"event": "ONEXTERNALCALLSTART", "handler": handler, "auth_type": "5", "offline": 0},
        {"event": "ONAPPUNINSTALL", "connector_id": "", "offline": 1},
    ]
    # Bindings belong to the app; they are configuration and survive reset().
    assert App(portal, http, scopes=["crm"]).ok("event.get") == []
    portal.reset()
    assert len(app.ok("event.get")) == 3
    assert {h["EVENT"] for h in portal.control.event_handlers()} == {
        "ONCRMCONTACTUPDATE",
        "ONEXTERNALCALLSTART",
        "ONAPPUNINSTALL",
    }

    assert app.ok("event.unbind", event="oncrmcontactupdate", handler=handler) == {"count": 1}
    assert app.ok("event.unbind", event="ONCRMCONTACTUPDATE", handler=handler) == {"count": 0}
    assert app.ok("event.unbind", event="ONEXTERNALCALLSTART", handler=handler, auth_type=1) == {
        "count": 0
    }
    assert app.ok("event.unbind", event="ONAPPUNINSTALL", event_type="offline") == {"count": 1}
    assert app.ok("event.unbind", event="ONEXTERNALCALLSTART", handler=handler) == {"count": 1}
    assert app.ok("event.get") == []


def test_bind_errors(portal: SandboxPortal, http: requests.Session) -> None:
    app = App(portal, http, scopes=["crm"])
    handler = "https://simtrix.example/h"
    assert app.ok("event.bind", event="ONCRMLEADADD", handler=handler)
    err(
        app.call("event.bind", event="OnCrmLeadAdd", handler=handler),
        400,
        "ERROR_CORE",
        "Unable to set event handler: Handler already binded",
    )
    err(
        app.call("event.bind", event="ONNOSUCHEVENT", handler=handler),
        400,
        "ERROR_EVENT_NOT_FOUND",
        "Event not found",
    )
    # An event outside the app's scopes is "not found" for it.
    err(
        app.call("event.bind", event="ONEXTERNALCALLSTART", handler=handler),
        400,
        "ERROR_EVENT_NOT_FOUND",
    )
    body = err(
        app.call("event.bind", event="ONCRMLEADADD"),
        400,
        "ERROR_ARGUMENT",
        "Argument 'HANDLER' is null or empty",
    )
    assert body["argument"] == "HANDLER"
    err(
        app.call("event.bind", handler=handler),
        400,
        "ERROR_ARGUMENT",
        "Argument 'EVENT' is null or empty",
    )
    err(
        app.call("event.bind", event="ONCRMLEADADD", handler=handler, event_type="sometimes"),
        400,
        "ERROR_ARGUMENT",
        "Value must be one of {online|offline}",
    )
    err(
        app.call("event.bind", event="ONCRMLEADADD", handler="http://localhost:9/h"),
        400,
        "ERROR_WRONG_HANDLER_URL",
        "Wrong handler URL",
    )
    err(
        app.call("event.bind", event="ONCRMLEADADD", handler="ftp://simtrix.example/h"),
        400,
        "ERROR_UNSUPPORTED_PROTOCOL",
        "Unsupported handler protocol",
    )
    err(app.call("event.unbind", event="ONCRMLEADADD"), 400, "ERROR_ARGUMENT")

    # Webhooks are not an application context.
    hook = portal.webhook_url()
    for method in ("event.bind", "event.get", "event.unbind", "events"):
        err(
            call(http, hook, method, {"event": "ONCRMLEADADD", "handler": handler}),
            403,
            "WRONG_AUTH_TYPE",
            "Current authorization type is denied for this method",
        )

    # A non-admin's app binds only for its own user and no offline events.
    user_app = App(portal, http, scopes=["crm"], user_id=5)
    denied = "Access denied! Event binding with AUTH_TYPE requires administrator access rights"
    err(
        user_app.call("event.bind", event="ONCRMLEADADD", handler=handler, auth_type=1),
        403,
        "ACCESS_DENIED",
        denied,
    )
    err(
        user_app.call("event.bind", event="ONCRMLEADADD", event_type="offline"),
        403,
        "ACCESS_DENIED",
    )
    assert user_app.ok("event.bind", event="ONCRMLEADADD", handler=handler)
    assert user_app.ok("event.get")[0]["auth_type"] == "5"
    assert "ONEXTERNALCALLSTART" not in app.ok("events")
    assert {"ONCRMCONTACTUPDATE", "ONAPPUNINSTALL"} <= set(app.ok("events"))


# --------------------------------------------------------------------------------------------
# Deliveries


def test_form_fields_flatten_like_http_build_query() -> None:
    payload = {
        "event": "X",
        "data": {"FIELDS": {"ID": 12}, "LIST": ["a", {"B": 1}], "NONE": None, "YES": True},
        "flag": False,
    }
    assert form_fields(payload) == {
        "event": "X",
        "data[FIELDS][ID]": "12",
        "data[LIST][0]": "a",
        "data[LIST][1][B]": "1",
        "data[YES]": "1",
        "flag": "0",
    }


def test_crm_update_is_delivered_with_the_apps_auth(
    portal: SandboxPortal, http: requests.Session, receiver: Receiver
) -> None:
    app = App(portal, http, scopes=["crm", "telephony"])
    assert app.ok("event.bind", event="ONCRMCONTACTUPDATE", handler=receiver.url())
    [row] = portal.event_handlers()
    phone_id = portal.control.entity("contact", 12)["PHONE"][0]["ID"]

    # "A user edited this contact's phone in Bitrix24": the control API, not SIMtrix.
    portal.control.update_entity("contact", 12, PHONE=[{"ID": phone_id, "VALUE": "+48600999000"}])
    [delivery] = portal.control.wait_deliveries(timeout=10)
    [hit] = receiver.hits
    assert hit["path"] == "/bitrix24/events/"
    assert hit["headers"]["Host"] == f"alpha.localhost:{receiver.port}"  # .localhost -> 127.0.0.1
    assert hit["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    assert hit["raw"].startswith(f"event=ONCRMCONTACTUPDATE&event_handler_id={row['ID']}&")
    assert "data%5BFIELDS%5D%5BID%5D=12" in hit["raw"]  # PHP-style keys, brackets encoded
    keys = [k for k, _ in hit["pairs"]]
    assert keys == ["event", "event_handler_id", "data[FIELDS][ID]", "ts"] + [
        f"auth[{k}]" for k in APP_AUTH_KEYS
    ]
    form = hit["form"]
    assert re.fullmatch(r"\d{10}", form["ts"])
    auth = auth_of(form)
    assert auth["application_token"] == app.info["application_token"]
    assert (auth["domain"], auth["member_id"]) == (portal.domain, portal.state.member_id)
    assert auth["client_endpoint"] == portal.url + "/rest/"
    assert (auth["status"], auth["expires_in"], auth["scope"]) == ("L", "3600", "crm,telephony")
    # The tokens in the event are real ones of the app.
    got = ok(
        http,
        auth["client_endpoint"],
        "crm.contact.get",
        {"id": form["data[FIELDS][ID]"], "auth": auth["access_token"]},
    )
    assert got["PHONE"][0]["VALUE"] == "+48600999000"

    assert delivery["fields"] == form
    assert (delivery["state"], delivery["status_code"], delivery["error"]) == (
        "delivered",
        200,
        None,
    )
    assert (delivery["kind"], delivery["client_id"]) == ("app", app.info["client_id"])
    assert delivery["event_handler_id"] == row["ID"]


def test_rest_and_control_writes_fire_crm_events(
    portal: SandboxPortal, http: requests.Session, receiver: Receiver
) -> None:
    app = App(portal, http, scopes=["crm"])
    for name in (
        "ONCRMLEADADD",
        "ONCRMLEADUPDATE",
        "ONCRMLEADDELETE",
        "ONCRMCOMPANYUPDATE",
        "ONCRMCONTACTADD",
        "ONCRMCONTACTDELETE",
    ):
        app.ok("event.bind", event=name, handler=receiver.url())
    hook = portal.webhook_url()
    lead = ok(http, hook, "crm.lead.add", {"fields": {"TITLE": "x"}})
    ok(http, hook, "crm.lead.update", {"id": lead, "fields": {"TITLE": "y"}})
    ok(http, hook, "crm.item.update", {"entityTypeId": 4, "id": 21, "fields": {"title": "Lex"}})
    ok(http, hook, "crm.lead.delete", {"id": lead})
    ok(http, hook, "crm.contact.update", {"id": 12, "fields": {"NAME": "A"}})  # not bound
    contact = portal.control.add_entity("contact", NAME="New")
    portal.control.delete_entity("contact", contact)
    portal.wait_deliveries(10)
    assert [(h["form"]["event"], h["form"]["data[FIELDS][ID]"]) for h in receiver.hits] == [
        ("ONCRMLEADADD", str(lead)),
        ("ONCRMLEADUPDATE", str(lead)),
        ("ONCRMCOMPANYUPDATE", "21"),
        ("ONCRMLEADDELETE", str(lead)),
        ("ONCRMCONTACTADD", str(contact)),
        ("ONCRMCONTACTDELETE", str(contact)),
    ]
    with pytest.raises(SandboxControlError, match="404"):
        portal.control.update_entity("contact", 99999, NAME="x")


def test_outbound_webhook_gets_reduced_auth(
    portal: SandboxPortal, http: requests.Session, receiver: Receiver
) -> None:
    control = portal.control
    created = control.add_outbound_webhook(receiver.url("/hook"), ["onCrmLeadAdd"])
    assert re.fullmatch(r"[0-9a-f]{32}", created["application_token"])
    assert created["events"] == ["ONCRMLEADADD"]
    assert [w["ID"] for w in control.outbound_webhooks()] == [created["id"]]
    ok(http, portal.webhook_url(), "crm.lead.add", {"fields": {"TITLE": "from the form"}})
    [delivery] = control.wait_deliveries()
    [hit] = receiver.hits
    assert [k for k, _ in hit["pairs"] if k.startswith("auth[")] == [
        f"auth[{k}]" for k in REDUCED_AUTH_KEYS
    ]
    assert auth_of(hit["form"])["application_token"] == created["application_token"]
    assert hit["form"]["event_handler_id"] == str(created["handler_ids"]["ONCRMLEADADD"])
    assert (delivery["kind"], delivery["outbound_webhook_id"]) == (
        "outbound_webhook",
        created["id"],
    )

    with pytest.raises(SandboxControlError, match="400"):
        control.add_outbound_webhook(receiver.url(), ["ONNOTHING"])
    control.delete_outbound_webhook(created["id"])
    control.clear_deliveries()
    ok(http, portal.webhook_url(), "crm.lead.add", {"fields": {"TITLE": "again"}})
    assert control.wait_deliveries() == []
    assert control.event_handlers() == []


def test_failed_slow_and_https_deliveries(
    portal: SandboxPortal,
    http: requests.Session,
    receiver: Receiver,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ca = trustme.CA()
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("beta.localhost").configure_cert(tls)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    secure = Receiver("beta.localhost", tls)
    try:
        app = App(portal, http, scopes=["crm"])
        receiver.status = 500
        for url in (receiver.url(), secure.url(), "http://gone.localhost:9/h"):
            app.ok("event.bind", event="ONCRMDEALUPDATE", handler=url)
        ok(http, portal.webhook_url(), "crm.deal.update", {"id": 57, "fields": {"TITLE": "t"}})
        by_url = {d["handler"]: d for d in portal.wait_deliveries(15)}
        assert by_url[receiver.url()]["status_code"] == 500  # recorded, not retried
        assert len(receiver.hits) == 1
        assert by_url[secure.url()]["status_code"] == 200
        assert secure.hits[0]["form"]["data[FIELDS][ID]"] == "57"
        refused = by_url["http://gone.localhost:9/h"]
        assert (refused["state"], refused["status_code"]) == ("failed", None)
        assert "Connection" in refused["error"] or "refused" in refused["error"]

        # The queue does not block the REST call; a slow handler times out.
        portal.control.clear_deliveries()
        receiver.status, receiver.delay = 200, 1.0
        portal.state.delivery_queue.timeout = 0.3
        started = time.monotonic()
        ok(http, portal.webhook_url(), "crm.deal.update", {"id": 57, "fields": {"TITLE": "u"}})
        assert time.monotonic() - started < 0.5
        slow = portal.wait_deliveries(10)[0]
        assert slow["status_code"] is None
        assert "timed out" in slow["error"]
    finally:
        portal.state.delivery_queue.timeout = 10.0
        secure.stop()


# --------------------------------------------------------------------------------------------
# Click-to-call: the portal registers the call, then ONEXTERNALCALLSTART


def test_click_to_call_registers_once_then_delivers(
    portal: SandboxPortal, http: requests.Session, receiver: Receiver
) -> None:
    control = portal.control
    with pytest.raises(SandboxControlError, match="LINE_NOT_FOUND"):
        control.click_to_call(5, "+48600111222")  # nobody is an outgoing line yet
    app = App(portal, http, scopes=["telephony", "crm"])
    app.ok("event.bind", event="OnExternalCallStart", handler=receiver.url())
    hook = control.add_outbound_webhook(receiver.url("/outbound"), ["ONEXTERNALCALLSTART"])
    seen_active: list[bool] = []
    # The handler runs while the call is already registered by the portal.
    receiver.on_hit = lambda hit: seen_active.append(
        hit["form"]["data[CALL_ID]"] in portal.state.active_calls
    )

    clicked = control.click_to_call(5, "+48600111222")
    call_id = clicked["call_id"]
    assert re.fullmatch(r"externalCall\.[0-9a-f]{32}\.\d{10}", call_id)
    assert clicked["drained"] is True
    assert (clicked["call"]["CRM_ENTITY_TYPE"], clicked["call"]["CRM_ENTITY_ID"]) == ("CONTACT", 12)
    assert [d["kind"] for d in clicked["deliveries"]] == ["app", "outbound_webhook"]
    assert all(d["status_code"] == 200 for d in clicked["deliveries"])
    assert seen_active == [True, True]
    app_hit, hook_hit = receiver.hits
    data = {k[5:-1]: v for k, v in app_hit["form"].items() if k.startswith("data[")}
    assert data == {
        "PHONE_NUMBER": "+48600111222",
        "PHONE_NUMBER_INTERNATIONAL": "+48600111222",
        "EXTENSION": "",
        "USER_ID": "5",
        "CALL_LIST_ID": "0",
        "LINE_NUMBER": "",
        "IS_MOBILE": "0",
        "CALL_ID": call_id,
        "CRM_ENTITY_TYPE": "CONTACT",
        "CRM_ENTITY_ID": "12",
    }
    assert list(auth_of(app_hit["form"])) == APP_AUTH_KEYS
    assert list(auth_of(hook_hit["form"])) == REDUCED_AUTH_KEYS
    assert auth_of(hook_hit["form"])["application_token"] == hook["application_token"]

    [active] = control.calls()["active"]
    assert (active["CALL_ID"], active["REGISTERED_BY"], active["TYPE"]) == (call_id, "portal", 1)
    assert active["APP_KEY"] == app.info["client_id"]
    assert portal.registrations() == [
        {**portal.registrations()[0], "CALL_ID": call_id, "REGISTERED_BY": "portal", "NEW": True}
    ]
    # SIMtrix dials and finishes that CALL_ID; it never registers the call again.
    stat = app.ok("telephony.externalcall.finish", CALL_ID=call_id, USER_ID=5, DURATION=42)
    assert (stat["CALL_ID"], stat["CRM_ENTITY_ID"], stat["INCOMING"]) == (call_id, 12, "1")
    assert stat["REST_APP_ID"] == str(app.info["app_id"])
    assert ok(http, portal.webhook_url(), "crm.activity.get", {"id": stat["CRM_ACTIVITY_ID"]})
    assert len(portal.registrations()) == 1
    assert portal.state.query_requests("telephony.externalcall.register") == []


def test_a_second_register_after_click_to_call_is_visible(
    portal: SandboxPortal, http: requests.Session, receiver: Receiver
) -> None:
    app = App(portal, http, scopes=["telephony", "crm"])
    app.ok("event.bind", event="ONEXTERNALCALLSTART", handler=receiver.url())
    call_id = portal.click_to_call(5, "+48 600 111 222", entity_type="CRM_CONTACT", entity_id=12)[
        "call_id"
    ]
    again = app.ok(
        "telephony.externalcall.register", USER_ID=5, PHONE_NUMBER="+48600111222", TYPE=1
    )
    assert again["CALL_ID"] == call_id  # within 30 minutes: the same call
    assert [(r["REGISTERED_BY"], r["NEW"]) for r in portal.registrations()] == [
        ("portal", True),
        ("rest", False),
    ]
    assert portal.state.active_calls[call_id]["REREGISTRATIONS"][0]["BY"] == "rest"


def test_click_to_call_on_a_line_without_crm_auto_create(
    portal: SandboxPortal, http: requests.Session, receiver: Receiver
) -> None:
    app = App(portal, http, scopes=["telephony"])
    app.ok("event.bind", event="ONEXTERNALCALLSTART", handler=receiver.url())
    app.ok("telephony.externalLine.add", NUMBER="221000100", NAME="Office", CRM_AUTO_CREATE="N")
    clicked = portal.click_to_call(3, "601 999 888 #12", line_number="221000100")
    assert clicked["call"]["CRM_CREATED_LEAD"] is None  # the line does not create leads
    form = receiver.hits[0]["form"]
    assert (form["data[LINE_NUMBER]"], form["data[EXTENSION]"]) == ("221000100", "12")
    assert form["data[PHONE_NUMBER_INTERNATIONAL]"] == "+48601999888"
    assert form["data[CRM_ENTITY_TYPE]"] == ""
    assert "data[CRM_ENTITY_ID]" not in form  # null is not sent (http_build_query)
    assert portal.state.active_calls[clicked["call_id"]]["LINE_NUMBER"] == "221000100"
    # The default line creates the lead, like telephony.externalCall.register with CRM_CREATE.
    lead_call = portal.click_to_call(3, "+48 601 999 777")["call"]
    assert lead_call["CRM_ENTITY_TYPE"] == "LEAD"
    assert lead_call["CRM_CREATED_LEAD"]


def test_phone_helpers_for_the_event() -> None:
    assert international_phone("600 111 222") == "+48600111222"
    assert international_phone("0048 600-111-444") == "+48600111444"
    assert international_phone("+49 30 1234567 ext. 5") == "+49301234567"
    assert phone_extension("+49 30 1234567 ext. 5") == "5"
    assert phone_extension("+48600111222") == ""


# --------------------------------------------------------------------------------------------
# ONAPPUNINSTALL


def test_uninstall_sends_onappuninstall_then_removes_the_app(
    portal: SandboxPortal, http: requests.Session, receiver: Receiver
) -> None:
    app = App(portal, http, scopes=["crm", "telephony"])
    other = App(portal, http, scopes=["crm"])
    app.ok("event.bind", event="ONAPPUNINSTALL", handler=receiver.url("/uninstall"))
    app.ok("event.bind", event="ONCRMCONTACTUPDATE", handler=receiver.url())
    other.ok("event.bind", event="ONAPPUNINSTALL", handler=receiver.url("/other"))
    app.ok("telephony.externalLine.add", NUMBER="100")

    result = portal.control.uninstall_app(app.info["client_id"])
    assert (result["removed_handlers"], result["drained"]) == (2, True)
    [hit] = receiver.hits  # only the uninstalled app's handler
    assert hit["path"] == "/uninstall"
    form = hit["form"]
    assert (form["event"], form["data[LANGUAGE_ID]"], form["data[CLEAN]"]) == (
        "ONAPPUNINSTALL",
        "en",
        "0",
    )
    assert list(auth_of(form)) == REDUCED_AUTH_KEYS  # sent without tokens
    assert auth_of(form)["application_token"] == app.info["application_token"]

    err(app.call("crm.contact.get", id=12), 401, "invalid_token")
    assert portal.external_lines() == []
    assert [h["CLIENT_ID"] for h in portal.event_handlers()] == [other.info["client_id"]]
    portal.update_entity("CONTACT", 12, {"NAME": "Anna"})
    assert portal.wait_deliveries(5) == result["deliveries"]
    with pytest.raises(SandboxControlError, match="404"):
        portal.control.uninstall_app(app.info["client_id"])


# --------------------------------------------------------------------------------------------
# External lines


def test_external_lines_crud_and_errors(portal: SandboxPortal, http: requests.Session) -> None:
    app = App(portal, http, scopes=["telephony"])
    added = app.ok("telephony.externalLine.add", NUMBER=" 14151234567 ", NAME="Support Line")
    assert isinstance(added["ID"], int)
    err(
        app.call("telephony.externalLine.add", NUMBER="14151234567"), 400, "", "Line already exists"
    )
    err(app.call("telephony.externalLine.add", NAME="x"), 400, "", "NUMBER should not be empty")
    app.ok("telephony.externalLine.add", NUMBER="14157654321", CRM_AUTO_CREATE="N")
    assert app.ok("telephony.externalLine.get") == [
        {"NUMBER": "14151234567", "NAME": "Support Line", "CRM_AUTO_CREATE": "Y"},
        {"NUMBER": "14157654321", "NAME": None, "CRM_AUTO_CREATE": "N"},
    ]
    updated = app.ok("telephony.externalLine.update", NUMBER="14151234567", CRM_AUTO_CREATE="N")
    assert updated == {"ID": str(added["ID"])}
    err(
        app.call("telephony.externalLine.update", NUMBER="14151234567"),
        400,
        "",
        "There are no fields to update",
    )
    err(
        app.call("telephony.externalLine.update", NUMBER="999", NAME="x"),
        400,
        "",
        "Could not find line with number 999",
    )
    assert app.ok("telephony.externalLine.delete", NUMBER="14157654321") == []
    err(
        app.call("telephony.externalLine.delete", NUMBER="14157654321"),
        400,
        "",
        "Could not find line with number 14157654321",
    )
    err(app.call("telephony.externalLine.delete"), 400, "", "NUMBER should not be empty")

    # Lines are the app's; webhook calls share one "webhook" owner.
    hook = portal.webhook_url()
    assert ok(http, hook, "telephony.externalLine.get") == []
    assert ok(http, hook, "telephony.externalLine.add", {"NUMBER": "14151234567"})
    assert App(portal, http, scopes=["telephony"]).ok("telephony.externalLine.get") == []
    lines = portal.control.external_lines()
    assert [(line["NUMBER"], line["APP_KEY"]) for line in lines] == [
        ("14151234567", app.info["client_id"]),
        ("14151234567", "webhook"),
    ]
    portal.control.set_webhook_telephony_denied(True)
    err(call(http, hook, "telephony.externalLine.get"), 403, "WRONG_AUTH_TYPE")
    assert app.ok("telephony.externalLine.get")
    err(
        App(portal, http, scopes=["crm"]).call("telephony.externalLine.get"),
        401,
        "insufficient_scope",
    )
    portal.control.reset()
    assert portal.control.external_lines() == []  # lines are data: reset clears them


def test_handlers_and_webhooks_are_persisted(tmp_path: Path) -> None:
    state_file = str(tmp_path / "portal.json")
    with SandboxPortal(drain_per_second=None, state_file=state_file) as first:
        first.add_outbound_webhook("http://simtrix.localhost:8000/h", ["ONEXTERNALCALLSTART"])
        handlers = first.event_handlers()
        webhooks = first.outbound_webhooks()
    with SandboxPortal(drain_per_second=None, state_file=state_file) as second:
        assert second.event_handlers() == handlers
        assert second.outbound_webhooks() == webhooks
        again = second.add_outbound_webhook("http://simtrix.localhost:8000/h", ["ONCRMLEADADD"])
        assert again["ID"] == webhooks[0]["ID"] + 1
        assert again["HANDLER_IDS"]["ONCRMLEADADD"] == handlers[0]["ID"] + 1
