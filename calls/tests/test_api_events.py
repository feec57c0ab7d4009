"""The events endpoint against the contract: auth, validation, idempotency, batches, limits."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import cast

import pytest
from django.test import Client
from django_tenants.utils import schema_context

from calls.models import Call, CallEvent, CallSettings, CallTransition, Device
from calls.selectors import call_settings_forget
from calls.services import device_register, device_revoke
from calls.tests.conftest import T0, Bridge, ended, event, started
from scenarios.models import ActionRun
from tenants.models import Tenant


def _nothing_stored() -> bool:
    return not (Call.objects.exists() or CallEvent.objects.exists() or ActionRun.objects.exists())


# --- Authentication -----------------------------------------------------------------------


def test_missing_token_is_401(alpha: Tenant) -> None:
    response = Client(HTTP_HOST="alpha.localhost").post(
        "/api/bridge/v1/events/", data=json.dumps(started()), content_type="application/json"
    )
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert _nothing_stored()


@pytest.mark.parametrize("header", ["Bearer", "Token stx_abc", "Bearer stx_unknown", "Bearer a b"])
def test_malformed_or_unknown_token_is_401(device: Device, header: str) -> None:
    client = Client(HTTP_HOST="alpha.localhost", HTTP_AUTHORIZATION=header)
    response = client.post(
        "/api/bridge/v1/events/", data=json.dumps(started()), content_type="application/json"
    )
    assert response.status_code == 401
    assert _nothing_stored()


def test_revoked_token_is_401(device_and_token: tuple[Device, str]) -> None:
    device, token = device_and_token
    device_revoke(device=device)
    assert Bridge(token).send(started()).status_code == 401
    assert _nothing_stored()


def test_token_of_another_tenant_is_401_on_this_host(alpha: Tenant, beta: Tenant) -> None:
    with schema_context("beta"):
        _, beta_token = device_register(
            name="Beta phone", phone_number="+48500100999", bitrix24_user_id=5, country="PL"
        )
    assert Bridge(beta_token, host="alpha.localhost").send(started()).status_code == 401
    assert Bridge(beta_token, host="alpha.localhost").get("ping/").status_code == 401
    assert _nothing_stored()
    # ...while it works on its own host.
    assert Bridge(beta_token, host="beta.localhost").get("ping/").status_code == 200


def test_bridge_api_is_not_served_on_the_public_host(device_and_token: tuple) -> None:
    assert Bridge(device_and_token[1], host="localhost").get("ping/").status_code == 404


# --- Validation: 400 changes nothing ------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (started(occurred_at="2026-11-21T14:32:05"), "occurred_at"),
        (started(occurred_at="yesterday"), "occurred_at"),
        (ended(outcome="hung_up"), "outcome"),
        (started(call_id="bad call id!"), "call_id"),
        (started(call_id="x" * 65), "call_id"),
        (started(phone_number="+48" + "6" * 40), "phone_number"),
        (started(direction="sideways"), "direction"),
        (ended(duration_seconds=-1), "duration_seconds"),
        ({k: v for k, v in started().items() if k != "direction"}, "direction"),
        ({k: v for k, v in ended().items() if k != "outcome"}, "outcome"),
        (started(event_id="not-a-uuid"), "event_id"),
        (event("call.paused"), "type"),
    ],
)
def test_invalid_event_is_400_with_field_errors_and_changes_nothing(
    bridge: Bridge, body: dict, field: str
) -> None:
    if "occurred_at" in body and body.get("occurred_at") == "2026-11-21T14:32:05":
        assert "+" not in body["occurred_at"]
    response = bridge.send(body)
    assert response.status_code == 400
    assert field in response.json()
    assert _nothing_stored()


def test_malformed_json_is_400_and_changes_nothing(bridge: Bridge) -> None:
    response = bridge.client.post(
        "/api/bridge/v1/events/", data='{"event_id": "x",', content_type="application/json"
    )
    assert response.status_code == 400
    assert "detail" in response.json()
    assert _nothing_stored()


def test_body_that_is_not_an_object_is_400(bridge: Bridge) -> None:
    response = bridge.send([started()])
    assert response.status_code == 400
    assert _nothing_stored()


def test_oversized_body_is_413_and_changes_nothing(bridge: Bridge) -> None:
    body = started()
    body["padding"] = "x" * (600 * 1024)
    assert bridge.send(body).status_code == 413
    assert _nothing_stored()


def test_wrong_content_type_is_415(bridge: Bridge) -> None:
    response = bridge.client.post(
        "/api/bridge/v1/events/", data="type=call.started", content_type="text/plain"
    )
    assert response.status_code == 415
    assert _nothing_stored()


# --- Accepted events ----------------------------------------------------------------------


def test_first_event_creates_the_call_with_201_later_ones_answer_200(bridge: Bridge) -> None:
    first = bridge.send(event("call.answered", at=T0 + timedelta(seconds=5)))
    assert first.status_code == 201
    assert first.json()["status"] == "in_progress"
    second = bridge.send(ended())
    assert second.status_code == 200
    body = second.json()
    assert body["status"] == "ended"
    assert body["outcome"] == "answered"
    assert body["duration_seconds"] == 95


def test_lone_call_ended_with_direction_and_number_is_a_whole_call(bridge: Bridge) -> None:
    response = bridge.send(
        ended(
            direction="incoming", phone_number="600 111 222", outcome="missed", duration_seconds=0
        )
    )
    assert response.status_code == 201
    call = Call.objects.get()
    assert call.status == Call.Status.ENDED
    assert call.direction == "incoming"
    assert call.phone_number == "+48600111222"
    assert call.started_at == call.ended_at == T0 + timedelta(seconds=120)
    assert call.outcome == "missed"


def test_ended_is_final_even_when_call_started_arrives_after_it(bridge: Bridge) -> None:
    bridge.send(ended(direction="outgoing", phone_number="+48600111222", outcome="busy",
                      duration_seconds=0))  # fmt: skip
    response = bridge.post("events/", {"events": [started(direction="outgoing")]})
    assert response.json()["results"][0]["status"] == "accepted"
    call = Call.objects.get()
    assert call.status == Call.Status.ENDED
    assert call.outcome == "busy"
    assert call.started_at == T0  # the earliest, true start now that it is known


def test_same_event_id_same_body_answers_like_the_first_time(bridge: Bridge) -> None:
    body = ended(direction="incoming", phone_number="+48600111222")
    first = bridge.send(body)
    bridge.send(event("call.answered", at=T0 + timedelta(seconds=20)))
    again = bridge.send(dict(reversed(list(body.items()))))  # key order is not the body
    assert again.status_code == first.status_code == 201
    assert again.json() == first.json()
    assert CallEvent.objects.count() == 2


def test_same_event_id_other_body_is_409_and_changes_nothing(bridge: Bridge) -> None:
    body = ended(direction="incoming", phone_number="+48600111222")
    bridge.send(body)
    before = list(Call.objects.values())
    other = {**body, "outcome": "missed", "duration_seconds": 0}
    response = bridge.send(other)
    assert response.status_code == 409
    assert "detail" in response.json()
    assert list(Call.objects.values()) == before
    assert CallEvent.objects.count() == 1


def test_transitions_record_what_changed_and_which_event_did_it(bridge: Bridge) -> None:
    bridge.send(event("call.answered", at=T0 + timedelta(seconds=5)))
    bridge.send(ended())
    transitions = list(CallTransition.objects.order_by("pk"))
    assert [(t.from_status, t.to_status) for t in transitions] == [
        ("", "in_progress"),
        ("in_progress", "ended"),
    ]
    assert transitions[1].changes["outcome"] == ["", "answered"]
    assert transitions[1].event is not None
    assert transitions[1].event.type == "call.ended"


def test_accepted_events_plan_the_bitrix24_work_in_the_same_transaction(bridge: Bridge) -> None:
    bridge.send(ended(direction="incoming", phone_number="+48600111222", outcome="missed",
                      duration_seconds=0))  # fmt: skip
    call = Call.objects.get()
    assert ActionRun.objects.filter(call=call).exists()
    response = bridge.get(f"calls/{call.call_id}/")
    assert response.status_code == 200
    assert {a["type"] for a in response.json()["actions"]} == set(
        ActionRun.objects.filter(call=call).values_list("action_type", flat=True)
    )


# --- Batches ------------------------------------------------------------------------------


def test_batch_with_one_invalid_event_keeps_the_others(bridge: Bridge) -> None:
    good_start = started("b-1")
    good_end = ended("b-1")
    bad = started("b-2", occurred_at="2026-11-21T14:32:05")
    response = bridge.post("events/", {"events": [good_start, bad, good_end, good_start, "x"]})
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["status"] for r in results] == [
        "accepted",
        "invalid",
        "accepted",
        "duplicate",
        "invalid",
    ]
    assert [r["event_id"] for r in results[:4]] == [
        good_start["event_id"],
        bad["event_id"],
        good_end["event_id"],
        good_start["event_id"],
    ]
    assert "occurred_at" in results[1]["errors"]
    assert list(Call.objects.values_list("call_id", "status")) == [("b-1", "ended")]


def test_batch_reusing_an_event_id_with_another_body_marks_it_invalid(bridge: Bridge) -> None:
    first = started("b-1")
    bridge.send(first)
    response = bridge.post(
        "events/", {"events": [{**first, "direction": "outgoing"}, ended("b-1")]}
    )
    statuses = [r["status"] for r in response.json()["results"]]
    assert statuses == ["invalid", "accepted"]
    assert Call.objects.get().direction == "incoming"


@pytest.mark.parametrize("events", [[], [started(f"c-{i}") for i in range(101)], "nope"])
def test_batch_length_is_1_to_100(bridge: Bridge, events: object) -> None:
    response = bridge.post("events/", {"events": events})
    assert response.status_code == 400
    assert "events" in response.json()
    assert _nothing_stored()


# --- Scoping and throttling -----------------------------------------------------------------


def test_a_device_sees_only_its_own_calls(bridge: Bridge, device: Device) -> None:
    bridge.send(ended("shared-id", direction="incoming", phone_number="+48600111222"))
    _, other_token = device_register(
        name="Other", phone_number="+48500100300", bitrix24_user_id=9, country="PL"
    )
    other = Bridge(other_token)
    assert other.get("calls/shared-id/").status_code == 404
    assert other.post("calls/shared-id/notes/", {"text": "hi"}).status_code == 404
    # The same call_id on another device is another call.
    assert other.send(ended("shared-id", direction="outgoing", phone_number="+48600111333"))\
        .status_code == 201  # fmt: skip
    assert Call.objects.filter(call_id="shared-id").count() == 2
    assert bridge.get("calls/shared-id/").json()["direction"] == "incoming"


def _throttle_reset() -> None:
    from django.core.cache import cache
    from django.core.cache.backends.redis import RedisCache

    redis = cast(RedisCache, cache)._cache.get_client("x", write=True)
    for key in redis.scan_iter("simtrix:throttle:alpha:*"):
        redis.delete(key)


def test_throttled_device_gets_429_with_retry_after(
    bridge: Bridge, alpha: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One still minute: five requests must not straddle two of the throttle's windows.
    monkeypatch.setattr("calls.api.auth._clock", lambda: 1_800_000_030.0)
    CallSettings.objects.update_or_create(singleton=1, defaults={"throttle_per_minute": 3})
    call_settings_forget()
    _throttle_reset()
    try:
        codes = [bridge.get("ping/").status_code for _ in range(5)]
        assert codes[:3] == [200, 200, 200]
        assert codes[3:] == [429, 429]
        response = bridge.get("ping/")
        assert response.headers["Retry-After"] == "30"
    finally:
        call_settings_forget()
        _throttle_reset()


def test_event_serializers_share_fields_but_never_answers() -> None:
    """The fields are built once per process (speed); each event still gets its own errors
    and values, whatever was validated before it, on any thread."""
    import threading

    from calls.api.serializers import EventSerializer

    bad = {**ended(), "outcome": "lost", "occurred_at": "2026-11-21T14:32:05"}
    first, second = EventSerializer(data=bad), EventSerializer(data=started())
    assert first.fields is second.fields
    assert not first.is_valid()
    assert set(first.errors) == {"outcome", "occurred_at"}
    assert second.is_valid(), second.errors
    assert second.validated_data["direction"] == "incoming"

    failures: list[str] = []

    def validate(index: int) -> None:
        for round_ in range(200):
            valid = (index + round_) % 2 == 0
            data = {**started(call_id=f"t{index}-{round_}")} if valid else {**bad}
            serializer = EventSerializer(data=data)
            if serializer.is_valid() != valid:
                failures.append(f"{index}/{round_}: {serializer.errors}")
            elif valid and serializer.validated_data["call_id"] != f"t{index}-{round_}":
                failures.append(f"{index}/{round_}: another event's value")

    threads = [threading.Thread(target=validate, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
