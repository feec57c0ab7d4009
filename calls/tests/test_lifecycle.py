"""The pure fold from a set of events to a call's state."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from calls.lifecycle import ANSWERED, ENDED, STARTED, CallState, EventFacts, call_state_from

T0 = datetime(2026, 11, 21, 13, 0, tzinfo=UTC)


def _facts() -> list[EventFacts]:
    return [
        EventFacts("1", STARTED, T0, direction="incoming", phone_number="+48600111222"),
        EventFacts("2", ANSWERED, T0 + timedelta(seconds=10)),
        EventFacts("3", ENDED, T0 + timedelta(seconds=70), outcome="answered", duration_seconds=60),
    ]


def test_every_order_and_repetition_gives_the_same_state() -> None:
    facts = _facts()
    expected = call_state_from(facts)
    assert expected == CallState(
        direction="incoming",
        phone_raw="+48600111222",
        status="ended",
        outcome="answered",
        started_at=T0,
        answered_at=T0 + timedelta(seconds=10),
        ended_at=T0 + timedelta(seconds=70),
        duration_seconds=60,
    )
    for order in itertools.permutations([*facts, facts[0], facts[2]]):
        assert call_state_from(order) == expected


def test_partial_sets_give_the_intermediate_states() -> None:
    started, answered, ended = _facts()
    assert call_state_from([started]).status == "ringing"
    assert call_state_from([answered]).status == "in_progress"
    assert call_state_from([answered, started]).started_at == T0
    lone = call_state_from([ended])
    assert lone.status == "ended"
    # Without call.started, talk time says when talking began.
    assert lone.started_at == lone.answered_at == T0 + timedelta(seconds=10)


def test_earliest_event_carrying_a_value_wins() -> None:
    started, _, ended = _facts()
    ended_with_other_number = EventFacts(
        "4", ENDED, ended.occurred_at, direction="outgoing", phone_number="+48999",
        outcome="answered", duration_seconds=60,
    )  # fmt: skip
    state = call_state_from([ended_with_other_number, started])
    assert (state.direction, state.phone_raw) == ("incoming", "+48600111222")
    assert call_state_from([ended_with_other_number]).direction == "outgoing"
