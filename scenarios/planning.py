"""From a call and the tenant's scenarios to the steps that should run: pure planning.

The same functions drive the real engine (`services.scenario_on_call_event` writes the steps as
outbox rows) and the admin's "simulate" page (which only shows them), so what the page shows
is what would happen.

A call is planned in two phases, each exactly once:
- start: once the caller is known. For an unknown number, the unknown-number scenario (its lead
  or deal is created first: a call's CRM binding is fixed when it is registered, REFERENCE 7.16);
  then, while the call still rings, the registration that pops the CRM card for the users that
  the "open the CRM card" actions of the call's direction name.
- end: once the outcome is known, the outcome's scenario. Its steps wait for the new lead or
  deal when there is one, the timeline activity waits for the registration, the post-call sync
  waits for the activity.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.utils import translation
from django.utils.translation import gettext, gettext_noop

from calls.lifecycle import FOUND, NOT_FOUND
from common.crypto import secret_encrypt
from crm.domain import CrmObject
from scenarios.choices import CREATION_TYPES, ActionType, InternalAction, Trigger
from scenarios.models import ScenarioAction
from scenarios.routing.rules import Route
from scenarios.worktime import WorkSchedule, due_at, schedule_is_open

Action = ScenarioAction

DIRECTION_TRIGGERS = {
    "incoming": (Trigger.INCOMING_ANSWERED, Trigger.INCOMING_MISSED, Trigger.INCOMING_REJECTED),
    "outgoing": (Trigger.OUTGOING_ANSWERED, Trigger.OUTGOING_NOT_ANSWERED),
}


def trigger_for(*, direction: str, outcome: str) -> str | None:
    """The outcome's scenario. Unanswered incoming calls that are not rejected count as missed."""
    if not outcome or direction not in DIRECTION_TRIGGERS:
        return None
    if direction == "incoming":
        if outcome == "answered":
            return Trigger.INCOMING_ANSWERED
        if outcome == "rejected":
            return Trigger.INCOMING_REJECTED
        return Trigger.INCOMING_MISSED
    return Trigger.OUTGOING_ANSWERED if outcome == "answered" else Trigger.OUTGOING_NOT_ANSWERED


@dataclass(frozen=True)
class CallFacts:
    """What planning needs to know about a call (a real one, or one the simulator imagines)."""

    direction: str
    phone_number: str
    ended: bool
    outcome: str = ""
    started_at: datetime | None = None
    ended_at: datetime | None = None
    crm: CrmObject | dict[str, Any] = field(default_factory=dict)
    route: Route = field(default_factory=Route)
    agent_id: int | None = None
    # The phone (line) the call is on: a scenario limited to it wins over the tenant-wide one.
    device_id: int | None = None

    @property
    def crm_status(self) -> str:
        return str(self.crm.get("status") or "")

    @property
    def caller_known(self) -> bool:
        return self.crm_status == FOUND

    @property
    def routed_user_id(self) -> int | None:
        return _user_id(self.route.get("user"))

    @property
    def responsible_id(self) -> int | None:
        return _user_id(self.crm.get("responsible"))


def _user_id(value: Any) -> int | None:
    if isinstance(value, dict) and isinstance(value.get("id"), int):
        return value["id"]
    return None


@dataclass
class Step:
    """One run to plan. `key` is unique within the call; `after` names the step it waits for."""

    key: str
    action_type: str
    label: str
    params: dict[str, Any] = field(default_factory=dict)
    after: str | None = None
    delay_seconds: int = 0
    working_time: bool = False
    # Counting starts here when the step waits for nothing (or its predecessor already finished).
    base_at: datetime | None = None


@dataclass(frozen=True)
class ScenarioEntry:
    """One active scenario: its name, active actions in order, and the devices it is limited
    to (empty: the whole tenant)."""

    name: str
    actions: tuple[dict[str, Any], ...]
    devices: frozenset[int] = frozenset()


@dataclass(frozen=True)
class ScenarioConfig:
    """A snapshot of the tenant's active scenarios: trigger -> its scenarios."""

    scenarios: dict[str, tuple[ScenarioEntry, ...]]

    def scenario(self, trigger: str | None, device_id: int | None = None) -> ScenarioEntry | None:
        """The scenario a call on `device_id` follows for `trigger`: the one limited to that
        device, else the tenant-wide one (None: no active scenario)."""
        entries = self.scenarios.get(trigger or "", ())
        mine = next((e for e in entries if device_id is not None and device_id in e.devices), None)
        return mine or next((e for e in entries if not e.devices), None)

    def actions(
        self, trigger: str | None, device_id: int | None = None
    ) -> tuple[dict[str, Any], ...]:
        entry = self.scenario(trigger, device_id)
        return entry.actions if entry else ()


def office_open_at(schedule: WorkSchedule, facts: CallFacts, now: datetime) -> bool:
    return schedule_is_open(schedule, facts.started_at or facts.ended_at or now)


def _hours_allow(action: dict[str, Any], office_open: bool) -> bool:
    return (
        action["hours"] == Action.Hours.ALWAYS
        or (action["hours"] == Action.Hours.OPEN and office_open)
        or (action["hours"] == Action.Hours.CLOSED and not office_open)
    )


def _label(trigger: str, action: dict[str, Any]) -> str:
    # Stored on the run, like every run's label, in English whatever language the request or
    # worker that plans it speaks; `label_shown` gives it in the reader's language.
    with translation.override("en"):
        return f"{Trigger(trigger).label}: {ActionType(action['action_type']).label}"


def label_shown(label: str, *, action_type: str, params: dict[str, Any]) -> str:
    """A run's (or step's) stored label in the active language, for the admin's pages."""
    trigger = params.get("trigger")
    if (
        trigger in Trigger.values
        and action_type in ActionType.values
        and label == _label(trigger, {"action_type": action_type})
    ):
        return f"{Trigger(trigger).label}: {ActionType(action_type).label}"
    # The engine's fixed labels are in the catalog (gettext_noop where they are planned).
    return gettext(label) if label else label


def _english(text: Any) -> str:
    with translation.override("en"):
        return str(text)


def _action_params(trigger: str, action: dict[str, Any], office_open: bool) -> dict[str, Any]:
    # A snapshot: a run does what was configured when it was planned, even if the scenario is
    # edited or re-imported before it is due. A webhook's secret stays encrypted in it.
    config = {k: v for k, v in action.items() if k not in ("id", "position", "scenario")}
    if config.get("secret"):
        config["secret"] = secret_encrypt(config["secret"])
    params = {"action": config, "trigger": trigger, "office_open": office_open}
    if action.get("scenario"):
        params["scenario"] = action["scenario"]
    return params


def card_users(facts: CallFacts, action: dict[str, Any]) -> list[int]:
    wanted = []
    if action["card_for"] in (Action.CardFor.ROUTED, Action.CardFor.BOTH):
        wanted.append(facts.routed_user_id or facts.agent_id)
    if action["card_for"] in (Action.CardFor.AGENT, Action.CardFor.BOTH):
        wanted.append(facts.agent_id)
    return [user for user in dict.fromkeys(wanted) if user]


def plan_start(
    *, facts: CallFacts, config: ScenarioConfig, office_open: bool, now: datetime
) -> tuple[list[Step], str | None]:
    """Steps once the caller is known; also returns the key of the lead/deal creation, if any."""
    steps: list[Step] = []
    anchor: str | None = None
    base = facts.ended_at if facts.ended else now
    if facts.crm_status == NOT_FOUND:
        trigger = Trigger.UNKNOWN_NUMBER
        actions = [
            a for a in config.actions(trigger, facts.device_id) if _hours_allow(a, office_open)
        ]
        creation = next((a for a in actions if a["action_type"] in CREATION_TYPES), None)
        if creation is not None:
            anchor = f"unknown:{creation['id']}"
            steps.append(
                Step(
                    key=anchor,
                    action_type=creation["action_type"],
                    label=_label(trigger, creation),
                    params=_action_params(trigger, creation, office_open),
                    base_at=now,
                )
            )
        previous = anchor
        for action in actions:
            if action is creation or action["action_type"] == ActionType.SHOW_CARD:
                continue
            step = _step_for(
                trigger=trigger, action=action, office_open=office_open,
                key=f"unknown:{action['id']}", previous=previous, anchor=anchor, base=base,
            )  # fmt: skip
            steps.append(step)
            previous = step.key

    if not facts.ended:
        triggers = list(DIRECTION_TRIGGERS.get(facts.direction, ()))
        if facts.crm_status == NOT_FOUND:
            triggers.append(Trigger.UNKNOWN_NUMBER)
        show_to: list[int] = []
        for trigger in triggers:
            for action in config.actions(trigger, facts.device_id):
                if action["action_type"] == ActionType.SHOW_CARD and _hours_allow(
                    action, office_open
                ):
                    show_to += [u for u in card_users(facts, action) if u not in show_to]
        # Registration exists to pop the card: without one, logging registers at the end.
        if show_to:
            steps.append(
                Step(
                    key=InternalAction.REGISTER_CALL,
                    action_type=InternalAction.REGISTER_CALL,
                    label=gettext_noop("While it rings: open the CRM card"),
                    params={"show_to": show_to},
                    after=anchor,
                    base_at=now,
                )
            )
    return steps, anchor


def _step_for(
    *,
    trigger: str,
    action: dict[str, Any],
    office_open: bool,
    key: str,
    previous: str | None,
    anchor: str | None,
    base: datetime | None,
) -> Step:
    # "Before a date": due when the call is over; the run reads the date then and waits for its
    # moment (scenarios.handlers), as it cannot be known while the bridge's event is recorded.
    delayed = action["timing"] not in (Action.Timing.IMMEDIATELY, Action.Timing.BEFORE_DATE)
    step = Step(
        key=key,
        action_type=action["action_type"],
        label=_label(trigger, action),
        params=_action_params(trigger, action, office_open),
        delay_seconds=action["delay_minutes"] * 60 if delayed else 0,
        working_time=delayed and action["delay_in_working_time"],
        base_at=base,
    )
    if action["timing"] == Action.Timing.AFTER_PREVIOUS and previous:
        step.after = previous
    else:
        # Work on the caller's entity waits until a new lead or deal exists.
        step.after = anchor
    return step


def plan_end(
    *,
    facts: CallFacts,
    config: ScenarioConfig,
    office_open: bool,
    now: datetime,
    anchor: str | None,
    registered: str | None,
) -> tuple[str | None, list[Step]]:
    """The outcome scenario's steps; `anchor` is the creation step, `registered` the register."""
    trigger = trigger_for(direction=facts.direction, outcome=facts.outcome)
    steps: list[Step] = []
    if trigger is None:
        return None, steps
    base = facts.ended_at or now
    previous: str | None = None
    logged: str | None = None
    for action in config.actions(trigger, facts.device_id):
        kind = action["action_type"]
        if kind == ActionType.SHOW_CARD or not _hours_allow(action, office_open):
            continue
        if kind == ActionType.LOG_CALL:
            if logged:
                continue
            logged = "log_call"
            step = Step(
                key=logged,
                action_type="log_call",
                label=_label(trigger, action),
                params={"trigger": trigger},
                after=registered or anchor,
                base_at=base,
            )
        else:
            step = _step_for(
                trigger=trigger, action=action, office_open=office_open,
                key=f"end:{action['id']}", previous=previous, anchor=anchor, base=base,
            )  # fmt: skip
            if (
                kind == ActionType.POST_CALL_SYNC
                and logged
                and action["timing"] != Action.Timing.AFTER_PREVIOUS
            ):
                # Notes and the recording go into the activity, so it must exist first.
                step.after = logged
        steps.append(step)
        previous = step.key
    if registered and not logged:
        # The card popped while ringing but the outcome is not logged: close it in Bitrix24.
        steps.append(
            Step(
                key=InternalAction.HIDE_CARD,
                action_type=InternalAction.HIDE_CARD,
                label=f"{_english(Trigger(trigger).label)}: close the CRM card (the call is not "
                "logged)",
                after=registered,
                base_at=base,
            )
        )
    return trigger, steps


def steps_expected_due(
    steps: list[Step], schedule: WorkSchedule, *, known: dict[str, datetime] | None = None
) -> dict[str, datetime]:
    """When each step would be due if every step finished the moment it became due."""
    due: dict[str, datetime] = dict(known or {})
    for step in steps:
        # As the engine does: counted from the base, or from when the predecessor finished if
        # that is later (a lead made while ringing is long done when the call ends).
        starts = [t for t in (due.get(step.after or ""), step.base_at) if t is not None]
        assert starts, f"step {step.key} has no base time"
        base = max(starts)
        due[step.key] = due_at(
            schedule, base=base, delay_seconds=step.delay_seconds, working_time=step.working_time
        )
    return due
