"""Property: whatever the order, repetition and batching of a call's events, the stored call is
the one its events describe (against the real database, through the real endpoint)."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calls.models import Call, CallEvent, CallSettings
from calls.selectors import call_settings_forget
from calls.tests.conftest import T0, Bridge, event
from crm.cache import cache_clear
from crm.models import Bitrix24Connection
from scenarios.models import ActionRun

OUTCOMES = ["answered", "missed", "rejected", "busy", "no_answer", "failed", "cancelled"]
FIELDS = [
    "direction", "phone_number", "phone_raw", "status", "outcome", "started_at", "answered_at",
    "ended_at", "duration_seconds",
]  # fmt: skip
_ids = itertools.count()


@st.composite
def call_events(draw: st.DrawFn) -> list[dict[str, Any]]:
    """The events one physical call produced (some may have been lost, but not all)."""
    direction = draw(st.sampled_from(["incoming", "outgoing"]))
    number = draw(st.sampled_from(["+48 600 111 222", "600111333", "+48601222333"]))
    outcome = draw(st.sampled_from(OUTCOMES))
    ring = draw(st.integers(0, 90))
    talk = draw(st.integers(1, 3600)) if outcome == "answered" else 0
    kept = draw(
        st.sets(st.sampled_from(["started", "answered", "ended"]), min_size=1).filter(
            lambda s: outcome == "answered" or "answered" not in s
        )
    )
    lone_ended_carries = draw(st.booleans())
    events = []
    if "started" in kept:
        events.append({"type": "call.started", "at": T0, "direction": direction,
                       "phone_number": number})  # fmt: skip
    if "answered" in kept:
        events.append({"type": "call.answered", "at": T0 + timedelta(seconds=ring)})
    if "ended" in kept:
        end: dict[str, Any] = {
            "type": "call.ended",
            "at": T0 + timedelta(seconds=ring + talk),
            "outcome": outcome,
            "duration_seconds": talk,
        }
        if "started" not in kept or lone_ended_carries:
            end.update(direction=direction, phone_number=number)
        events.append(end)
    return events


def _bodies(events: list[dict[str, Any]], call_id: str) -> list[dict[str, Any]]:
    bodies = []
    for spec in events:
        fields = {k: v for k, v in spec.items() if k not in ("type", "at")}
        bodies.append(event(spec["type"], call_id, at=spec["at"], event_id=str(uuid.uuid4()),
                            **fields))  # fmt: skip
    return bodies


def _deliver(
    bridge: Bridge, bodies: list[dict[str, Any]], plan: list[tuple[bool, list[int]]]
) -> None:
    for as_batch, indexes in plan:
        if as_batch:
            response = bridge.post("events/", {"events": [bodies[i] for i in indexes]})
            assert response.status_code == 200
            assert {r["status"] for r in response.json()["results"]} <= {"accepted", "duplicate"}
        else:
            for i in indexes:
                assert bridge.send(bodies[i]).status_code in (200, 201)


def _state(call_id: str) -> dict[str, Any]:
    call = Call.objects.get(call_id=call_id)
    state = {name: getattr(call, name) for name in FIELDS}
    state["runs"] = sorted(
        ActionRun.objects.filter(call=call).values_list("action_type", flat=True)
    )
    state["events"] = CallEvent.objects.filter(call=call).count()
    return state


@pytest.fixture
def unthrottled(bridge: Bridge) -> Iterator[Bridge]:
    # Hundreds of requests in a few seconds from one device: not what this test is about.
    CallSettings.objects.update_or_create(singleton=1, defaults={"throttle_per_minute": 10**6})
    # Nor is the CRM lookup (a single call.started asks Bitrix24, a batch does not): without a
    # portal both leave the caller unresolved, so only the events decide the call.
    Bitrix24Connection.objects.all().delete()
    cache_clear()  # lookups cached by earlier tests would answer without a portal
    call_settings_forget()
    yield bridge
    call_settings_forget()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(events=call_events(), data=st.data())
def test_any_order_repetition_and_batching_converges(
    unthrottled: Bridge, events: list[dict[str, Any]], data: st.DataObject
) -> None:
    n = next(_ids)
    shuffled_id, reference_id = f"p{n}", f"p{n}-ref"
    bodies = _bodies(events, shuffled_id)
    order = data.draw(st.permutations(range(len(bodies))))
    repeats = data.draw(st.lists(st.integers(0, len(bodies) - 1), max_size=4))
    sequence = data.draw(st.permutations(list(order) + repeats))
    plan: list[tuple[bool, list[int]]] = []
    rest = list(sequence)
    while rest:
        size = data.draw(st.integers(1, len(rest)))
        plan.append((data.draw(st.booleans()), rest[:size]))
        rest = rest[size:]
    bridge = unthrottled
    _deliver(bridge, bodies, plan)

    _deliver(bridge, _bodies(events, reference_id), [(False, list(range(len(events))))])
    shuffled, reference = _state(shuffled_id), _state(reference_id)
    assert shuffled == reference
    assert shuffled["events"] == len(events)  # every repeat was a no-op
    kinds = {e["type"] for e in events}
    assert (shuffled["status"] == "ended") == ("call.ended" in kinds)
    if "call.ended" in kinds:
        ended = next(e for e in events if e["type"] == "call.ended")
        assert shuffled["outcome"] == ended["outcome"]
        assert shuffled["ended_at"] == ended["at"]
    if "call.started" in kinds:
        assert shuffled["started_at"] == T0
