"""Bad input on every bridge endpoint: a clear 400 (413/415), never a 500, and nothing changed.

Each case here was an HTTP 500 once (issue 13's probe) or stored more than the contract says. The
clients re-raise nothing (`raise_request_exception = False`), so a crash shows up as the 500 a
phone would get, not as a Python error in the test.
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from calls.api.parsers import MAX_JSON_DEPTH
from calls.api.serializers import EVENT_MAX_AGE, EVENT_MAX_AHEAD
from calls.models import Call, CallEvent, CallNote, CallRecording, Device
from calls.tests.conftest import SERVER_NOW, T0, Bridge, ended, event, started
from scenarios.models import ActionRun


@pytest.fixture
def phone(device_and_token: tuple[Device, str]) -> Bridge:
    """The device's client, which answers a crash with the 500 instead of raising it."""
    bridge = Bridge(device_and_token[1])
    bridge.client.raise_request_exception = False
    return bridge


@pytest.fixture
def call(phone: Bridge) -> Call:
    response = phone.send(ended("bad-1", direction="incoming", phone_number="+48600111222"))
    assert response.status_code == 201
    return Call.objects.get(call_id="bad-1")


def _nothing_stored() -> bool:
    return not (Call.objects.exists() or CallEvent.objects.exists() or ActionRun.objects.exists())


def _post_raw(phone: Bridge, path: str, raw: str | bytes) -> Any:
    return phone.client.post(f"/api/bridge/v1/{path}", data=raw, content_type="application/json")


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# Every JSON endpoint of the bridge, with a valid body to spoil (notes need a call: `call`).
JSON_ENDPOINTS = ["events/", "lookup/", "heartbeat/", "calls/bad-1/notes/"]
VALID_BODIES: dict[str, Any] = {
    "lookup/": {"phone_number": "+48 600 111 222"},
    "heartbeat/": {"app_version": "1.4.2"},
    "calls/bad-1/notes/": {"text": "Call back on Monday"},
}


def _valid_body(path: str) -> dict[str, Any]:
    return dict(VALID_BODIES[path]) if path in VALID_BODIES else started("c-9")


# --- The multipart `file` sent as a text field (the fuzzer's 199 500s) --------------------------


def test_recording_file_sent_as_a_text_field_is_400_and_stores_nothing(
    phone: Bridge, call: Call
) -> None:
    response = phone.put("calls/bad-1/recording/", {"file": "not a file"}, format="multipart")
    assert response.status_code == 400
    assert "file" in response.json()
    assert not CallRecording.objects.exists()


def test_recording_without_any_file_part_is_400(phone: Bridge, call: Call) -> None:
    response = phone.put("calls/bad-1/recording/", {"other": "x"}, format="multipart")
    assert response.status_code == 400
    assert response.json() == {"file": ["No file was submitted."]}


def test_recording_with_an_empty_file_part_is_400(phone: Bridge, call: Call) -> None:
    upload = SimpleUploadedFile("rec.mp3", b"", content_type="audio/mpeg")
    response = phone.put("calls/bad-1/recording/", {"file": upload}, format="multipart")
    assert response.status_code == 400
    assert not CallRecording.objects.exists()


# --- JSON nested deeper than a bridge ever sends ----------------------------------------------


@pytest.mark.parametrize("path", JSON_ENDPOINTS)
@pytest.mark.parametrize("depth", [50_000, MAX_JSON_DEPTH + 1])
def test_json_nested_too_deep_is_400_on_every_endpoint(
    phone: Bridge, call: Call, path: str, depth: int
) -> None:
    """50 000 levels crashed the parser (RecursionError); the limit refuses far less."""
    notes = CallNote.objects.count()
    body = json.dumps(_valid_body(path))[:-1] + ', "extra": ' + _nested(depth) + "}"
    response = _post_raw(phone, path, body)
    assert response.status_code == 400
    assert "nested" in response.json()["detail"]
    assert CallNote.objects.count() == notes
    assert Call.objects.count() == 1


def test_json_at_the_depth_limit_is_accepted(phone: Bridge) -> None:
    body = json.dumps(started("deep"))[:-1] + ', "extra": ' + _nested(MAX_JSON_DEPTH - 1) + "}"
    assert _post_raw(phone, "events/", body).status_code == 201


# --- What PostgreSQL cannot store, or JSON does not have ----------------------------------------

UNSTORABLE = {
    "NUL": '"a\\u0000b"',
    "lone high surrogate": '"\\ud800"',
    "lone low surrogate": '"x\\udfffy"',
    "NaN": "NaN",
    "Infinity": "Infinity",
    "-Infinity": "-Infinity",
    "a number too large for a float": "1e400",
}


@pytest.mark.parametrize("path", JSON_ENDPOINTS)
@pytest.mark.parametrize("value", UNSTORABLE.values(), ids=UNSTORABLE.keys())
def test_unstorable_value_in_an_unknown_field_is_400(
    phone: Bridge, call: Call, path: str, value: str
) -> None:
    notes = CallNote.objects.count()
    body = json.dumps(_valid_body(path))[:-1] + ', "extra": {"deep": [' + value + "]}}"
    response = _post_raw(phone, path, body)
    assert response.status_code == 400, response.content
    assert response.json()["detail"]
    assert CallNote.objects.count() == notes
    assert (Call.objects.count(), CallEvent.objects.count()) == (1, 1)


@pytest.mark.parametrize("value", UNSTORABLE.values(), ids=UNSTORABLE.keys())
def test_unstorable_value_in_a_batch_is_400_for_the_whole_batch(phone: Bridge, value: str) -> None:
    """A body PostgreSQL cannot hold is refused whole, before any of its events is read."""
    good = json.dumps(started("b-1"))
    bad = json.dumps(started("b-2"))[:-1] + ', "phone_number": ' + value + "}"
    response = _post_raw(phone, "events/", '{"events": [' + good + ", " + bad + "]}")
    assert response.status_code == 400
    assert _nothing_stored()


@pytest.mark.parametrize("key", ['"a\\u0000"', '"\\ud83d"'])
def test_unstorable_key_is_400(phone: Bridge, key: str) -> None:
    body = json.dumps(started())[:-1] + f", {key}: 1}}"
    assert _post_raw(phone, "events/", body).status_code == 400
    assert _nothing_stored()


@pytest.mark.parametrize(
    "field", ["call_id", "phone_number", "direction", "outcome", "event_id", "type"]
)
@pytest.mark.parametrize("value", ["a\x00b", "\ud800"])
def test_unstorable_value_in_a_known_field_is_400(phone: Bridge, field: str, value: str) -> None:
    body = json.dumps({**ended(direction="incoming", phone_number="600 111 222"), field: value})
    assert _post_raw(phone, "events/", body).status_code == 400
    assert _nothing_stored()


def test_a_surrogate_pair_is_an_ordinary_character(phone: Bridge) -> None:
    """Escaped pairs (an emoji) are valid JSON and valid UTF-8 once joined: accepted."""
    body = json.dumps(started("emoji"))[:-1] + ', "extra": "\\ud83d\\ude00"}'
    assert _post_raw(phone, "events/", body).status_code == 201


def test_invalid_utf8_is_400(phone: Bridge) -> None:
    raw = json.dumps(started()).encode().replace(b"+48", b"\xed\xa0\x80")
    assert _post_raw(phone, "events/", raw).status_code == 400
    assert _nothing_stored()


# --- Timestamps ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "occurred_at",
    [
        "0001-01-01T00:00:00+01:00",  # OverflowError once: before datetime.min in UTC
        "0001-01-01T00:00:00+00:00",
        "9999-12-31T23:59:59-01:00",  # OverflowError once: after datetime.max in UTC
        "9999-12-31T23:59:59+00:00",
        "1970-01-01T00:00:00Z",
        "2126-01-01T00:00:00+01:00",
    ],
)
def test_timestamp_far_from_now_is_400(phone: Bridge, occurred_at: str) -> None:
    response = phone.send(started(occurred_at=occurred_at))
    assert response.status_code == 400
    assert "occurred_at" in response.json()
    assert _nothing_stored()


@pytest.mark.parametrize("occurred_at", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_timestamp_far_from_now_in_a_batch_marks_only_that_event(
    phone: Bridge, occurred_at: str
) -> None:
    response = phone.send({"events": [started("b-1"), started("b-2", occurred_at=occurred_at)]})
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["accepted", "invalid"]
    assert "occurred_at" in results[1]["errors"]
    assert list(Call.objects.values_list("call_id", flat=True)) == ["b-1"]


def test_window_is_30_days_back_and_an_hour_ahead_of_the_server_clock(phone: Bridge) -> None:
    assert timedelta(days=30) == EVENT_MAX_AGE
    assert timedelta(hours=1) == EVENT_MAX_AHEAD
    second = timedelta(seconds=1)
    too_old = phone.send(started("old", at=SERVER_NOW - EVENT_MAX_AGE - second))
    too_new = phone.send(started("new", at=SERVER_NOW + EVENT_MAX_AHEAD + second))
    assert (too_old.status_code, too_new.status_code) == (400, 400)
    assert "30 days" in too_old.json()["occurred_at"][0]
    assert "1 hour" in too_new.json()["occurred_at"][0]
    assert _nothing_stored()
    oldest = phone.send(started("oldest", at=SERVER_NOW - EVENT_MAX_AGE + second))
    newest = phone.send(started("newest", at=SERVER_NOW + EVENT_MAX_AHEAD - second))
    assert (oldest.status_code, newest.status_code) == (201, 201)


def test_window_follows_the_real_clock(phone: Bridge, monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside the tests' pinned clock: the server's own time decides."""
    from django.utils import timezone

    from calls.api import serializers

    monkeypatch.setattr(serializers, "_server_now", timezone.now)
    now = timezone.now()
    assert phone.send(started("now", at=now)).status_code == 201
    assert phone.send(started("long-ago", at=now - timedelta(days=31))).status_code == 400


# --- event_id: a UUID string only --------------------------------------------------------------


@pytest.mark.parametrize("event_id", [1, 0, True, False, 1.5, None, [], {}, "", "1"])
def test_event_id_that_is_not_a_uuid_string_is_400(phone: Bridge, event_id: object) -> None:
    body = {**started(), "event_id": event_id}
    response = phone.send(body)
    assert response.status_code == 400
    assert "event_id" in response.json()
    assert _nothing_stored()


def test_event_id_that_is_not_a_string_is_invalid_in_a_batch(phone: Bridge) -> None:
    response = phone.send({"events": [{**started("b-1"), "event_id": 7}, started("b-2")]})
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["invalid", "accepted"]
    assert results[0]["event_id"] is None  # only a string is echoed (the schema says so)
    assert "event_id" in results[0]["errors"]


def test_event_id_in_capitals_is_the_same_event(phone: Bridge) -> None:
    event_id = str(uuid.uuid4())
    first = phone.send(started(event_id=event_id))
    again = phone.send(started(event_id=event_id.upper()))
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()
    assert CallEvent.objects.count() == 1


# --- Unknown fields are ignored: not stored, not part of the idempotency key ---------------------


def test_unknown_fields_are_not_stored(phone: Bridge) -> None:
    body = started(event_id=str(uuid.uuid4()), battery=0.42, notes={"free": "x" * 100_000})
    assert phone.send(body).status_code == 201
    stored = CallEvent.objects.get().body
    assert stored == {k: v for k, v in body.items() if k not in ("battery", "notes")}


def test_resend_with_other_unknown_fields_is_a_duplicate(phone: Bridge) -> None:
    body = started()
    first = phone.send({**body, "app_build": 101})
    again = phone.send({**body, "app_build": 102, "signal": "weak"})
    plain = phone.send(body)
    assert (first.status_code, again.status_code, plain.status_code) == (201, 201, 201)
    assert again.json() == plain.json() == first.json()
    assert CallEvent.objects.count() == 1


def test_resend_with_another_known_field_is_still_409(phone: Bridge) -> None:
    body = started()
    assert phone.send({**body, "app_build": 101}).status_code == 201
    assert phone.send({**body, "phone_number": "+48 600 999 999"}).status_code == 409


def test_a_resend_of_an_event_stored_before_unknown_fields_were_dropped_is_a_duplicate(
    phone: Bridge,
) -> None:
    """Events stored earlier kept the whole body and were hashed over it: still a duplicate."""
    from calls.intake import _body_hash

    body = started(app_build=101)
    assert phone.send(body).status_code == 201
    CallEvent.objects.update(body=body, body_hash=_body_hash(body))
    assert phone.send(body).status_code == 201
    assert CallEvent.objects.count() == 1


def test_stored_body_holds_the_validated_values(phone: Bridge) -> None:
    """A duration sent as "95" is stored as 95: the next event of the call recomputes the state
    from the stored events (a string there once crashed the second event)."""
    response = phone.send(
        ended(direction="incoming", phone_number=" 600 111 222 ", duration_seconds="95")
    )
    assert response.status_code == 201
    stored = CallEvent.objects.get().body
    assert stored["duration_seconds"] == 95
    assert stored["phone_number"] == "600 111 222"
    later = phone.send(event("call.answered", at=T0 + timedelta(seconds=10)))
    assert later.status_code == 200, later.content
    assert later.json()["duration_seconds"] == 95


# --- Path parameters --------------------------------------------------------------------------


@pytest.mark.parametrize("call_id", ["%00", "a%00b", "x" * 65, "bad%20id"])
def test_call_id_that_cannot_be_one_is_404(phone: Bridge, call_id: str) -> None:
    assert phone.get(f"calls/{call_id}/").status_code == 404
    assert phone.post(f"calls/{call_id}/notes/", {"text": "x"}).status_code == 404
    response = phone.put(f"calls/{call_id}/recording/", b"ID3", content_type="audio/mpeg")
    assert response.status_code == 404


# --- Other endpoints, other shapes ------------------------------------------------------------


@pytest.mark.parametrize("path", JSON_ENDPOINTS)
@pytest.mark.parametrize("raw", ["[]", '"text"', "12", "null", "[{}]"])
def test_body_that_is_not_an_object_is_400(phone: Bridge, call: Call, path: str, raw: str) -> None:
    response = _post_raw(phone, path, raw)
    assert response.status_code == 400, response.content


@pytest.mark.parametrize("path", JSON_ENDPOINTS)
def test_empty_body_is_400(phone: Bridge, call: Call, path: str) -> None:
    assert _post_raw(phone, path, b"").status_code == 400


def test_lookup_with_a_number_that_is_not_a_string_is_400(phone: Bridge) -> None:
    for value in (48600111222, ["+48600111222"], {"n": 1}, True):
        assert phone.post("lookup/", {"phone_number": value}).status_code == 400


def test_heartbeat_of_a_wrong_shape_is_400(phone: Bridge, device: Device) -> None:
    for body in ({"app_version": ["1"]}, {"app_version": "x" * 33}, {}):
        assert phone.post("heartbeat/", body).status_code == 400
    device.refresh_from_db()
    assert device.app_version == ""


def test_malformed_json_is_400_on_every_endpoint(phone: Bridge, call: Call) -> None:
    for path in JSON_ENDPOINTS:
        assert _post_raw(phone, path, '{"text": "x",').status_code == 400


def test_bad_input_before_authentication_is_401_not_500(alpha: object) -> None:
    client = Client(HTTP_HOST="alpha.localhost", raise_request_exception=False)
    response = client.post(
        "/api/bridge/v1/events/", data=_nested(50_000), content_type="application/json"
    )
    assert response.status_code == 401
