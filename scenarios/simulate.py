"""The admin's "simulate" page: what the scenarios would do for an imagined call.

It runs the real planning (`planning.plan_start` / `plan_end`) on imagined call facts and
resolves users the way the handlers would, but writes nothing: the caller is taken from the
last call with that number (or what the form says), or, when asked, looked up in Bitrix24 now
(a read, as the routing test box does; then the actions' conditions read the caller's real
fields); round-robin only peeks at whose turn it is. It names the scenario that applies: the
one limited to the call's device, else the tenant-wide one.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo

from django import forms
from django.utils import timezone
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from calls.lifecycle import RESOLVED
from calls.models import Call, Device
from calls.selectors import routing_facts_from_crm
from common.phones import InvalidPhoneNumber, phone_to_e164
from crm.domain import CrmObject, RoutingFacts
from crm.errors import Bitrix24Error
from crm.mapping import routing_facts
from crm.selectors import crm_find_by_phone
from scenarios.choices import CREATION_TYPES, NEEDS_RESPONSIBLE, ActionType, InternalAction, Trigger
from scenarios.conditions import conditions_check
from scenarios.models import ScenarioAction
from scenarios.planning import (
    CallFacts,
    Step,
    label_shown,
    office_open_at,
    plan_end,
    plan_start,
    steps_expected_due,
)
from scenarios.routing.rules import Route
from scenarios.routing.services import route_decide_call, route_effective
from scenarios.selectors import (
    Directory,
    action_reference_problems,
    agents,
    directory,
    scenario_config,
)
from scenarios.services import Unresolvable, responsible_resolve
from scenarios.worktime import work_schedule
from sms.services import sms_guard_problem
from tenants.context import tenant_country, tenant_timezone

Action = ScenarioAction
OUTCOMES = [
    ("incoming:answered", _("Incoming call, answered")),
    ("incoming:missed", _("Incoming call, missed")),
    ("incoming:rejected", _("Incoming call, rejected")),
    ("outgoing:answered", _("Outgoing call, answered")),
    ("outgoing:no_answer", _("Outgoing call, no answer")),
    ("outgoing:busy", _("Outgoing call, busy")),
    ("outgoing:failed", _("Outgoing call, failed")),
    ("outgoing:cancelled", _("Outgoing call, cancelled")),
]
RING_SECONDS = 20
# What conditions read of a caller the simulation knows nothing about.
_NO_FACTS: RoutingFacts = {"entity_type": "", "entity": {}, "responsible_id": None, "deals": []}


class SimulateForm(forms.Form):
    outcome = forms.ChoiceField(choices=OUTCOMES, label=_("Outcome"))
    phone_number = forms.CharField(max_length=32, initial="+48600111222", label=_("Phone number"))
    at = forms.DateTimeField(
        label=_("call starts at"),
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S"],
        help_text=_("In the tenant's timezone."),
    )
    duration_seconds = forms.IntegerField(min_value=0, initial=120, label=_("talk time (s)"))
    device = forms.ModelChoiceField(
        queryset=Device.objects.none(), required=False, label=_("Device")
    )
    caller = forms.ChoiceField(
        choices=[
            ("auto", _("As the last call from this number was looked up")),
            ("lookup", _("Look the number up in Bitrix24 now")),
            ("known", _("Known in the CRM")),
            ("unknown", _("Not in the CRM")),
        ],
        label=_("Caller"),
    )
    responsible_id = forms.IntegerField(
        required=False, min_value=1, label=_("CRM responsible (when known)")
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        device = cast("forms.ModelChoiceField[Device]", self.fields["device"])
        device.queryset = Device.objects.filter(revoked_at__isnull=True)
        tz = ZoneInfo(tenant_timezone())
        self.fields["at"].initial = timezone.now().astimezone(tz).strftime("%Y-%m-%dT%H:%M")

    def clean_phone_number(self) -> str:
        try:
            return phone_to_e164(self.cleaned_data["phone_number"], country=tenant_country())
        except InvalidPhoneNumber as exc:
            raise forms.ValidationError(str(exc)) from exc

    def simulation_kwargs(self) -> dict[str, Any]:
        data = self.cleaned_data
        direction, outcome = data["outcome"].split(":")
        at = data["at"]
        # The form's naive time is the tenant's wall clock, whatever Django's own timezone.
        at = at.replace(tzinfo=None).replace(tzinfo=ZoneInfo(tenant_timezone()))
        return {
            "direction": direction,
            "outcome": outcome,
            "phone_number": data["phone_number"],
            "at": at,
            "duration_seconds": data["duration_seconds"] if outcome == "answered" else 0,
            "device": data.get("device"),
            "caller": data["caller"],
            "responsible_id": data.get("responsible_id"),
        }


@dataclass
class SimulatedStep:
    phase: str
    label: str
    action_type: str
    due_at: datetime
    offset: str
    waits_for: str = ""
    users: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    planned: bool = True


@dataclass
class Simulation:
    trigger: str
    trigger_label: str
    office_open: bool
    caller: str
    timezone: str
    started_at: datetime
    ended_at: datetime
    steps: list[SimulatedStep]
    # Which scenario applies: its name, and whether it is the device's own.
    scenario: str = ""


def _caller_now(phone_number: str) -> tuple[CrmObject, str, RoutingFacts | None]:
    """The caller as Bitrix24 has them now (a read, no budget), with their routing facts."""
    try:
        lookup = crm_find_by_phone(phone=phone_number, budget_s=float("inf"))
    except Bitrix24Error as exc:
        return (
            {"status": "unavailable"},
            gettext("Bitrix24 did not answer: %(error)s") % {"error": exc},
            None,
        )
    crm = lookup.as_api()
    if lookup.status not in RESOLVED:
        return crm, gettext("Bitrix24 did not answer: %(error)s") % {"error": lookup.error}, None
    if lookup.entity is None:
        return crm, gettext("looked up now: not in the CRM"), routing_facts(lookup)
    what = f"{lookup.entity.type} {lookup.entity.name}"
    return crm, gettext("looked up now: %(what)s") % {"what": what}, routing_facts(lookup)


def _caller_crm(
    *, phone_number: str, caller: str, responsible_id: int | None
) -> tuple[CrmObject, str]:
    if caller == "unknown":
        return {"status": "not_found"}, gettext("not in the CRM (as chosen)")
    if caller == "known":
        name = gettext("(simulated caller)")
        crm: CrmObject = {
            "status": "found",
            "entity": {"type": "contact", "id": 0, "name": name, "url": ""},
            "responsible": {"id": responsible_id, "name": ""} if responsible_id else None,
            "deals": [],
        }
        return crm, gettext("known in the CRM (as chosen)")
    last = (
        Call.objects.filter(phone_number=phone_number, crm_status__in=["found", "not_found"])
        .order_by("-started_at", "-pk")
        .first()
    )
    if last is None:
        return {"status": "not_found"}, gettext("never seen by SIMtrix: treated as not in the CRM")
    entity = (last.crm or {}).get("entity") or {}
    what = f"{entity.get('type')} {entity.get('name')}" if entity else gettext("not in the CRM")
    return last.crm, gettext("as looked up on %(date)s: %(what)s") % {
        "date": f"{last.started_at:%Y-%m-%d %H:%M}",
        "what": what,
    }


def _offset(start: datetime, moment: datetime) -> str:
    seconds = int((moment - start).total_seconds())
    sign = "-" if seconds < 0 else "+"
    seconds = abs(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d"] if days else []
    parts += [f"{hours}h"] if hours else []
    parts += [f"{minutes}min"] if minutes else []
    parts += [f"{secs}s"] if secs and not days else []
    return sign + (" ".join(parts) or "0s")


def _user_label(user_id: int | None, known: Directory) -> str:
    if not user_id:
        return "-"
    name = known.user_name(user_id)
    return f"{name} ({user_id})" if name else gettext("user %(id)s") % {"id": user_id}


def simulate(
    *,
    direction: str,
    outcome: str,
    phone_number: str,
    at: datetime,
    duration_seconds: int,
    device: Device | None,
    caller: str,
    responsible_id: int | None = None,
) -> Simulation:
    device = device or Device.objects.filter(revoked_at__isnull=True).first()
    facts_now: RoutingFacts | None = None
    if caller == "lookup":
        crm, caller_note, facts_now = _caller_now(phone_number)
    else:
        crm, caller_note = _caller_crm(
            phone_number=phone_number, caller=caller, responsible_id=responsible_id
        )
    # What the actions' conditions read: the caller's fields when looked up now, else what the
    # stored lookup still tells (type, responsible, the deals' ids).
    crm_facts = facts_now or routing_facts_from_crm(crm)
    ended_at = at + timedelta(seconds=(duration_seconds or RING_SECONDS))
    agent = device.bitrix24_user_id if device else None
    route: Route = {}
    if agent:
        # Who the call would be routed to now (no round-robin turn is taken).
        route = route_decide_call(
            facts=crm_facts,
            crm_status=crm.get("status", ""),
            direction=direction,
            agent_id=agent,
            peek=True,
        )
    ringing = CallFacts(
        direction=direction,
        phone_number=phone_number,
        ended=False,
        started_at=at,
        crm=crm,
        route=route,
        agent_id=agent,
        device_id=device.pk if device else None,
    )
    config = scenario_config()
    schedule = work_schedule()
    known = directory()
    office_open = office_open_at(schedule, ringing, at)
    start_steps, anchor = plan_start(facts=ringing, config=config, office_open=office_open, now=at)
    ended = replace(
        ringing,
        ended=True,
        outcome=outcome,
        ended_at=ended_at,
        route=route_effective(route=route, direction=direction, ended=True, outcome=outcome),
    )
    registered = (
        InternalAction.REGISTER_CALL
        if any(s.key == InternalAction.REGISTER_CALL for s in start_steps)
        else None
    )
    trigger, end_steps = plan_end(
        facts=ended,
        config=config,
        office_open=office_open,
        now=ended_at,
        anchor=anchor,
        registered=registered,
    )
    due = steps_expected_due(start_steps + end_steps, schedule)
    labels = {
        step.key: label_shown(step.label, action_type=step.action_type, params=step.params)
        for step in start_steps + end_steps
    }

    result: list[SimulatedStep] = []
    facts = ended
    phases = ((gettext("while ringing"), start_steps), (gettext("after the call"), end_steps))
    for phase, steps in phases:
        for step in steps:
            simulated = SimulatedStep(
                phase=phase,
                label=labels[step.key],
                action_type=step.action_type,
                due_at=due[step.key],
                offset=_offset(at, due[step.key]),
                waits_for=labels.get(step.after, "") if step.after else "",
            )
            facts = _describe(simulated, step, facts, known)
            _describe_timing_and_conditions(simulated, step, crm_facts, known_fields=facts_now)
            result.append(simulated)
    result += _not_planned(trigger, ringing, config, office_open, at)
    tz = tenant_timezone()
    entry = config.scenario(trigger, ringing.device_id)
    if entry is None:
        scenario_note = gettext("no active scenario for this outcome")
    elif entry.devices:
        scenario_note = gettext("%(name)s, the scenario of this phone") % {"name": entry.name}
    else:
        scenario_note = gettext("%(name)s, the scenario of every phone") % {"name": entry.name}
    return Simulation(
        trigger=trigger or "",
        trigger_label=(
            str(Trigger(trigger).label) if trigger else gettext("no scenario for this outcome")
        ),
        office_open=office_open,
        caller=caller_note,
        timezone=tz,
        started_at=at.astimezone(ZoneInfo(tz)),
        ended_at=ended_at.astimezone(ZoneInfo(tz)),
        steps=[replace(step, due_at=step.due_at.astimezone(ZoneInfo(tz))) for step in result],
        scenario=scenario_note,
    )


def _describe_timing_and_conditions(
    simulated: SimulatedStep,
    step: Step,
    facts: RoutingFacts | None,
    *,
    known_fields: RoutingFacts | None,
) -> None:
    """A timing "before a date" and each of the action's conditions, with its result."""
    config = step.params.get("action") or {}
    if config.get("timing") == Action.Timing.BEFORE_DATE:
        simulated.notes.append(
            gettext(
                "%(minutes)s min before %(whose)s.%(field)s, read from Bitrix24 once the call "
                "is over (skipped if the date is missing or past)"
            )
            % {
                "minutes": config.get("delay_minutes") or 0,
                "whose": config.get("date_of"),
                "field": config.get("date_field"),
            }
        )
    if not config.get("conditions"):
        return
    outcome = conditions_check(config["conditions"], facts or _NO_FACTS)
    for row in outcome.rows:
        verdict = gettext("holds") if row["holds"] else gettext("does not hold")
        simulated.notes.append(
            gettext("if %(condition)s: %(verdict)s (%(detail)s)")
            % {"condition": row["condition"], "verdict": verdict, "detail": row["detail"]}
        )
    if not outcome.holds:
        simulated.notes.append(gettext("would be skipped: its conditions do not hold"))
    if known_fields is None:
        simulated.notes.append(
            gettext("the caller's fields are read when it runs; look the number up now to see them")
        )


def _describe(
    simulated: SimulatedStep, step: Step, facts: CallFacts, known: Directory
) -> CallFacts:
    """Fills in users and notes; returns the facts as later steps see them (a new lead)."""
    config = step.params.get("action") or {}
    kind = step.action_type
    if kind in (InternalAction.REGISTER_CALL, InternalAction.HIDE_CARD):
        simulated.users = [_user_label(u, known) for u in step.params.get("show_to", [])]
        return facts
    if kind == ActionType.LOG_CALL:
        simulated.users = [_user_label(facts.agent_id, known)]
        return facts
    simulated.notes += action_reference_problems(config, known=known, for_execution=True)
    if kind in NEEDS_RESPONSIBLE or (
        kind == ActionType.NOTIFY and Action.Recipient.RESPONSIBLE in config.get("recipients", [])
    ):
        try:
            user, how = responsible_resolve(config=config, facts=facts, known=known, peek=True)
        except Unresolvable as exc:
            simulated.notes.append(gettext("would be skipped: %(reason)s") % {"reason": exc})
        else:
            # How it was found, in the reader's language when it is one of the fixed notes.
            simulated.users.append(f"{_user_label(user, known)} - {gettext(how)}")
            if kind in CREATION_TYPES:
                # The outcome's scenario sees the new lead, owned by this user.
                facts = replace(
                    facts,
                    crm={"status": "found", "responsible": {"id": user}, "entity": {}},
                )
    if kind == ActionType.NOTIFY:
        if Action.Recipient.AGENT in config.get("recipients", []):
            agent = _user_label(facts.agent_id, known)
            simulated.users.append(f"{agent} - " + gettext("device's agent"))
        simulated.users += [_user_label(u, known) for u in config.get("users") or []]
    if kind == ActionType.CALLBACK_TASK and config.get("skip_if_reached", True):
        simulated.notes.append(
            gettext("skipped if the caller is reached by an answered call before")
        )
    if kind == ActionType.POST_CALL_SYNC:
        simulated.notes.append(gettext("carries the notes and the recording into the activity"))
    simulated.notes += _new_action_notes(kind, config)
    if kind == ActionType.SEND_SMS:
        problem = sms_guard_problem(phone_number=facts.phone_number)
        simulated.notes.append(
            gettext("would be skipped: %(reason)s") % {"reason": problem}
            if problem
            else gettext(
                "texts %(number)s from the call's phone; the text goes to the timeline once sent"
            )
            % {"number": facts.phone_number}
        )
    if config.get("responsible") == Action.Responsible.ROUND_ROBIN:
        simulated.notes.append(
            gettext("round-robin over %(users)s; shown: whose turn it is now")
            % {"users": config.get("users") or agents()}
        )
    return facts


def _new_action_notes(kind: str, config: dict[str, Any]) -> list[str]:
    """What the status, responsible, fields, call-back and webhook actions would do."""
    deal = config.get("target") == Action.AutomationTarget.DEAL
    if kind == ActionType.SET_STATUS:
        note = (
            gettext("moves the open deal to the stage %(status)s")
            if deal
            else gettext("moves the lead to the status %(status)s (skipped if not a lead)")
        )
        return [note % {"status": config.get("status_id")}]
    if kind == ActionType.SET_RESPONSIBLE:
        return [
            gettext("makes this user the responsible of the open deal")
            if deal
            else gettext("makes this user the responsible of the caller's record")
        ]
    if kind == ActionType.UPDATE_FIELDS:
        names = ", ".join(config.get("fields") or {})
        return [
            (
                gettext("sets %(fields)s of the open deal")
                if deal
                else gettext("sets %(fields)s of the caller's record")
            )
            % {"fields": names}
        ]
    if kind in (ActionType.CALLBACK_TASK, ActionType.SCHEDULE_CALL):
        return [
            gettext(
                "if a call back for this caller is still open, adds this call to it instead "
                "(deadline kept or brought forward)"
            )
        ]
    if kind == ActionType.WEBHOOK:
        url = str(config.get("url") or "").partition("?")[0]
        return [gettext("posts the call's data to %(url)s, signed") % {"url": url}]
    return []


def _not_planned(
    trigger: str | None, facts: CallFacts, config: Any, office_open: bool, at: datetime
) -> list[SimulatedStep]:
    """Actions left out by their office-hours condition, so the page explains their absence."""
    skipped = []
    only = {
        Action.Hours.OPEN: gettext("only during office hours"),
        Action.Hours.CLOSED: gettext("only outside office hours"),
    }
    triggers = [trigger] if trigger else []
    if facts.crm_status == "not_found":
        triggers.insert(0, Trigger.UNKNOWN_NUMBER)
    for name in triggers:
        for action in config.actions(name, facts.device_id):
            wanted = action["hours"]
            if wanted == Action.Hours.ALWAYS or (wanted == Action.Hours.OPEN) == office_open:
                continue
            skipped.append(
                SimulatedStep(
                    phase=gettext("not planned"),
                    label=f"{Trigger(name).label}: {ActionType(action['action_type']).label}",
                    action_type=action["action_type"],
                    due_at=at,
                    offset="",
                    notes=[only[wanted]],
                    planned=False,
                )
            )
    return skipped
