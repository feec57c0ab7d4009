"""A call's state as a pure function of the *set* of bridge events received for it.

Events of one call may arrive in any order and any number of times (network retries, offline
replay). Folding them in arrival order would make the final call depend on that order; instead
the state is recomputed from all events, taken in a canonical order, every time one arrives. So
the same set of events always gives the same call, and a repeated event changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

STARTED = "call.started"
ANSWERED = "call.answered"
ENDED = "call.ended"
EVENT_TYPES = (STARTED, ANSWERED, ENDED)
_TYPE_RANK = {STARTED: 0, ANSWERED: 1, ENDED: 2}

RINGING = "ringing"
IN_PROGRESS = "in_progress"
ENDED_STATUS = "ended"

# What the CRM lookup concluded about the caller (`Call.crm_status`); the others (pending,
# unavailable) mean it is not known yet.
FOUND, NOT_FOUND = "found", "not_found"
RESOLVED = (FOUND, NOT_FOUND)


@dataclass(frozen=True)
class EventFacts:
    """What one event says about its call (validated, timestamps aware)."""

    event_id: str
    type: str
    occurred_at: datetime
    direction: str = ""
    phone_number: str = ""
    outcome: str = ""
    duration_seconds: int | None = None

    def sort_key(self) -> tuple[int, datetime, str]:
        return (_TYPE_RANK[self.type], self.occurred_at, self.event_id)


@dataclass(frozen=True)
class CallState:
    direction: str = ""
    phone_raw: str = ""
    status: str = RINGING
    outcome: str = ""
    started_at: datetime | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    duration_seconds: int | None = None

    def as_dict(self) -> dict[str, object]:
        # Shallow (the values are immutable): dataclasses.asdict deep-copies, per event.
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def call_state_from(events: Iterable[EventFacts]) -> CallState:
    ordered = sorted(events, key=EventFacts.sort_key)
    if not ordered:
        return CallState()
    # The earliest event that carries a value wins: call.started is the most reliable witness
    # of direction and number, later events only fill what it did not say (or what was lost).
    direction = next((e.direction for e in ordered if e.direction), "")
    phone_raw = next((e.phone_number for e in ordered if e.phone_number), "")

    started = [e.occurred_at for e in ordered if e.type == STARTED]
    answered = [e.occurred_at for e in ordered if e.type == ANSWERED]
    ended = [e for e in ordered if e.type == ENDED]
    final = ended[0] if ended else None  # ended is final; of several, the canonical first

    outcome = final.outcome if final else ""
    duration = final.duration_seconds if final else None
    ended_at = final.occurred_at if final else None
    # A lone call.ended still gives a whole call: its talk time says when talking began.
    talk_began = ended_at - timedelta(seconds=duration) if ended_at and duration else None

    if started:
        started_at = min(started)
    else:
        candidates = [e.occurred_at for e in ordered]
        if talk_began is not None:
            candidates.append(talk_began)
        started_at = min(candidates)
    if answered:
        answered_at: datetime | None = min(answered)
    elif outcome == "answered":
        answered_at = talk_began or ended_at
    else:
        answered_at = None

    if final:
        status = ENDED_STATUS
    elif answered:
        status = IN_PROGRESS
    else:
        status = RINGING
    return CallState(
        direction=direction,
        phone_raw=phone_raw,
        status=status,
        outcome=outcome,
        started_at=started_at,
        answered_at=answered_at,
        ended_at=ended_at,
        duration_seconds=duration,
    )
