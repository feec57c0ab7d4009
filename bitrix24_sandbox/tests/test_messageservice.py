"""SMS providers of the sandbox portal: messageservice.sender.*, a user sending an SMS through
a provider (the portal POSTs it to the app's HANDLER) and messageservice.message.status.update.

Real HTTP to the sandbox; a tiny local HTTP server (test_events.Receiver) is the HANDLER.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from bitrix24_sandbox import SandboxPortal
from bitrix24_sandbox.control import SandboxControlError
from bitrix24_sandbox.tests.test_events import (
    APP_AUTH_KEYS,
    App,
    Receiver,
    auth_of,
    call,
    err,
)

# An SMS handler's auth block: an app event's, plus the sending user after member_id.
SMS_AUTH_KEYS = [*APP_AUTH_KEYS[:8], "user_id", *APP_AUTH_KEYS[8:]]
APP_CONTEXT = "Access denied! Application context required"
CODE = "simtrix.sms"


@pytest.fixture(scope="module")
def sms_portal() -> Iterator[SandboxPortal]:
    portal = SandboxPortal(seed=True, drain_per_second=None, bucket_size=None).start()
    yield portal
    portal.stop()


@pytest.fixture
def portal(sms_portal: SandboxPortal) -> SandboxPortal:
    sms_portal.reset()
    # Providers and bindings survive reset (they are configuration): start clean.
    with sms_portal.state.lock:
        sms_portal.state.sms_senders.clear()
        sms_portal.state.event_handlers.clear()
    return sms_portal


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


def sms_app(portal: SandboxPortal, http: requests.Session, **kwargs: Any) -> App:
    kwargs.setdefault("scopes", ["messageservice", "user", "crm"])
    return App(portal, http, **kwargs)


def add_sender(app: App, handler: str, code: str = CODE, **extra: Any) -> None:
    params = {"CODE": code, "TYPE": "SMS", "HANDLER": handler, "NAME": "SIMtrix SMS", **extra}
    assert app.ok("messageservice.sender.add", **params) is True


def status_update(
    app: App, message_id: str, status: str | None, code: str = CODE
) -> requests.Response:
    return app.call(
        "messageservice.message.status.update", CODE=code, MESSAGE_ID=message_id, STATUS=status
    )


# --------------------------------------------------------------------------------------------
# Providers


def test_sender_add_list_update_delete(portal: SandboxPortal, http: requests.Session) -> None:
    app = sms_app(portal, http)
    handler = "https://simtrix.example/bitrix24/sms/"
    # Parameter names are case-insensitive (array_change_key_case).
    assert app.ok(
        "messageservice.sender.add", code=CODE, type="SMS", handler=handler, name="SIMtrix"
    )
    assert app.ok("messageservice.sender.list") == [CODE]
    err(
        app.call("messageservice.sender.add", CODE=CODE, TYPE="SMS", HANDLER=handler, NAME="x"),
        400,
        "ERROR_SENDER_ALREADY_INSTALLED",
        "Sender already installed!",
    )
    add_sender(app, handler, "Second-1_a.b", NAME={"en": "Second", "pl": "Drugi"})
    assert app.ok("messageservice.sender.list") == [CODE, "Second-1_a.b"]

    # Codes are per app: another app may register the same one and sees only its own.
    other = sms_app(portal, http)
    assert other.ok("messageservice.sender.list") == []
    add_sender(other, "https://other.example/sms", CODE)
    assert other.ok("messageservice.sender.list") == [CODE]
    senders = portal.control.sms_senders()
    assert [(s["CLIENT_ID"], s["CODE"]) for s in senders] == [
        (app.info["client_id"], CODE),
        (app.info["client_id"], "Second-1_a.b"),
        (other.info["client_id"], CODE),
    ]
    assert senders[0]["HANDLER"] == handler
    assert (senders[0]["TYPE"], senders[0]["AUTHOR_ID"]) == ("SMS", 1)
    assert senders[1]["NAME"] == {"en": "Second", "pl": "Drugi"}

    new_handler = "https://simtrix.example/bitrix24/sms/v2/"
    assert app.ok("messageservice.sender.update", CODE=CODE, HANDLER=new_handler, NAME="New")
    mine = next(s for s in portal.sms_senders() if s["CLIENT_ID"] == app.info["client_id"])
    assert (mine["HANDLER"], mine["NAME"], mine["DESCRIPTION"]) == (new_handler, "New", "")
    err(
        app.call("messageservice.sender.update", HANDLER=new_handler),
        400,
        "ERROR_SENDER_CODE_REQUIRED",
        "CODE is required!",
    )
    err(
        app.call("messageservice.sender.update", CODE=CODE),
        400,
        "ERROR_SENDER_OTHER_PARAMS_REQUIRED",
        "At least one other parameter is required!",
    )
    err(
        app.call("messageservice.sender.update", CODE="nope", NAME="x"),
        400,
        "ERROR_SENDER_NOT_FOUND",
        "Sender not found!",
    )
    err(
        app.call("messageservice.sender.update", CODE=CODE, HANDLER="http://localhost/x"),
        400,
        "ERROR_WRONG_HANDLER_URL",
    )

    assert app.ok("messageservice.sender.delete", code=CODE) is True
    assert app.ok("messageservice.sender.list") == ["Second-1_a.b"]
    assert other.ok("messageservice.sender.list") == [CODE]  # the other app's one stays
    err(
        app.call("messageservice.sender.delete", CODE=CODE),
        400,
        "ERROR_SENDER_NOT_FOUND",
        "Sender not found!",
    )
    err(
        app.call("messageservice.sender.delete"),
        400,
        "ERROR_SENDER_VALIDATION_FAILURE",
        "Empty sender code!",
    )
    err(
        app.call("messageservice.sender.delete", CODE="a b"),
        400,
        "ERROR_SENDER_VALIDATION_FAILURE",
        "Wrong sender code!",
    )


@pytest.mark.parametrize(
    ("params", "code", "text"),
    [
        ({}, "ERROR_SENDER_VALIDATION_FAILURE", "Empty data!"),
        ({"TYPE": "SMS", "NAME": "x"}, "ERROR_SENDER_VALIDATION_FAILURE", "Empty sender code!"),
        ({"CODE": "0", "NAME": "x"}, "ERROR_SENDER_VALIDATION_FAILURE", "Empty sender code!"),
        ({"CODE": "sms code"}, "ERROR_SENDER_VALIDATION_FAILURE", "Wrong sender code!"),
        ({"CODE": "smsówka"}, "ERROR_SENDER_VALIDATION_FAILURE", "Wrong sender code!"),
        ({"CODE": "sms/1"}, "ERROR_SENDER_VALIDATION_FAILURE", "Wrong sender code!"),
        # HANDLER is checked right after CODE (HandlerHelper::checkCallback).
        ({"CODE": "ok", "NAME": "x"}, "ERROR_WRONG_HANDLER_URL", "Wrong handler URL"),
        (
            {"CODE": "ok", "HANDLER": "http://localhost:8000/sms"},
            "ERROR_WRONG_HANDLER_URL",
            "Wrong handler URL",
        ),
        (
            {"CODE": "ok", "HANDLER": "ftp://simtrix.example/sms"},
            "ERROR_UNSUPPORTED_PROTOCOL",
            "Unsupported handler protocol",
        ),
        (
            {"CODE": "ok", "HANDLER": "https://simtrix.example/sms", "TYPE": "SMS"},
            "ERROR_SENDER_VALIDATION_FAILURE",
            "Empty sender NAME!",
        ),
        (
            {"CODE": "ok", "HANDLER": "https://simtrix.example/sms", "NAME": "x"},
            "ERROR_SENDER_VALIDATION_FAILURE",
            "Empty sender message TYPE!",
        ),
        (
            {"CODE": "ok", "HANDLER": "https://simtrix.example/sms", "NAME": "x", "TYPE": "MMS"},
            "ERROR_SENDER_VALIDATION_FAILURE",
            "Unknown sender message TYPE!",
        ),
        (
            {"CODE": "ok", "HANDLER": "https://simtrix.example/sms", "NAME": "x", "TYPE": "sms"},
            "ERROR_SENDER_VALIDATION_FAILURE",
            "Unknown sender message TYPE!",
        ),
    ],
)
def test_sender_add_validation(
    portal: SandboxPortal, http: requests.Session, params: dict[str, Any], code: str, text: str
) -> None:
    app = sms_app(portal, http)
    err(app.call("messageservice.sender.add", **params), 400, code, text)
    assert portal.sms_senders() == []


def test_webhooks_non_admins_and_missing_scope_are_refused(
    portal: SandboxPortal, http: requests.Session
) -> None:
    handler = "https://simtrix.example/sms"
    full = {"CODE": CODE, "TYPE": "SMS", "HANDLER": handler, "NAME": "x"}
    methods = {
        "messageservice.sender.add": full,
        "messageservice.sender.list": {},
        "messageservice.sender.update": {"CODE": CODE, "NAME": "y"},
        "messageservice.sender.delete": {"CODE": CODE},
        "messageservice.message.status.update": {
            "CODE": CODE,
            "MESSAGE_ID": "0" * 32,
            "STATUS": "sent",
        },
    }
    # A webhook (even the admin's, with the messageservice scope) is no application context.
    hook = portal.webhook_url()
    for method, params in methods.items():
        err(call(http, hook, method, params), 403, "ACCESS_DENIED", APP_CONTEXT)

    # An app acting as a non-admin user cannot manage providers.
    user_app = sms_app(portal, http, user_id=5)
    for method in list(methods)[:4]:
        err(user_app.call(method, **methods[method]), 403, "ACCESS_DENIED", "Access denied!")
    assert portal.sms_senders() == []

    no_scope = App(portal, http, scopes=["crm"])
    err(no_scope.call("messageservice.sender.list"), 401, "insufficient_scope")


# --------------------------------------------------------------------------------------------
# Sending: the portal POSTs the message to the provider's HANDLER


def test_send_sms_from_a_crm_card_posts_the_documented_fields(
    portal: SandboxPortal, http: requests.Session, receiver: Receiver
) -> None:
    app = sms_app(portal, http)
    add_sender(app, receiver.url("/sms"))
    sent = portal.control.send_sms(
        CODE,
        "+48600111222",
        "Zażółć gęślą jaźń & co",
        user_id=5,
        module_id="crm",
        entity_type="CONTACT",
        entity_id=12,
    )
    message_id = sent["message_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", message_id)
    assert sent["drained"] is True
    [delivery] = sent["deliveries"]
    assert (delivery["kind"], delivery["status_code"], delivery["state"]) == (
        "sms",
        200,
        "delivered",
    )
    assert (delivery["message_id"], delivery["code"]) == (message_id, CODE)

    [hit] = receiver.hits
    assert hit["path"] == "/sms"
    assert hit["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    form = hit["form"]
    body = {k: v for k, v in form.items() if not k.startswith("auth[")}
    assert body == {
        "type": "SMS",
        "code": CODE,
        "message_id": message_id,
        "message_to": "+48600111222",
        "message_body": "Zażółć gęślą jaźń & co",
        "properties[phone_number]": "+48600111222",
        "properties[message_text]": "Zażółć gęślą jaźń & co",
        "module_id": "crm",
        "bindings[0][OWNER_TYPE_ID]": "3",
        "bindings[0][OWNER_ID]": "12",
        "ts": delivery["ts"],
    }
    assert re.fullmatch(r"\d{10}", form["ts"])
    auth = auth_of(form)
    assert list(auth) == SMS_AUTH_KEYS
    assert auth["application_token"] == app.info["application_token"]
    assert (auth["user_id"], auth["member_id"]) == ("5", portal.state.member_id)
    assert auth["domain"] == portal.domain
    # The tokens act as the sending user.
    me = call(http, auth["client_endpoint"], "user.current", {"auth": auth["access_token"]})
    assert me.json()["result"]["ID"] == "5"
    refresh = {
        "grant_type": "refresh_token",
        "client_id": app.info["client_id"],
        "client_secret": app.info["client_secret"],
        "refresh_token": auth["refresh_token"],
    }
    refreshed = http.get(portal.oauth_token_url, params=refresh).json()
    assert refreshed["user_id"] == 5  # and so do the refreshed ones
    me = call(http, auth["client_endpoint"], "user.current", {"auth": refreshed["access_token"]})
    assert me.json()["result"]["ID"] == "5"

    [message] = portal.control.sms_messages()
    assert {k: message[k] for k in ("MESSAGE_ID", "CODE", "CLIENT_ID", "AUTHOR_ID")} == {
        "MESSAGE_ID": message_id,
        "CODE": CODE,
        "CLIENT_ID": app.info["client_id"],
        "AUTHOR_ID": 5,
    }
    assert (message["MESSAGE_TO"], message["MESSAGE_BODY"]) == (
        "+48600111222",
        "Zażółć gęślą jaźń & co",
    )
    assert message["MESSAGE_FROM"] == f"{app.info['client_id']}|{CODE}"
    assert (message["STATUS"], message["STATUS_HISTORY"]) == ("queued", ["queued"])
    assert (message["ENTITY_TYPE"], message["ENTITY_ID"]) == ("CONTACT", 12)
    assert sent["message"] == message


@pytest.mark.parametrize(
    "case",
    [
        ("DEAL", 5, "CCrmDocumentDeal"),
        ("LEAD", 3, "CCrmDocumentLead"),
        ("crm_company", 4, "CCrmDocumentCompany"),
        ("CONTACT", 12, "CCrmDocumentContact"),
    ],
)
def test_send_sms_from_a_workflow_posts_the_document(
    portal: SandboxPortal, http: requests.Session, receiver: Receiver, case: tuple[str, int, str]
) -> None:
    entity_type, entity_id, document = case
    app = sms_app(portal, http)
    add_sender(app, receiver.url())
    sent = portal.send_sms(CODE, "+48600111222", "Hi", entity_type=entity_type, entity_id=entity_id)
    assert [d["status_code"] for d in sent["deliveries"]] == [200]
    form = receiver.hits[0]["form"]
    etype = entity_type.upper().removeprefix("CRM_")
    assert form["module_id"] == "bizproc"
    assert re.fullmatch(r"[0-9a-f]{14}\.\d{8}", form["workflow_id"])
    assert [form[f"document_id[{i}]"] for i in range(3)] == [
        "crm",
        document,
        f"{etype}_{entity_id}",
    ]
    assert [form[f"document_type[{i}]"] for i in range(3)] == ["crm", document, etype]
    assert not any(k.startswith("bindings") for k in form)
    assert auth_of(form)["user_id"] == "1"  # user_id defaults to the admin
    assert sent["message"]["WORKFLOW_ID"] == form["workflow_id"]


def test_send_sms_picks_the_provider_and_reports_errors(
    portal: SandboxPortal, http: requests.Session, receiver: Receiver
) -> None:
    control = portal.control
    with pytest.raises(SandboxControlError, match=r"404.*Sender not found"):
        control.send_sms(CODE, "+48600111222", "Hi")  # nobody registered it
    first = sms_app(portal, http)
    second = sms_app(portal, http)
    add_sender(first, receiver.url("/first"))
    add_sender(second, receiver.url("/second"))
    control.send_sms(CODE, "+48600111222", "no client_id: the first app that registered it")
    control.send_sms(CODE, "+48600111222", "named", client_id=second.info["client_id"])
    assert [h["path"] for h in receiver.hits] == ["/first", "/second"]
    # No entity: no bindings (crm) / no document (bizproc) are sent.
    control.send_sms(CODE, "+48600111222", "crm, no entity", module_id="crm")
    control.send_sms(CODE, "+48600111222", "bizproc, no entity")
    assert not any(k.startswith(("bindings", "document")) for k in receiver.hits[2]["form"])
    assert not any(k.startswith("document") for k in receiver.hits[3]["form"])
    assert "workflow_id" in receiver.hits[3]["form"]

    for kwargs, text in (
        ({"client_id": "local.nope"}, "no app with client_id"),
        ({"module_id": "sender"}, "module_id must be one of"),
        ({"entity_type": "INVOICE", "entity_id": 1}, "entity_type must be one of"),
        ({"entity_type": "CONTACT"}, "entity_type and entity_id go together"),
        ({"user_id": 999}, "no active user 999"),
    ):
        with pytest.raises(SandboxControlError, match=rf"400.*{re.escape(text)}"):
            control.send_sms(CODE, "+48600111222", "x", **kwargs)
    third = sms_app(portal, http)
    with pytest.raises(SandboxControlError, match="404"):
        control.send_sms(CODE, "+48600111222", "x", client_id=third.info["client_id"])
    # A handler that fails: the message is still there, the delivery tells what happened.
    receiver.status = 500
    failed = portal.send_sms(CODE, "+48600111222", "x")
    assert [d["status_code"] for d in failed["deliveries"]] == [500]
    assert len(portal.sms_messages()) == 5
    assert control.state()["counts"]["sms_messages"] == 5


# --------------------------------------------------------------------------------------------
# messageservice.message.status.update


def test_status_update_records_the_history(
    portal: SandboxPortal, http: requests.Session, receiver: Receiver
) -> None:
    app = sms_app(portal, http)
    add_sender(app, receiver.url())
    message_id = portal.send_sms(CODE, "+48600111222", "Hi")["message_id"]
    for status in ("sent", "delivered"):
        assert status_update(app, message_id, status).json()["result"] is True
    # Lower-case parameter names work too; the same status again changes nothing.
    resp = app.call(
        "messageservice.message.status.update", code=CODE, message_id=message_id, status="delivered"
    )
    assert resp.json()["result"] is True
    [message] = portal.control.sms_messages()
    assert message["STATUS"] == "delivered"
    assert message["STATUS_HISTORY"] == ["queued", "sent", "delivered"]
    changes = message["STATUS_CHANGES"]
    assert [(c["STATUS"], c["BY"], c["USER_ID"]) for c in changes] == [
        ("queued", "portal", None),
        ("sent", "rest", 1),
        ("delivered", "rest", 1),
    ]
    assert changes[0]["TIME"] <= changes[1]["TIME"] <= changes[2]["TIME"]
    assert message["DATE_STATUS"] == changes[2]["TIME"]

    for bad in ("DELIVERED", "read", "", None):
        err(
            status_update(app, message_id, bad),
            400,
            "ERROR_MESSAGE_STATUS_INCORRECT",
            "Message status incorrect!",
        )
    assert portal.sms_messages()[0]["STATUS_HISTORY"] == ["queued", "sent", "delivered"]


def test_status_update_finds_only_the_apps_own_messages(
    portal: SandboxPortal, http: requests.Session, receiver: Receiver
) -> None:
    app = sms_app(portal, http)
    other = sms_app(portal, http)
    add_sender(app, receiver.url())
    add_sender(app, receiver.url(), "second")
    add_sender(other, receiver.url())  # the same CODE, another app
    message_id = portal.send_sms(CODE, "+48600111222", "Hi", client_id=app.info["client_id"])[
        "message_id"
    ]
    not_found = ("ERROR_MESSAGE_NOT_FOUND", "Message not found!")
    err(status_update(app, "f" * 32, "sent"), 400, *not_found)  # unknown id
    err(status_update(other, message_id, "sent"), 400, *not_found)  # another app's message
    err(status_update(app, message_id, "sent", code="second"), 400, *not_found)  # other sender
    err(status_update(app, "", "sent"), 400, *not_found)
    err(status_update(app, message_id, "sent", code=""), 400, "ERROR_SENDER_VALIDATION_FAILURE")
    # A wrong status is refused before the message is looked up.
    err(status_update(other, message_id, "gone"), 400, "ERROR_MESSAGE_STATUS_INCORRECT")
    assert portal.sms_messages()[0]["STATUS_HISTORY"] == ["queued"]
    assert status_update(app, message_id, "failed").json()["result"] is True
    # Deleting the provider keeps its messages, and their statuses can still be reported.
    assert app.ok("messageservice.sender.delete", CODE=CODE)
    assert status_update(app, message_id, "undelivered").json()["result"] is True
    assert portal.sms_messages()[0]["STATUS_HISTORY"] == ["queued", "failed", "undelivered"]


def test_status_update_by_the_author_or_an_admin(
    portal: SandboxPortal, http: requests.Session, receiver: Receiver
) -> None:
    app = sms_app(portal, http)
    add_sender(app, receiver.url())
    by_admin = portal.send_sms(CODE, "+48600111222", "from the admin", user_id=1)["message_id"]
    by_user = portal.send_sms(CODE, "+48600111333", "from user 5", user_id=5)["message_id"]
    user_token = auth_of(receiver.hits[1]["form"])["access_token"]

    def as_user(message_id: str, status: str) -> requests.Response:
        params = {"CODE": CODE, "MESSAGE_ID": message_id, "STATUS": status, "auth": user_token}
        return call(http, app.rest, "messageservice.message.status.update", params)

    assert as_user(by_user, "delivered").json()["result"] is True  # the author itself
    err(as_user(by_admin, "delivered"), 403, "ACCESS_DENIED", "Access denied!")
    assert status_update(app, by_user, "failed").json()["result"] is True  # an admin may
    history = {m["MESSAGE_ID"]: m["STATUS_HISTORY"] for m in portal.sms_messages()}
    assert history == {by_admin: ["queued"], by_user: ["queued", "delivered", "failed"]}


# --------------------------------------------------------------------------------------------
# Lifecycle: uninstall, reset, persistence


def test_uninstall_removes_the_apps_senders(
    portal: SandboxPortal, http: requests.Session, receiver: Receiver
) -> None:
    app = sms_app(portal, http)
    other = sms_app(portal, http)
    add_sender(app, receiver.url())
    add_sender(app, receiver.url(), "second")
    add_sender(other, receiver.url(), "others")
    portal.send_sms(CODE, "+48600111222", "before the uninstall")

    result = portal.control.uninstall_app(app.info["client_id"])
    assert result["removed_senders"] == 2
    assert [(s["CLIENT_ID"], s["CODE"]) for s in portal.control.sms_senders()] == [
        (other.info["client_id"], "others")
    ]
    with pytest.raises(SandboxControlError, match="404"):
        portal.control.send_sms(CODE, "+48600111222", "nobody provides it any more")
    assert len(portal.sms_messages()) == 1  # sent messages stay


def test_reset_keeps_senders_and_clears_messages(
    portal: SandboxPortal, http: requests.Session, receiver: Receiver
) -> None:
    app = sms_app(portal, http)
    add_sender(app, receiver.url())
    portal.send_sms(CODE, "+48600111222", "Hi")
    portal.control.reset()
    assert portal.sms_messages() == []
    assert app.ok("messageservice.sender.list") == [CODE]
    add_sender(app, receiver.url(), "after-reset")
    ids = [s["ID"] for s in portal.sms_senders()]
    assert ids == sorted(set(ids))  # provider IDs do not repeat across reset


def test_senders_and_messages_are_persisted(tmp_path: Path, receiver: Receiver) -> None:
    state_file = str(tmp_path / "portal.json")
    with SandboxPortal(drain_per_second=None, state_file=state_file) as first:
        session = requests.Session()
        session.trust_env = False
        session.verify = first.ca_cert_path
        app = sms_app(first, session)
        add_sender(app, receiver.url())
        message_id = first.send_sms(CODE, "+48600111222", "Hi", user_id=5)["message_id"]
        assert status_update(app, message_id, "sent").json()["result"] is True
        senders, messages = first.sms_senders(), first.sms_messages()
        dumped = first.control.dump()
        assert list(dumped["sms_senders"]) == [f"{app.info['client_id']}|{CODE}"]
        assert list(dumped["sms_messages"]) == [message_id]
        session.close()
    with SandboxPortal(drain_per_second=None, state_file=state_file) as second:
        assert second.sms_senders() == senders
        assert second.sms_messages() == messages
        session = requests.Session()
        session.trust_env = False
        session.verify = second.ca_cert_path
        app.http = session
        app.rest = f"{second.url}/rest/"
        # The app's token and the message survived: its status can still be updated.
        assert status_update(app, message_id, "delivered").json()["result"] is True
        assert second.sms_messages()[0]["STATUS_HISTORY"] == ["queued", "sent", "delivered"]
        assert app.ok("messageservice.sender.list") == [CODE]
        session.close()
