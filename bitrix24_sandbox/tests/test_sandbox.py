"""The Bitrix24 sandbox portal, exercised over real HTTPS like a client would use a real portal.

Run alone (no Django, no database):
    .venv/bin/python -m pytest bitrix24_sandbox -p no:django --confcutdir bitrix24_sandbox -q
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from bitrix24_sandbox import SandboxControl, SandboxPortal
from bitrix24_sandbox.control import SandboxControlError
from bitrix24_sandbox.phone import normalize_phone

REPO = Path(__file__).resolve().parents[2]
TIME_KEYS = {
    "start",
    "finish",
    "duration",
    "processing",
    "date_start",
    "date_finish",
    "operating_reset_at",
    "operating",
}


@pytest.fixture(scope="module")
def sandbox_portal() -> Iterator[SandboxPortal]:
    # The shared portal has no rate limit; limiter tests use portals of their own.
    portal = SandboxPortal(seed=True, drain_per_second=None, bucket_size=None).start()
    yield portal
    portal.stop()


@pytest.fixture(autouse=True)
def _fresh_seed(request: pytest.FixtureRequest) -> None:
    if "sandbox_portal" in request.fixturenames:
        request.getfixturevalue("sandbox_portal").reset()


@pytest.fixture
def portal(sandbox_portal: SandboxPortal) -> SandboxPortal:
    return sandbox_portal


def make_session(portal: SandboxPortal) -> requests.Session:
    session = requests.Session()
    # REQUESTS_CA_BUNDLE in the environment would override session.verify otherwise.
    session.trust_env = False
    session.verify = portal.ca_cert_path
    return session


@pytest.fixture
def http(portal: SandboxPortal) -> Iterator[requests.Session]:
    session = make_session(portal)
    yield session
    session.close()


def call(
    session: requests.Session, base: str, method: str, params: dict[str, Any] | None = None
) -> requests.Response:
    """POST a JSON body to ``base + method`` (base = webhook URL or ``.../rest/``)."""
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
    assert body["error"] == code
    if text is not None:
        assert body["error_description"] == text
    return body


# --------------------------------------------------------------------------------------------
# Envelope, types, parameter encodings


def test_envelope_and_legacy_string_types(portal: SandboxPortal, http: requests.Session) -> None:
    resp = call(http, portal.webhook_url(), "crm.contact.get", {"id": 12})
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"result", "time"}
    assert set(body["time"]) == TIME_KEYS
    assert body["time"]["finish"] >= body["time"]["start"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", body["time"]["date_start"])
    contact = body["result"]
    assert contact["ID"] == "12"
    assert contact["ASSIGNED_BY_ID"] == "5"
    assert (contact["NAME"], contact["LAST_NAME"]) == ("Anna", "Kowalska")
    assert contact["HAS_PHONE"] == "Y"
    phone = contact["PHONE"][0]
    assert isinstance(phone["ID"], str)
    assert phone == {**phone, "VALUE": "+48600111222", "VALUE_TYPE": "WORK", "TYPE_ID": "PHONE"}


def test_get_errors_use_empty_error_code(portal: SandboxPortal, http: requests.Session) -> None:
    hook = portal.webhook_url()
    err(call(http, hook, "crm.contact.get", {"id": 999999}), 400, "", "Not found")
    err(call(http, hook, "crm.deal.get", {}), 400, "", "ID is not defined or invalid.")
    err(call(http, hook, "crm.no.such.method"), 404, "ERROR_METHOD_NOT_FOUND", "Method not found!")


def test_list_paging_total_next_and_start_minus_one(
    portal: SandboxPortal, http: requests.Session
) -> None:
    for i in range(60):
        portal.add_entity("CONTACT", {"NAME": f"Bulk {i}", "LAST_NAME": "Import"})
    hook = portal.webhook_url()
    first = call(http, hook, "crm.contact.list", {"filter": {"LAST_NAME": "Import"}}).json()
    assert (len(first["result"]), first["total"], first["next"]) == (50, 60, 50)
    second = call(
        http, hook, "crm.contact.list", {"filter": {"LAST_NAME": "Import"}, "start": 50}
    ).json()
    assert (len(second["result"]), second["total"]) == (10, 60)
    assert "next" not in second
    fast = call(http, hook, "crm.contact.list", {"start": -1}).json()
    assert "total" not in fast
    assert "next" not in fast
    assert len(fast["result"]) == 50


def test_form_encoded_php_nested_params(portal: SandboxPortal, http: requests.Session) -> None:
    hook = portal.webhook_url()
    form = {
        "fields[NAME]": "Zofia",
        "fields[LAST_NAME]": "Mazur",
        "fields[PHONE][0][VALUE]": "+48 600 222 111",
        "fields[PHONE][0][VALUE_TYPE]": "MOBILE",
        "fields[PHONE][1][VALUE]": "+48221112233",
        "fields[UF_CRM_PREFERRED_SIM]": "SIM2",
    }
    resp = http.post(hook + "crm.contact.add", data=form)
    new_id = resp.json()["result"]
    assert isinstance(new_id, int)
    contact = ok(http, hook, "crm.contact.get", {"id": new_id})
    assert [p["VALUE"] for p in contact["PHONE"]] == ["+48 600 222 111", "+48221112233"]
    assert [p["VALUE_TYPE"] for p in contact["PHONE"]] == ["MOBILE", "WORK"]
    assert contact["UF_CRM_PREFERRED_SIM"] == "SIM2"
    # values[] in a GET query string becomes a PHP list
    found = http.get(
        hook + "crm.duplicate.findbycomm",
        params=[("type", "PHONE"), ("values[]", "+48600222111")],
    ).json()["result"]
    assert found == {"CONTACT": [new_id]}
    logged = portal.state.query_requests("crm.contact.add")[-1]["params"]
    assert logged["fields"]["PHONE"][0] == {"VALUE": "+48 600 222 111", "VALUE_TYPE": "MOBILE"}


def test_multipart_form_is_parsed(portal: SandboxPortal, http: requests.Session) -> None:
    resp = http.post(
        portal.webhook_url() + "crm.lead.add",
        files={
            "fields[TITLE]": (None, "Multipart lead"),
            "fields[PHONE][0][VALUE]": (None, "+48601000999"),
        },
    )
    lead_id = resp.json()["result"]
    lead = ok(http, portal.webhook_url(), "crm.lead.get", {"id": lead_id})
    assert lead["TITLE"] == "Multipart lead"
    assert lead["PHONE"][0]["VALUE"] == "+48601000999"


def test_json_body_on_get_is_ignored(portal: SandboxPortal, http: requests.Session) -> None:
    body = {"type": "PHONE", "values": ["+48600111222"]}
    url = portal.webhook_url() + "crm.duplicate.findbycomm"
    resp = http.request(
        "GET", url, data=json.dumps(body), headers={"Content-Type": "application/json"}
    )
    err(resp, 400, "", "Communication type is not defined.")
    assert http.post(url, json=body).json()["result"] == {"LEAD": [27], "CONTACT": [12]}


def test_method_name_is_case_insensitive_with_suffixes(
    portal: SandboxPortal, http: requests.Session
) -> None:
    hook = portal.webhook_url()
    for name in ("CRM.Contact.Get", "crm.contact.get.json", "crm.contact.get/"):
        assert ok(http, hook, name, {"ID": 12})["ID"] == "12"
    assert ok(
        http, hook, "telephony.externalCall.searchCrmEntities", {"PHONE_NUMBER": "+48221234567"}
    )


# --------------------------------------------------------------------------------------------
# Auth


def test_webhook_auth_errors(portal: SandboxPortal, http: requests.Session) -> None:
    good = portal.webhook_url()
    wrong_secret = re.sub(r"/rest/1/[^/]+/", "/rest/1/notthesecret/", good)
    err(call(http, wrong_secret, "crm.contact.get", {"id": 12}), 401, "INVALID_CREDENTIALS")
    wrong_user = good.replace("/rest/1/", "/rest/5/")
    err(
        call(http, wrong_user, "crm.contact.get", {"id": 12}),
        401,
        "INVALID_CREDENTIALS",
        "Invalid request credentials",
    )
    err(call(http, portal.url + "/rest/", "crm.contact.get"), 401, "NO_AUTH_FOUND")
    err(
        call(http, portal.url + "/rest/", "crm.contact.get", {"auth": "bogus"}),
        401,
        "invalid_token",
    )


def test_insufficient_scope(portal: SandboxPortal, http: requests.Session) -> None:
    crm_only = portal.add_webhook(1, scopes=["crm"])
    assert ok(http, crm_only, "crm.contact.get", {"id": 12})["ID"] == "12"
    err(call(http, crm_only, "user.get"), 401, "insufficient_scope")
    err(call(http, crm_only, "telephony.externalcall.register"), 401, "insufficient_scope")
    assert ok(http, crm_only, "scope") == ["crm"]
    basic = portal.add_webhook(5, scopes=["user_basic"])
    row = ok(http, basic, "user.current")
    assert row["ID"] == "5"
    assert row["UF_PHONE_INNER"] == "105"
    assert "PERSONAL_MOBILE" not in row


def test_deactivated_users_webhook_is_rejected(
    portal: SandboxPortal, http: requests.Session
) -> None:
    hook = portal.add_webhook(11, scopes=["crm"])
    assert ok(http, hook, "crm.contact.get", {"id": 12})
    portal.control.deactivate_user(11)
    err(call(http, hook, "crm.contact.get", {"id": 12}), 401, "INVALID_CREDENTIALS")


def test_oauth_expiry_and_refresh_rotates_refresh_token(
    portal: SandboxPortal, http: requests.Session
) -> None:
    app = portal.add_oauth_app(scopes=["crm", "telephony", "user"])
    assert app["client_endpoint"] == portal.url + "/rest/"
    rest = app["client_endpoint"]
    assert ok(http, rest, "crm.contact.get", {"id": 12, "auth": app["access_token"]})["ID"] == "12"
    assert ok(http, rest, "app.info", {"auth": app["access_token"]})["CODE"] == app["client_id"]

    portal.control.expire_tokens()
    err(
        call(http, rest, "crm.contact.get", {"id": 12, "auth": app["access_token"]}),
        401,
        "expired_token",
        "The access token provided has expired.",
    )
    refresh = {
        "grant_type": "refresh_token",
        "client_id": app["client_id"],
        "client_secret": app["client_secret"],
        "refresh_token": app["refresh_token"],
    }
    resp = http.get(portal.oauth_token_url, params=refresh)
    assert resp.status_code == 200, resp.text
    tokens = resp.json()
    assert tokens["refresh_token"] != app["refresh_token"]
    assert tokens["access_token"] != app["access_token"]
    assert tokens["expires_in"] == 3600
    assert tokens["client_endpoint"] == rest
    assert ok(http, rest, "crm.contact.get", {"id": 12, "auth": tokens["access_token"]})
    assert portal.state.refresh_count == 1

    reused = http.post(portal.oauth_token_url, data=refresh)
    assert reused.status_code in (400, 401)
    assert reused.json()["error"] == "invalid_grant"
    bad_client = http.get(portal.oauth_token_url, params={**refresh, "client_secret": "nope"})
    assert bad_client.json()["error"] == "invalid_client"
    assert portal.control.state()["refresh_count"] == 1


def test_plain_http_is_not_served(portal: SandboxPortal) -> None:
    plain = portal.webhook_url().replace("https://", "http://")
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(plain + "crm.contact.get?id=12", timeout=5)


# --------------------------------------------------------------------------------------------
# crm.duplicate.findbycomm


def test_normalize_phone_rules() -> None:
    assert normalize_phone("+7 (912) 345-67-89") == "79123456789"
    assert normalize_phone("89123456789") == "79123456789"
    assert normalize_phone("0048 600-111-444") == "48600111444"
    assert normalize_phone("011 44 20 7946 0958") == "442079460958"
    assert normalize_phone("+86 10 1234 5678") == "861012345678"  # "+8" is not a trunk 8
    assert normalize_phone("8 800 555 35 35") == "78005553535"
    assert normalize_phone("80 29 123 45 67") == "80291234567"  # 80/81/82 keep their 8
    assert normalize_phone("07911 123456") == "7911123456"  # leading 0 dropped, no country
    assert normalize_phone("+48 22 333 44 55 #12") == "48223334455"  # extension dropped
    assert normalize_phone("600 111 333") == "600111333"  # < 10 digits: untouched


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("+48600111222", {"LEAD": [27], "CONTACT": [12]}),  # stored as E.164
        ("+48600111444", {"CONTACT": [15]}),  # stored as "0048 600-111-444"
        ("+48600111555", {"CONTACT": [16]}),  # stored as "+48 600-111 555"
        ("+79123456789", {"CONTACT": [17]}),  # stored as "8 (912) 345-67-89"
        ("89123456789", {"CONTACT": [17]}),
        ("+48221234567", {"COMPANY": [21]}),  # stored as "+48 22 123 45 67"
        ("600 111 333", {"CONTACT": [14]}),  # national form only matches national form
    ],
)
def test_findbycomm_matches_seeded_formats(
    portal: SandboxPortal, http: requests.Session, query: str, expected: dict[str, list[int]]
) -> None:
    result = ok(
        http, portal.webhook_url(), "crm.duplicate.findbycomm", {"type": "PHONE", "values": [query]}
    )
    assert result == expected


def test_findbycomm_no_country_inference_and_empty_array(
    portal: SandboxPortal, http: requests.Session
) -> None:
    hook = portal.webhook_url()
    for query in ("9123456789", "+48600111333", "+48 999 999 999"):
        result = ok(http, hook, "crm.duplicate.findbycomm", {"type": "PHONE", "values": [query]})
        assert result == [], query
    by_type = ok(
        http,
        hook,
        "crm.duplicate.findbycomm",
        {"type": "PHONE", "values": ["+48600111222"], "entity_type": "CONTACT"},
    )
    assert by_type == {"CONTACT": [12]}
    email = ok(
        http,
        hook,
        "crm.duplicate.findbycomm",
        {"type": "EMAIL", "values": ["Anna.Kowalska@example.pl"]},
    )
    assert email == {"CONTACT": [12]}


def test_findbycomm_errors(portal: SandboxPortal, http: requests.Session) -> None:
    hook = portal.webhook_url()
    find = "crm.duplicate.findbycomm"
    deal = {"type": "PHONE", "values": ["+48600111222"], "entity_type": "DEAL"}
    err(call(http, hook, find, deal), 400, "", "Deal is not supported in current context.")
    err(call(http, hook, find, {"values": ["1"]}), 400, "", "Communication type is not defined.")
    err(
        call(http, hook, find, {"type": "FAX", "values": ["1"]}),
        400,
        "",
        "Communication type 'FAX' is not supported in current context.",
    )
    err(call(http, hook, find, {"type": "PHONE"}), 400, "", "Communication values is not defined.")


def test_findbycomm_twenty_matches_hide_other_types_and_20_values_cap(
    portal: SandboxPortal, http: requests.Session
) -> None:
    number = "+48 700 000 001"
    ids = [
        portal.add_entity("CONTACT", {"NAME": f"Dup {i}", "PHONE": [{"VALUE": number}]})
        for i in range(20)
    ]
    lead = portal.add_entity("LEAD", {"TITLE": "Dup lead", "PHONE": [{"VALUE": number}]})
    hook = portal.webhook_url()
    find = "crm.duplicate.findbycomm"
    assert ok(http, hook, find, {"type": "PHONE", "values": [number]}) == {"CONTACT": ids}
    only_leads = {"type": "PHONE", "values": [number], "entity_type": "LEAD"}
    assert ok(http, hook, find, only_leads) == {"LEAD": [lead]}
    # Only the first 20 values are used.
    values = [f"+4870000{i:04d}" for i in range(100, 120)] + ["+48600111222"]
    assert ok(http, hook, find, {"type": "PHONE", "values": values}) == []


# --------------------------------------------------------------------------------------------
# batch


def test_batch_with_result_references(portal: SandboxPortal, http: requests.Session) -> None:
    cmd = {
        "contact": "crm.contact.get?id=12",
        "deals": (
            "crm.deal.list?filter[CONTACT_ID]=$result[contact][ID]&filter[STAGE_SEMANTIC_ID]=P"
        ),
        "user": "user.get?ID=$result[contact][ASSIGNED_BY_ID]",
        "dept": "department.get?ID=$result[user][0][UF_DEPARTMENT][0]",
        "dupes": "crm.duplicate.findbycomm?type=PHONE&values[]=%2B48600111222",
    }
    resp = call(http, portal.webhook_url(), "batch", {"halt": 0, "cmd": cmd})
    body = resp.json()
    assert set(body) == {"result", "time"}
    inner = body["result"]
    assert set(inner) == {"result", "result_error", "result_total", "result_next", "result_time"}
    assert inner["result_error"] == []
    assert inner["result_next"] == []
    assert [d["ID"] for d in inner["result"]["deals"]] == ["71"]
    assert inner["result"]["user"][0]["NAME"] == "Marta"
    assert inner["result"]["dept"][0]["NAME"] == "Sales"
    assert inner["result"]["dupes"] == {"LEAD": [27], "CONTACT": [12]}
    assert inner["result_total"] == {"deals": 1, "user": 1, "dept": 1}
    assert set(inner["result_time"]["contact"]) == TIME_KEYS
    # one HTTP request, five sub-calls
    assert len(portal.control.requests(method="batch")) == 1
    subcalls = portal.control.requests(in_batch=True)
    assert len(subcalls) == 5
    assert subcalls[1]["params"]["filter"]["CONTACT_ID"] == "12"


def test_batch_halt_errors_and_list_cmd(portal: SandboxPortal, http: requests.Session) -> None:
    hook = portal.webhook_url()
    cmd = {
        "a": "crm.contact.get?id=12",
        "b": "crm.contact.get?id=999999",
        "c": "crm.lead.get?id=25",
    }
    halted = ok(http, hook, "batch", {"halt": 1, "cmd": cmd})
    assert list(halted["result"]) == ["a"]
    assert halted["result_error"] == {"b": {"error": "", "error_description": "Not found"}}
    full = ok(http, hook, "batch", {"halt": 0, "cmd": cmd})
    assert set(full["result"]) == {"a", "c"}
    as_list = ok(http, hook, "batch", {"cmd": ["user.current", "scope"]})
    assert isinstance(as_list["result"], list)
    assert as_list["result"][0]["ID"] == "1"
    nested = ok(http, hook, "batch", {"cmd": {"inner": "batch?cmd[x]=scope"}})
    assert nested["result_error"]["inner"]["error"] == "ERROR_BATCH_METHOD_NOT_ALLOWED"
    too_many = {f"k{i}": "scope" for i in range(51)}
    err(call(http, hook, "batch", {"cmd": too_many}), 400, "ERROR_BATCH_LENGTH_EXCEEDED")


def test_batch_form_encoded_cmd(portal: SandboxPortal, http: requests.Session) -> None:
    # Via form/query encoding each command is itself an encoded query string.
    data = {"halt": "0", "cmd[me]": "user.current", "cmd[lead]": "crm.lead.get?id=25"}
    result = http.post(portal.webhook_url() + "batch", data=data).json()["result"]
    assert result["result"]["lead"]["ID"] == "25"
    assert result["result"]["me"]["ID"] == "1"


# --------------------------------------------------------------------------------------------
# Limits and faults


def _burst(session: requests.Session, url: str, n: int) -> list[int]:
    return [session.post(url, json={"id": 12}).status_code for _ in range(n)]


def test_rate_limit_bucket_and_batch_counts_once() -> None:
    with SandboxPortal(seed=True, drain_per_second=0.01, bucket_size=5) as portal:
        session = make_session(portal)
        url = portal.webhook_url() + "crm.contact.get"
        codes = _burst(session, url, 9)
        assert codes == [200] * 6 + [503] * 3
        resp = session.post(url, json={"id": 12})
        assert resp.json() == {
            "error": "QUERY_LIMIT_EXCEEDED",
            "error_description": "Too many requests",
        }
        assert portal.state.rate_limited_count == 4
        assert portal.control.state()["rate_limited_count"] == 4

        portal.control.set_rate_limit(0.01, 5)
        batch = {"cmd": {f"c{i}": "crm.contact.get?id=12" for i in range(40)}}
        statuses = [
            session.post(portal.webhook_url() + "batch", json=batch).status_code for _ in range(6)
        ]
        assert statuses == [200] * 6  # 240 sub-calls, 6 requests for the limiter
        assert session.post(url, json={"id": 12}).status_code == 503


def test_rate_limit_drains_over_time() -> None:
    with SandboxPortal(seed=True, drain_per_second=5, bucket_size=2) as portal:
        session = make_session(portal)
        url = portal.webhook_url() + "crm.contact.get"
        assert 503 in _burst(session, url, 12)
        time.sleep(0.7)  # drains 3.5 units: the counter never exceeds bucket_size + 1
        assert _burst(session, url, 2) == [200, 200]
        portal.control.set_rate_limit(None, None)
        assert set(_burst(session, url, 20)) == {200}


def test_operation_time_limit(portal: SandboxPortal, http: requests.Session) -> None:
    hook = portal.webhook_url()
    portal.control.set_operation_time_limit("crm.deal.list", 2)
    resp = call(http, hook, "crm.deal.list")
    body = err(resp, 429, "OPERATION_TIME_LIMIT", "Method is blocked due to operation time limit.")
    assert body["time"]["operating_reset_at"] >= time.time() + 1
    assert ok(http, hook, "crm.deal.get", {"id": 71})["ID"] == "71"  # other methods unaffected
    in_batch = ok(http, hook, "batch", {"cmd": {"d": "crm.deal.list"}})
    assert in_batch["result_error"]["d"]["error"] == "OPERATION_TIME_LIMIT"
    portal.control.set_operation_time_limit("crm.deal.list", 0.2)
    time.sleep(0.3)
    assert len(ok(http, hook, "crm.deal.list")) == 6


def test_fault_down_http503_and_reset(portal: SandboxPortal, http: requests.Session) -> None:
    hook = portal.webhook_url()
    portal.control.set_fault("down", mode="http503")
    resp = call(http, hook, "crm.contact.get", {"id": 12})
    assert resp.status_code == 503
    assert resp.headers["Content-Type"].startswith("text/html")
    assert resp.text.startswith("<html>")
    with pytest.raises(requests.exceptions.JSONDecodeError):
        resp.json()
    portal.control.set_fault("down", mode="reset")
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.post(hook + "crm.contact.get", json={"id": 12}, verify=portal.ca_cert_path)
    portal.control.clear_faults()
    assert ok(http, hook, "crm.contact.get", {"id": 12})["ID"] == "12"


def test_a_moved_portal_redirects_its_old_name_to_the_new_one(
    portal: SandboxPortal, http: requests.Session
) -> None:
    new = f"https://localhost:{portal.port}"
    portal.control.set_moved(new)
    assert portal.control.state()["moved_to"] == new
    hook = portal.webhook_url()  # https://127.0.0.1:PORT/rest/1/SECRET/

    resp = http.post(hook + "crm.contact.get?id=12", json={}, timeout=10, allow_redirects=False)

    assert resp.status_code == 302
    secret_path = hook.removeprefix(portal.url)
    assert resp.headers["Location"] == f"{new}{secret_path}crm.contact.get?id=12"
    assert resp.headers["Content-Type"].startswith("text/html")  # no JSON, like the cloud's front
    with pytest.raises(requests.exceptions.JSONDecodeError):
        resp.json()
    # The new name serves the same portal, credentials included; the old one keeps redirecting.
    assert ok(http, hook.replace(portal.url, new), "crm.contact.get", {"id": 12})["ID"] == "12"
    assert [(r["method"], r["status"], r["error"]) for r in portal.state.requests] == [
        ("crm.contact.get", 302, "MOVED"),
        ("crm.contact.get", 200, None),
    ]
    again = http.post(hook + "profile", json={}, timeout=10, allow_redirects=False)
    assert again.status_code == 302

    portal.control.set_moved(None)
    assert ok(http, hook, "profile")["ID"] == "1"
    portal.set_moved(new)
    portal.reset()
    assert portal.state.moved_to is None


def test_moved_needs_a_base_url(portal: SandboxPortal) -> None:
    with pytest.raises(SandboxControlError):
        portal.control.set_moved("https://localhost:1/rest/")
    with pytest.raises(ValueError, match="base URL"):
        portal.set_moved("localhost:1")
    assert portal.state.moved_to is None


def test_extra_hostnames_are_in_the_certificate() -> None:
    portal = SandboxPortal(seed=False, hostnames=["portal.example.com"]).start()
    try:
        context = ssl.create_default_context(cafile=portal.ca_cert_path)

        def handshake(name: str) -> str | None:
            # The handshake verifies the name: it fails for a name the certificate lacks.
            with (
                socket.create_connection(("127.0.0.1", portal.port), timeout=5) as raw,
                context.wrap_socket(raw, server_hostname=name) as tls,
            ):
                return tls.version()

        assert handshake("portal.example.com")
        with pytest.raises(ssl.SSLCertVerificationError):
            handshake("other.example.com")
    finally:
        portal.stop()


def test_fault_slow_and_fail_next(portal: SandboxPortal, http: requests.Session) -> None:
    hook = portal.webhook_url()
    portal.control.set_fault("slow", delay_ms=300)
    started = time.monotonic()
    assert ok(http, hook, "crm.contact.get", {"id": 12})["ID"] == "12"
    assert time.monotonic() - started >= 0.3
    portal.control.clear_faults()

    leads_before = len(portal.state.entities["LEAD"])
    portal.control.set_fault("fail_next", count=2, method="crm.lead.add")
    assert ok(http, hook, "crm.contact.get", {"id": 12})  # other methods unaffected
    for _ in range(2):
        err(
            call(http, hook, "crm.lead.add", {"fields": {"TITLE": "x"}}),
            500,
            "INTERNAL_SERVER_ERROR",
        )
    assert len(portal.state.entities["LEAD"]) == leads_before  # faulted requests not executed
    assert isinstance(ok(http, hook, "crm.lead.add", {"fields": {"TITLE": "x"}}), int)
    assert portal.control.faults() == []
    statuses = [r["status"] for r in portal.control.requests(method="crm.lead.add")]
    assert statuses == [500, 500, 200]


# --------------------------------------------------------------------------------------------
# Telephony


def _register(http: requests.Session, base: str, **params: Any) -> requests.Response:
    defaults = {"USER_ID": 5, "PHONE_NUMBER": "+48600111222", "TYPE": 2,
                "CALL_START_DATE": "2026-03-07T10:20:30+01:00"}  # fmt: skip
    return call(http, base, "telephony.externalcall.register", {**defaults, **params})


def test_register_binds_contact_and_dedups_within_window(
    portal: SandboxPortal, http: requests.Session
) -> None:
    hook = portal.webhook_url()
    first = _register(http, hook, EXTERNAL_CALL_ID="dev1-100").json()["result"]
    assert re.fullmatch(r"externalCall\.[0-9a-f]{32}\.\d{10}", first["CALL_ID"])
    assert (first["CRM_ENTITY_TYPE"], first["CRM_ENTITY_ID"]) == ("CONTACT", 12)
    assert first["CRM_CREATED_ENTITIES"] == []
    assert first["CRM_CREATED_LEAD"] is None
    again = _register(http, hook, EXTERNAL_CALL_ID="dev1-100", PHONE_NUMBER="+48 600 111 222")
    assert again.json()["result"]["CALL_ID"] == first["CALL_ID"]
    other = _register(http, hook, EXTERNAL_CALL_ID="dev1-101").json()["result"]
    assert other["CALL_ID"] != first["CALL_ID"]
    calls = portal.control.calls()
    assert len(calls["active"]) == 2
    kept = next(c for c in calls["active"] if c["CALL_ID"] == first["CALL_ID"])
    assert kept["CALL_START_DATE"] == "2026-03-07T10:20:30+01:00"
    assert len(kept["REREGISTRATIONS"]) == 1


def test_finish_creates_statistic_and_activity_then_second_finish_fails(
    portal: SandboxPortal, http: requests.Session
) -> None:
    hook = portal.webhook_url()
    call_id = _register(http, hook, EXTERNAL_CALL_ID="x1").json()["result"]["CALL_ID"]
    assert ok(http, hook, "telephony.externalcall.show", {"CALL_ID": call_id, "USER_ID": [5, 9]})
    assert ok(http, hook, "telephony.externalcall.hide", {"CALL_ID": call_id, "USER_ID": 9})
    finish = {"CALL_ID": call_id, "USER_ID": 5, "DURATION": 95, "STATUS_CODE": "200", "VOTE": 5}
    stat = ok(http, hook, "telephony.externalcall.finish", finish)
    assert stat["CALL_START_DATE"] == {}
    assert (stat["CALL_STATUS"], stat["CALL_DURATION"], stat["INCOMING"]) == (1, 95, "2")
    assert (stat["CRM_ENTITY_TYPE"], stat["CRM_ENTITY_ID"]) == ("CONTACT", 12)
    assert stat["EXTERNAL_CALL_ID"] == "x1"
    assert "ERRORS" not in stat
    activity = ok(http, hook, "crm.activity.get", {"id": stat["CRM_ACTIVITY_ID"]})
    assert activity["PROVIDER_ID"] == "VOXIMPLANT_CALL"
    assert (activity["TYPE_ID"], activity["DIRECTION"], activity["OWNER_ID"]) == ("2", "1", "12")
    assert activity["COMPLETED"] == "Y"
    assert activity["ORIGIN_ID"] == f"VI_{call_id}"
    assert activity["COMMUNICATIONS"][0]["VALUE"] == "+48600111222"
    err(
        call(http, hook, "telephony.externalcall.finish", finish),
        400,
        "",
        "Call is not found (call should be registered prior to finishing",
    )
    assert ok(http, hook, "telephony.externalcall.show", {"CALL_ID": call_id}) is False
    listed = ok(
        http,
        hook,
        "crm.activity.list",
        {"filter": {"OWNER_TYPE_ID": 3, "OWNER_ID": 12, "TYPE_ID": 2}},
    )
    assert [a["ID"] for a in listed] == [str(stat["CRM_ACTIVITY_ID"])]


def test_missed_incoming_call_is_an_open_activity(
    portal: SandboxPortal, http: requests.Session
) -> None:
    hook = portal.webhook_url()
    call_id = _register(http, hook, PHONE_NUMBER="+79123456789").json()["result"]["CALL_ID"]
    stat = ok(http, hook, "telephony.externalcall.finish", {"CALL_ID": call_id, "USER_ID": 9})
    assert (stat["CALL_STATUS"], stat["CALL_FAILED_CODE"]) == (0, "304")
    activity = ok(http, hook, "crm.activity.get", {"id": stat["CRM_ACTIVITY_ID"]})
    assert activity["SETTINGS"] == {"MISSED_CALL": True}
    assert activity["COMPLETED"] == "N"
    assert activity["RESPONSIBLE_ID"] == "9"


def test_unbound_call_has_no_activity_and_crm_create(
    portal: SandboxPortal, http: requests.Session
) -> None:
    hook = portal.webhook_url()
    reg = _register(http, hook, PHONE_NUMBER="+48 601 999 888", TYPE=1).json()["result"]
    assert (reg["CRM_ENTITY_TYPE"], reg["CRM_ENTITY_ID"]) == ("", None)
    stat = ok(
        http, hook, "telephony.externalcall.finish", {"CALL_ID": reg["CALL_ID"], "USER_ID": 5}
    )
    assert stat["CRM_ACTIVITY_ID"] is None
    assert stat["ERRORS"] == {
        "ACTIVITY_CREATION": "Could not find associated crm entity for the current call"
    }

    created = _register(http, hook, PHONE_NUMBER="+48601999888", CRM_CREATE=1, USER_ID=3).json()
    result = created["result"]
    assert result["CRM_ENTITY_TYPE"] == "LEAD"
    assert result["CRM_CREATED_ENTITIES"] == [
        {"ENTITY_TYPE": "LEAD", "ENTITY_ID": result["CRM_CREATED_LEAD"]}
    ]
    lead = ok(http, hook, "crm.lead.get", {"id": result["CRM_CREATED_LEAD"]})
    assert lead["TITLE"] == "+48601999888 - Incoming call"
    assert lead["SOURCE_ID"] == "CALL"
    ok(http, hook, "telephony.externalcall.finish", {"CALL_ID": result["CALL_ID"], "USER_ID": 5})
    assert (
        ok(http, hook, "crm.lead.get", {"id": result["CRM_CREATED_LEAD"]})["ASSIGNED_BY_ID"] == "5"
    )

    employee = _register(http, hook, PHONE_NUMBER="+48 501 000 009", CRM_CREATE=1).json()["result"]
    assert employee["LEAD_CREATION_ERROR"] == "Lead creation is disabled for local users"


def test_register_validation(portal: SandboxPortal, http: requests.Session) -> None:
    hook = portal.webhook_url()
    err(_register(http, hook, USER_ID=7), 400, "", "User is not found or is not active")
    err(_register(http, hook, USER_ID=None), 400, "", "USER_ID or USER_PHONE_INNER should be set")
    err(_register(http, hook, TYPE=9), 400, "", "Unknown TYPE")
    err(_register(http, hook, PHONE_NUMBER="abc"), 400, "", "Unsupported phone number format")
    err(
        _register(http, hook, CALL_START_DATE="07.03.2026 10:20"),
        400,
        "",
        "CALL_START_DATE should be in the ISO-8601 format",
    )
    by_inner = _register(http, hook, USER_ID=None, USER_PHONE_INNER="109").json()["result"]
    assert portal.state.active_calls[by_inner["CALL_ID"]]["USER_ID"] == 9
    err(
        call(http, hook, "telephony.externalcall.finish", {"CALL_ID": by_inner["CALL_ID"]}),
        400,
        "",
        "USER_ID or USER_PHONE_INNER should be set",
    )
    err(
        call(http, hook, "telephony.externalcall.finish", {"CALL_ID": 123, "USER_ID": 5}),
        400,
        "INVALID_ARGUMENT",
        "CALL_ID must be a string",
    )


def _finished_call(http: requests.Session, base: str) -> str:
    call_id = _register(http, base, EXTERNAL_CALL_ID=os.urandom(4).hex()).json()["result"][
        "CALL_ID"
    ]
    ok(
        http,
        base,
        "telephony.externalcall.finish",
        {"CALL_ID": call_id, "USER_ID": 5, "DURATION": 10},
    )
    return call_id


def test_attach_record_rules(portal: SandboxPortal, http: requests.Session) -> None:
    hook = portal.webhook_url()
    attach = "telephony.externalcall.attachRecord"
    active = _register(http, hook, EXTERNAL_CALL_ID="rec-1").json()["result"]["CALL_ID"]
    audio = base64.b64encode(b"ID3fake-mp3-bytes").decode()
    err(
        call(http, hook, attach, {"CALL_ID": active, "FILENAME": "a.mp3", "FILE_CONTENT": audio}),
        400,
        "",
        "Call is not found in the statistic table. Looks like it is not finished yet.",
    )
    call_id = _finished_call(http, hook)
    err(
        call(http, hook, attach, {"CALL_ID": call_id, "FILENAME": "a.ogg", "FILE_CONTENT": audio}),
        400,
        "",
        "Wrong file extension. Only wav and mp3 are allowed",
    )
    err(
        call(
            http,
            hook,
            attach,
            {"CALL_ID": call_id, "FILENAME": "a.mp3", "FILE_CONTENT": "%%%notb64"},
        ),
        400,
        "",
        "File content is not properly encoded. Base64 encoding is expected.",
    )
    err(call(http, hook, attach, {"CALL_ID": call_id}), 400, "")
    first = ok(http, hook, attach, {"CALL_ID": call_id, "FILENAME": "a.mp3", "FILE_CONTENT": audio})
    second = ok(
        http, hook, attach, {"CALL_ID": call_id, "FILENAME": "b.WAV", "FILE_CONTENT": audio}
    )
    assert second["FILE_ID"] != first["FILE_ID"]
    record = portal.control.file(second["FILE_ID"])
    assert record["SIZE"] == len(b"ID3fake-mp3-bytes")
    assert record["SHA256"] == hashlib.sha256(b"ID3fake-mp3-bytes").hexdigest()
    stat = portal.state.finished_calls[call_id]
    assert stat["RECORD_FILE_ID"] == second["FILE_ID"]  # re-call replaces
    activity = ok(http, hook, "crm.activity.get", {"id": stat["STATISTIC"]["CRM_ACTIVITY_ID"]})
    assert activity["STORAGE_ELEMENT_IDS"] == [str(second["FILE_ID"])]


def test_attach_record_two_step_upload(portal: SandboxPortal, http: requests.Session) -> None:
    hook = portal.webhook_url()
    call_id = _finished_call(http, hook)
    step1 = ok(
        http,
        hook,
        "telephony.externalcall.attachRecord",
        {"CALL_ID": call_id, "FILENAME": "call.mp3"},
    )
    assert step1["fieldName"] == "file"
    assert step1["uploadUrl"].startswith(portal.url + "/rest/upload.json?")
    payload = os.urandom(2048)
    resp = http.post(step1["uploadUrl"], files={"file": ("call.mp3", payload, "audio/mpeg")})
    assert resp.status_code == 200, resp.text
    file_id = resp.json()["result"]["FILE_ID"]
    record = portal.control.file(file_id)
    assert (record["SIZE"], record["SOURCE"]) == (2048, "upload")
    assert record["SHA256"] == hashlib.sha256(payload).hexdigest()
    reused = http.post(step1["uploadUrl"], files={"file": ("call.mp3", payload)})
    assert reused.status_code == 400


def test_wrong_auth_type_switch_for_webhooks(portal: SandboxPortal, http: requests.Session) -> None:
    hook = portal.webhook_url()
    portal.control.set_webhook_telephony_denied(True)
    err(
        _register(http, hook),
        403,
        "WRONG_AUTH_TYPE",
        "Current authorization type is denied for this method",
    )
    app = portal.add_oauth_app(scopes=["telephony", "crm"])
    rest = app["client_endpoint"]
    reg = _register(http, rest, auth=app["access_token"]).json()["result"]
    # show is not affected by the switch
    assert ok(http, hook, "telephony.externalcall.show", {"CALL_ID": reg["CALL_ID"]}) is True
    stat = ok(
        http,
        rest,
        "telephony.externalcall.finish",
        {"CALL_ID": reg["CALL_ID"], "USER_ID": 5, "auth": app["access_token"]},
    )
    assert stat["REST_APP_ID"] == str(app["app_id"])
    portal.control.set_webhook_telephony_denied(False)
    assert _register(http, hook).status_code == 200


def test_search_crm_entities(portal: SandboxPortal, http: requests.Session) -> None:
    hook = portal.webhook_url()
    portal.control.set_timeman_status(5, "PAUSED")
    rows = ok(
        http, hook, "telephony.externalCall.searchCrmEntities", {"PHONE_NUMBER": "+48 600 111 222"}
    )
    assert [(r["CRM_ENTITY_TYPE"], r["CRM_ENTITY_ID"]) for r in rows] == [
        ("CONTACT", 12),
        ("LEAD", 27),
    ]
    assert rows[0]["NAME"] == "Anna Kowalska"
    assert rows[0]["ASSIGNED_BY"]["ID"] == "5"
    assert rows[0]["ASSIGNED_BY"]["TIMEMAN_STATUS"] == "PAUSED"
    assert rows[0]["ASSIGNED_BY"]["USER_PHONE_INNER"] == "105"
    assert (
        ok(http, hook, "telephony.externalcall.searchCrmEntities", {"PHONE_NUMBER": "+1555"}) == []
    )
    err(
        call(http, hook, "telephony.externalcall.searchCrmEntities"),
        400,
        "",
        "PHONE_NUMBER is empty",
    )


# --------------------------------------------------------------------------------------------
# CRM entities


def test_lead_add_returns_int_and_get_returns_strings(
    portal: SandboxPortal, http: requests.Session
) -> None:
    hook = portal.webhook_url()
    fields = {
        "TITLE": "Incoming call +79123456700",
        "STATUS_ID": "NEW",
        "SOURCE_ID": "CALL",
        "ASSIGNED_BY_ID": 5,
        "OPPORTUNITY": 150,
        "PHONE": [{"VALUE": "+79123456700", "VALUE_TYPE": "WORK"}],
    }
    lead_id = ok(
        http, hook, "crm.lead.add", {"fields": fields, "params": {"REGISTER_SONET_EVENT": "Y"}}
    )
    assert isinstance(lead_id, int)
    lead = ok(http, hook, "crm.lead.get", {"id": lead_id})
    assert lead["ID"] == str(lead_id)
    assert (lead["ASSIGNED_BY_ID"], lead["CREATED_BY_ID"]) == ("5", "1")
    assert (lead["STATUS_ID"], lead["STATUS_SEMANTIC_ID"], lead["OPPORTUNITY"]) == (
        "NEW",
        "P",
        "150.00",
    )
    assert lead["IS_RETURN_CUSTOMER"] == "N"
    err(call(http, hook, "crm.lead.add", {}), 400, "", "Parameter 'fields' must be array.")
    bad_status = {"fields": {"TITLE": "x", "STATUS_ID": "NOPE"}}
    assert call(http, hook, "crm.lead.add", bad_status).status_code == 400


def test_deal_list_filters_select_and_order(portal: SandboxPortal, http: requests.Session) -> None:
    hook = portal.webhook_url()

    def ids(params: dict[str, Any]) -> list[str]:
        return [d["ID"] for d in ok(http, hook, "crm.deal.list", params)]

    assert ids({"filter": {"CONTACT_ID": 12, "STAGE_SEMANTIC_ID": "P"}}) == ["71"]
    assert ids({"filter": {"CONTACT_ID": 12}, "order": {"DATE_MODIFY": "DESC"}}) == ["71", "63"]
    assert ids({"filter": {"=CATEGORY_ID": 1}}) == ["71", "74"]
    assert ids({"filter": {"!CATEGORY_ID": 1, "@ASSIGNED_BY_ID": [3, 9]}}) == ["68", "76"]
    assert ids({"filter": {">OPPORTUNITY": 12000}}) == ["74", "76"]
    assert ids({"filter": {">=OPPORTUNITY": 12000, "<OPPORTUNITY": 40000}}) == ["57", "74"]
    assert ids({"filter": {"%TITLE": "review"}}) == ["71"]
    assert ids({"filter": {"!@STAGE_ID": ["WON", "LOSE", "C1:WON"], "!=STAGE_ID": "NEW"}}) == [
        "57",
        "68",
        "71",
    ]
    assert ids({"filter": {"CLOSED": "Y"}}) == ["63", "74", "76"]
    rows = ok(http, hook, "crm.deal.list", {"filter": {"ID": 71}, "select": ["TITLE", "STAGE_ID"]})
    assert rows == [{"ID": "71", "TITLE": "Legal review", "STAGE_ID": "C1:NEGOTIATION"}]
    deal = ok(http, hook, "crm.deal.get", {"id": 71})
    assert (deal["CATEGORY_ID"], deal["STAGE_SEMANTIC_ID"], deal["CLOSED"]) == ("1", "P", "N")
    assert (deal["CONTACT_ID"], deal["COMPANY_ID"], deal["OPPORTUNITY"]) == ("12", "21", "5000.00")

    # an update moves the deal to the top of "most recently modified"
    assert ok(http, hook, "crm.deal.update", {"id": 63, "fields": {"COMMENTS": "renewal call"}})
    assert ids({"filter": {"CONTACT_ID": 12}, "order": {"DATE_MODIFY": "DESC"}}) == ["63", "71"]


def test_deal_add_stage_rules(portal: SandboxPortal, http: requests.Session) -> None:
    hook = portal.webhook_url()
    deal_id = ok(
        http,
        hook,
        "crm.deal.add",
        {"fields": {"TITLE": "New contract", "CATEGORY_ID": 1, "CONTACT_IDS": [14]}},
    )
    deal = ok(http, hook, "crm.deal.get", {"id": deal_id})
    assert (deal["STAGE_ID"], deal["CONTACT_ID"], deal["ASSIGNED_BY_ID"]) == ("C1:NEW", "14", "1")
    bad = {"fields": {"TITLE": "x", "CATEGORY_ID": 1, "STAGE_ID": "NEGOTIATION"}}
    assert call(http, hook, "crm.deal.add", bad).status_code == 400
    # CATEGORY_ID is immutable; a stage move to WON closes the deal
    ok(
        http,
        hook,
        "crm.deal.update",
        {"id": deal_id, "fields": {"CATEGORY_ID": 0, "STAGE_ID": "C1:WON"}},
    )
    deal = ok(http, hook, "crm.deal.get", {"id": deal_id})
    assert (deal["CATEGORY_ID"], deal["STAGE_SEMANTIC_ID"], deal["CLOSED"]) == ("1", "S", "Y")


def test_custom_uf_fields_are_listed(portal: SandboxPortal, http: requests.Session) -> None:
    hook = portal.webhook_url()
    ok(http, hook, "crm.deal.update", {"id": 57, "fields": {"UF_CRM_1712345": "line-2"}})
    fields = ok(http, hook, "crm.deal.fields")
    assert fields["UF_CRM_1712345"]["isDynamic"] is True
    assert fields["STAGE_ID"]["statusType"] == "DEAL_STAGE"
    assert ok(http, hook, "crm.deal.get", {"id": 57})["UF_CRM_1712345"] == "line-2"
    rows = ok(
        http, hook, "crm.deal.list", {"filter": {"UF_CRM_1712345": "line-2"}, "select": ["UF_*"]}
    )
    assert rows == [{"ID": "57", "UF_CRM_1712345": "line-2", "UF_CRM_SIM_LINE": None}]
    err(call(http, hook, "crm.company.add", {"fields": {"COMPANY_TYPE": "CUSTOMER"}}), 400, "")
    company = ok(
        http, hook, "crm.company.add", {"fields": {"TITLE": "Nowa firma", "UF_CRM_NIP": "1"}}
    )
    assert "UF_CRM_NIP" in ok(http, hook, "crm.company.fields")
    assert ok(http, hook, "crm.company.get", {"id": company})["TITLE"] == "Nowa firma"


def test_crm_item_api_uses_real_ints(portal: SandboxPortal, http: requests.Session) -> None:
    hook = portal.webhook_url()
    item = ok(http, hook, "crm.item.get", {"entityTypeId": 2, "id": 71})["item"]
    assert (item["id"], item["categoryId"], item["stageId"]) == (71, 1, "C1:NEGOTIATION")
    assert (item["contactId"], item["contactIds"], item["assignedById"]) == (12, [12], 5)
    leads = call(
        http,
        hook,
        "crm.item.list",
        {"entityTypeId": 1, "filter": {"stageId": "CONVERTED"}, "select": ["*"]},
    ).json()
    assert leads["total"] == 1
    lead = leads["result"]["items"][0]
    assert lead["id"] == 27
    assert lead["stageSemanticId"] == "S"
    assert lead["fm"][0]["value"] == "+48600111222"
    err(call(http, hook, "crm.item.get", {"entityTypeId": 3, "id": 999}), 400, "NOT_FOUND")


def test_statuses_and_pipelines(portal: SandboxPortal, http: requests.Session) -> None:
    hook = portal.webhook_url()
    stages = ok(http, hook, "crm.status.list", {"filter": {"ENTITY_ID": "DEAL_STAGE_1"}})
    assert [s["STATUS_ID"] for s in stages] == ["C1:NEW", "C1:NEGOTIATION", "C1:WON", "C1:LOSE"]
    assert stages[1]["NAME"] == "Contract negotiation"
    assert stages[2]["SEMANTICS"] == "S"
    assert stages[2]["EXTRA"]["SEMANTICS"] == "success"
    assert stages[0]["CATEGORY_ID"] == "1"
    lead_statuses = ok(http, hook, "crm.status.list", {"filter": {"ENTITY_ID": "STATUS"}})
    assert [s["STATUS_ID"] for s in lead_statuses] == [
        "NEW",
        "IN_PROCESS",
        "PROCESSED",
        "JUNK",
        "CONVERTED",
    ]
    sources = ok(http, hook, "crm.status.list", {"filter": {"ENTITY_ID": "SOURCE"}})
    assert "CALL" in [s["STATUS_ID"] for s in sources]
    types = [t["ID"] for t in ok(http, hook, "crm.status.entity.types")]
    assert {"STATUS", "SOURCE", "DEAL_STAGE", "DEAL_STAGE_1", "CONTACT_TYPE"} <= set(types)
    cats = call(http, hook, "crm.category.list", {"entityTypeId": 2}).json()
    assert {(c["id"], c["name"], c["isDefault"]) for c in cats["result"]["categories"]} == {
        (0, "General", "Y"),
        (1, "Contracts", "N"),
    }
    assert cats["total"] == 2
    assert [c["ID"] for c in ok(http, hook, "crm.dealcategory.list")] == ["1"]
    default_stages = ok(http, hook, "crm.dealcategory.stage.list", {"id": 0})
    assert [s["STATUS_ID"] for s in default_stages] == [
        "NEW",
        "PREPARATION",
        "EXECUTING",
        "WON",
        "LOSE",
    ]


def test_activity_add_list_update(portal: SandboxPortal, http: requests.Session) -> None:
    hook = portal.webhook_url()
    fields = {
        "OWNER_TYPE_ID": 3,
        "OWNER_ID": 12,
        "TYPE_ID": 2,
        "DIRECTION": 2,
        "SUBJECT": "Outgoing call to +48600111222",
        "RESPONSIBLE_ID": 5,
        "COMPLETED": "Y",
        "START_TIME": "2026-03-07T10:20:30+01:00",
        "END_TIME": "2026-03-07T10:25:00+01:00",
        "COMMUNICATIONS": [{"VALUE": "+48600111222", "ENTITY_ID": 12, "ENTITY_TYPE_ID": 3}],
    }
    act_id = ok(http, hook, "crm.activity.add", {"fields": fields})
    assert isinstance(act_id, int)
    assert ok(
        http, hook, "crm.activity.update", {"id": act_id, "fields": {"DESCRIPTION": "Talked"}}
    )
    act = ok(http, hook, "crm.activity.get", {"id": act_id})
    assert (act["DESCRIPTION"], act["DIRECTION"], act["COMPLETED"]) == ("Talked", "2", "Y")
    assert act["START_TIME"].startswith("2026-03-07T10:20:30")
    listed = ok(http, hook, "crm.activity.list", {"filter": {"OWNER_TYPE_ID": 3, "OWNER_ID": 12}})
    assert [a["ID"] for a in listed] == [str(act_id)]
    no_subject = {"fields": {**fields, "SUBJECT": ""}}
    err(
        call(http, hook, "crm.activity.add", no_subject),
        400,
        "",
        "The field SUBJECT is not defined or empty",
    )
    no_comms = {"fields": {**fields, "COMMUNICATIONS": []}}
    assert (
        "COMMUNICATIONS"
        in err(call(http, hook, "crm.activity.add", no_comms), 400, "")["error_description"]
    )
    no_owner = {"fields": {**fields, "OWNER_ID": 0}}
    assert (
        "OWNER_ID"
        in err(call(http, hook, "crm.activity.add", no_owner), 400, "")["error_description"]
    )


def test_timeline_comments(portal: SandboxPortal, http: requests.Session) -> None:
    hook = portal.webhook_url()
    comment = {"ENTITY_ID": 71, "ENTITY_TYPE": "deal", "COMMENT": "Call summary"}
    cid = ok(http, hook, "crm.timeline.comment.add", {"fields": comment})
    assert isinstance(cid, int)
    err(call(http, hook, "crm.timeline.comment.add", {"FIELDS": comment}), 400, "100")
    err(
        call(
            http, hook, "crm.timeline.comment.add", {"fields": {**comment, "ENTITY_TYPE": "DEAL"}}
        ),
        400,
        "INVALID_ARG_VALUE",
    )
    err(
        call(http, hook, "crm.timeline.comment.add", {"fields": {**comment, "ENTITY_ID": 9999}}),
        400,
        "OWNER_NOT_FOUND",
    )
    err(
        call(http, hook, "crm.timeline.comment.add", {"fields": {**comment, "COMMENT": " "}}),
        400,
        "INVALID_ARG_VALUE",
    )
    listed = ok(
        http,
        hook,
        "crm.timeline.comment.list",
        {"filter": {"ENTITY_ID": 71, "ENTITY_TYPE": "deal"}},
    )
    assert [(c["ID"], c["COMMENT"]) for c in listed] == [(str(cid), "Call summary")]


def test_automation_trigger(portal: SandboxPortal, http: requests.Session) -> None:
    hook = portal.webhook_url()
    assert ok(http, hook, "crm.automation.trigger", {"target": "DEAL_57", "code": "missed"}) is True
    err(call(http, hook, "crm.automation.trigger", {"code": "x"}), 400, "", "Target is not set.")
    err(
        call(http, hook, "crm.automation.trigger", {"target": "DEAL-57"}),
        400,
        "",
        "Incorrect target format.",
    )
    err(
        call(http, hook, "crm.automation.trigger", {"target": "LEAD_999"}),
        400,
        "",
        "Target is not found.",
    )
    triggers = portal.control.triggers()
    assert [(t["TARGET"], t["CODE"]) for t in triggers] == [("DEAL_57", "missed")]


# --------------------------------------------------------------------------------------------
# Users, tasks, notifications


def test_users_departments_and_timeman(portal: SandboxPortal, http: requests.Session) -> None:
    hook = portal.webhook_url()
    everyone = call(http, hook, "user.get").json()
    assert everyone["total"] == 6
    active = ok(http, hook, "user.get", {"filter": {"ACTIVE": True}})
    assert [u["ID"] for u in active] == ["1", "3", "5", "9", "11"]
    sales = ok(http, hook, "user.get", {"FILTER": {"UF_DEPARTMENT": 2, "ACTIVE": "Y"}})
    assert [(u["ID"], u["UF_DEPARTMENT"]) for u in sales] == [("5", [2])]
    assert (
        ok(http, hook, "user.get", {"filter": {"UF_PHONE_INNER": "109"}})[0]["LAST_NAME"]
        == "Lewandowska"
    )
    assert ok(http, hook, "user.get", {"ID": 7})[0]["ACTIVE"] is False
    assert ok(http, hook, "user.current")["NAME"] == "Jan"
    assert ok(http, hook, "profile")["ADMIN"] is True
    depts = ok(http, hook, "department.get", {"ID": 4})
    assert depts == [{"ID": "4", "NAME": "Legal", "SORT": 500, "PARENT": "1", "UF_HEAD": "9"}]
    assert ok(http, hook, "timeman.status", {"USER_ID": 9})["STATUS"] == "PAUSED"
    err(call(http, hook, "timeman.status", {"USER_ID": 999}), 400, "", "User not found")


def test_tasks_add_get_list_complete(portal: SandboxPortal, http: requests.Session) -> None:
    hook = portal.webhook_url()
    fields = {
        "TITLE": "Missed call from +48600111222",
        "RESPONSIBLE_ID": 5,
        "DEADLINE": "2026-03-10T18:00:00+01:00",
        "PRIORITY": 2,
        "UF_CRM_TASK": ["C_12", "D_71"],
    }
    task = ok(http, hook, "tasks.task.add", {"fields": fields})["task"]
    assert isinstance(task["id"], str)
    assert (task["responsibleId"], task["status"], task["priority"]) == ("5", "2", "2")
    assert task["deadline"].startswith("2026-03-10T18:00:00")
    assert "ufCrmTask" not in task
    got = ok(http, hook, "tasks.task.get", {"taskId": task["id"], "select": ["ID", "UF_CRM_TASK"]})
    assert got["task"]["ufCrmTask"] == ["C_12", "D_71"]
    listed = call(
        http, hook, "tasks.task.list", {"filter": {"UF_CRM_TASK": "C_12", "RESPONSIBLE_ID": 5}}
    ).json()
    assert [t["id"] for t in listed["result"]["tasks"]] == [task["id"]]
    assert listed["total"] == 1
    done = ok(http, hook, "tasks.task.complete", {"taskId": int(task["id"])})["task"]
    assert done["status"] == "5"
    assert done["closedBy"] == "1"
    err(call(http, hook, "tasks.task.add", {}), 400, "100")
    err(call(http, hook, "tasks.task.add", {"fields": {"RESPONSIBLE_ID": 5}}), 400, "ERROR_CORE")
    err(
        call(http, hook, "tasks.task.add", {"fields": {"TITLE": "x", "RESPONSIBLE_ID": 404}}),
        400,
        "ERROR_CORE",
        'User specified in the "Responsible" field not found',
    )


def test_notifications(portal: SandboxPortal, http: requests.Session) -> None:
    hook = portal.webhook_url()
    first = ok(
        http,
        hook,
        "im.notify.system.add",
        {"USER_ID": 5, "MESSAGE": "Missed call", "TAG": "call|1"},
    )
    assert isinstance(first, int)
    second = ok(
        http, hook, "im.notify.personal.add", {"USER_ID": 5, "MESSAGE": "Again", "TAG": "call|1"}
    )
    stored = portal.control.notifications()
    assert [(n["ID"], n["TYPE"], n["MESSAGE"]) for n in stored] == [(second, "personal", "Again")]
    err(call(http, hook, "im.notify.system.add", {"MESSAGE": "x"}), 400, "USER_ID_EMPTY")
    err(call(http, hook, "im.notify.system.add", {"USER_ID": 5}), 400, "MESSAGE_EMPTY")


# --------------------------------------------------------------------------------------------
# Control API, persistence, command line


def test_control_api_roundtrip(portal: SandboxPortal, http: requests.Session) -> None:
    control = SandboxControl(portal.url, verify=portal.ca_cert_path)
    hook = portal.webhook_url()
    user = control.add_user(NAME="Olga", LAST_NAME="Zając", UF_DEPARTMENT=[2], UF_PHONE_INNER="120")
    assert ok(http, hook, "user.get", {"ID": user["ID"]})[0]["NAME"] == "Olga"
    control.deactivate_user(5)
    err(_register(http, hook), 400, "", "User is not found or is not active")
    assert control.delete_stage("C1:NEGOTIATION", category_id=1) == 1
    stages = ok(http, hook, "crm.status.list", {"filter": {"ENTITY_ID": "DEAL_STAGE_1"}})
    assert "C1:NEGOTIATION" not in [s["STATUS_ID"] for s in stages]
    new_id = control.add_contact(NAME="Jan", LAST_NAME="Test", PHONE=[{"VALUE": "+48 605 000 001"}])
    assert control.entity("contact", new_id)["PHONE"][0]["VALUE"] == "+48 605 000 001"
    assert ok(
        http, hook, "crm.duplicate.findbycomm", {"type": "PHONE", "values": ["+48605000001"]}
    ) == {"CONTACT": [new_id]}
    summary = control.state()
    assert summary["counts"]["contacts"] == 6
    assert summary["rate_limited_count"] == 0
    assert {r["method"] for r in control.requests()} >= {"user.get", "crm.status.list"}
    control.reset()
    assert control.state()["counts"]["contacts"] == 5
    assert ok(http, hook, "user.get", {"ID": 5})[0]["ACTIVE"] is True  # same webhook still works


def test_state_file_keeps_data_credentials_and_ca(tmp_path: Path) -> None:
    state_file = str(tmp_path / "portal.json")
    with SandboxPortal(drain_per_second=None, state_file=state_file) as first:
        hook = first.webhook_url()
        new_id = first.add_entity("CONTACT", {"NAME": "Persisted"})
        ca = Path(first.ca_cert_path).read_bytes()
        port = first.port
    with SandboxPortal(port=port, drain_per_second=None, state_file=state_file) as second:
        assert second.webhook_url() == hook
        resp = requests.post(
            hook + "crm.contact.get", json={"id": new_id}, verify=ca_file(tmp_path, ca)
        )
        assert resp.json()["result"]["NAME"] == "Persisted"
        assert second.state.counters["CONTACT"] == new_id


def ca_file(tmp_path: Path, pem: bytes) -> str:
    path = tmp_path / "old-ca.pem"
    path.write_bytes(pem)
    return str(path)


def test_python_m_sandbox_prints_coordinates_and_stops_on_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bitrix24_sandbox", "--port", "0", "--no-rate-limit"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        assert set(info) == {"url", "webhook_url", "ca_cert_path"}
        resp = requests.post(info["webhook_url"] + "profile", json={}, verify=info["ca_cert_path"])
        assert resp.json()["result"]["ID"] == "1"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_management_command_delegates_to_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    from crm.management.commands import bitrix24_sandbox

    seen: dict[str, Any] = {}
    monkeypatch.setattr(bitrix24_sandbox, "serve", lambda **kwargs: seen.update(kwargs))
    command = bitrix24_sandbox.Command()
    options = vars(
        command.create_parser("manage.py", "bitrix24_sandbox").parse_args(
            ["--port", "9443", "--no-seed", "--state-file", "/tmp/portal.json"]
        )
    )
    command.handle(**options)
    assert (seen["port"], seen["seed"], seen["state_file"]) == (9443, False, "/tmp/portal.json")
    assert (seen["host"], seen["drain_per_second"], seen["bucket_size"]) == ("127.0.0.1", 2.0, 50)


def test_latency_per_connection_and_per_request_and_connection_counts() -> None:
    with SandboxPortal(seed=True, drain_per_second=None, bucket_size=None) as portal:
        url = portal.webhook_url() + "crm.contact.get"
        assert portal.control.set_latency(connect_ms=1000, request_ms=100) == {
            "connect_ms": 1000,
            "request_ms": 100,
        }
        portal.reset()  # the latency survives a reset, like the rate limit
        assert portal.control.state()["latency"] == {"connect_ms": 1000, "request_ms": 100}
        opened_before = portal.control.state()["connections_opened"]

        keep_alive = make_session(portal)
        started = time.monotonic()
        assert keep_alive.post(url, json={"id": 12}).status_code == 200
        first = time.monotonic() - started
        started = time.monotonic()
        assert keep_alive.post(url, json={"id": 12}).status_code == 200
        second = time.monotonic() - started
        assert first >= 1.1  # handshake delay + request delay
        # Same connection: the request delay only (the bound only tells the two apart).
        assert 0.1 <= second < 1.0

        for _ in range(2):  # a fresh connection each time
            with make_session(portal) as fresh:
                assert fresh.post(url, json={"id": 12}).status_code == 200
        state = portal.control.state()
        assert state["rest_connections"] == 3
        assert state["connections_opened"] - opened_before == 3

        portal.reset()
        assert portal.control.state()["rest_connections"] == 0
        assert portal.control.set_latency() == {"connect_ms": 0, "request_ms": 0}
        assert keep_alive.post(url, json={"id": 12}).status_code == 200
        assert portal.control.state()["rest_connections"] == 1  # the kept-alive one

        with pytest.raises(SandboxControlError):
            portal.control._call("POST", "latency", {"connect_ms": -1})
