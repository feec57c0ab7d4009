"""The route of a call through the bridge API (issue 6): returned at call.started within the
lookup budget, followed by the card, the missed-call actions and the transfer, and shown in the
audit trail. Bitrix24 is the HTTPS sandbox; outbox runs are executed in-process."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from calls.models import Call, CallTransition
from calls.services import device_register
from calls.tests.conftest import T0, Bridge, ended, event, started
from calls.tests.test_handlers import run_due
from crm.models import Bitrix24Connection
from scenarios.models import ActionRun, RoutingCondition, RoutingRule, RoutingSettings
from tenants.models import Tenant

ANNA = "+48 600 111 222"  # contact 12, responsible Marta (5), open deal 71 in "Contracts"
LEAD_26 = "+48 602 333 444"  # lead 26, responsible Piotr (3)


def queue_to_ewa_then_piotr() -> RoutingRule:
    rule = RoutingRule.objects.create(
        name="Contracts desk", target="queue", users=[9, 3], position=10
    )
    RoutingCondition.objects.create(
        rule=rule, source="deal", field="pipeline", operator="equals", values=["1"]
    )
    return rule


def settings_set(**values: Any) -> None:
    RoutingSettings.objects.update_or_create(singleton=1, defaults=values)


@pytest.fixture
def jan(alpha: Tenant) -> Bridge:
    """The bridge of a phone carried by Jan (1), who is nobody's responsible."""
    _, token = device_register(
        name="Jan's phone", phone_number="+48500100900", bitrix24_user_id=1, country="PL"
    )
    return Bridge(token)


def test_call_started_returns_the_route_by_rule_and_the_card_opens_for_the_routed_user(
    alpha_portal: Any, bridge: Bridge
) -> None:
    settings_set(responsible_first=False)
    queue_to_ewa_then_piotr()
    body = bridge.send(started()).json()
    # The contract's route: the user and the rule's name, nothing else.
    assert body["route"] == {"user": {"id": 9, "name": "Ewa Lewandowska"}, "rule": "Contracts desk"}
    call = Call.objects.get()
    assert call.route["next"]["user"]["id"] == 3
    assert call.route["explanation"][-1]["conditions"][0] == {
        "condition": "deal.pipeline equals 1", "holds": True, "detail": "deal 71 matches",
    }  # fmt: skip
    run_due()
    # The card pops for Marta, whose phone rings (register), and for Ewa, the routed user.
    [active] = alpha_portal.calls()["active"]
    assert sorted(active["SHOWN_TO"]) == [5, 9]
    transition = CallTransition.objects.get(call=call, source="bridge")
    assert "Routed to Ewa Lewandowska (9) by 'Contracts desk'" in transition.description


def test_the_lookup_endpoint_previews_the_route_without_taking_a_turn(
    alpha_portal: Any, bridge: Bridge
) -> None:
    rule = RoutingRule.objects.create(name="Pool", target="round_robin", users=[3, 9])
    for _ in range(2):
        body = bridge.post("lookup/", {"phone_number": "600 999 000"}).json()
        assert body["crm"]["status"] == "not_found"
        assert body["route"] == {"user": {"id": 3, "name": "Piotr Wiśniewski"}, "rule": "Pool"}
    from scenarios.models import RoundRobinCursor

    assert not RoundRobinCursor.objects.filter(key=f"route:{rule.pk}").exists()


def test_a_slow_bitrix24_gets_the_bridge_an_answer_in_budget_routed_to_others(
    alpha_portal: Any, jan: Bridge
) -> None:
    Bitrix24Connection.objects.update(lookup_budget_ms=300)
    alpha_portal.set_fault("slow", delay_ms=3000)
    body = jan.send(started(phone_number=ANNA)).json()
    # Not known in time: "Others" (the agent whose phone rings), decided again later.
    assert body["crm"]["status"] in ("pending", "unavailable")
    assert body["route"] == {"user": {"id": 1, "name": "Jan Admin"}, "rule": "Others"}
    assert Call.objects.get().route["provisional"] is True

    alpha_portal.clear_faults()
    run_due()  # the background lookup finds Anna and routes the call to her responsible
    call = Call.objects.get()
    assert call.crm_status == "found"
    assert (call.route["user"]["id"], call.route["rule"]) == (5, "Responsible user")
    assert not call.route["provisional"]
    assert jan.get("calls/c-1/").json()["route"]["rule"] == "Responsible user"
    [late] = CallTransition.objects.filter(call=call, source="bitrix24",
                                           changes__has_key="route_rule")  # fmt: skip
    assert late.description.endswith("by 'Responsible user' once the caller was known")


@pytest.mark.parametrize(("missed_to", "user"), [("routed", 9), ("next", 3)])
def test_a_missed_call_goes_to_the_routed_user_or_the_next_of_the_queue(
    alpha_portal: Any, bridge: Bridge, missed_to: str, user: int
) -> None:
    settings_set(responsible_first=False, missed_to=missed_to)
    queue_to_ewa_then_piotr()
    bridge.send(started())
    bridge.send(ended(outcome="missed", duration_seconds=0))
    run_due()
    [notification] = alpha_portal.state.notifications.values()
    assert notification["USER_ID"] == user
    notify = ActionRun.objects.get(action_type="notify")
    expected = "routed user" if missed_to == "routed" else "next in the queue"
    assert notify.params["responsible"].startswith(expected)
    # Time passes: the callback task is due 30 minutes after the end.
    ActionRun.objects.filter(status="scheduled").update(due_at=timezone.now())
    run_due()
    assert ActionRun.objects.get(action_type="callback_task").status == "done"
    [task] = alpha_portal.state.tasks.values()
    assert task["RESPONSIBLE_ID"] == user


@pytest.mark.parametrize("setting", [True, False])
def test_an_answered_transfer_makes_the_agent_the_leads_responsible_per_setting(
    alpha_portal: Any, bridge: Bridge, setting: bool
) -> None:
    settings_set(transfer_updates_responsible=setting)
    body = bridge.send(started(phone_number=LEAD_26)).json()
    assert body["route"]["user"]["id"] == 3  # the lead's responsible
    bridge.send(event("call.answered", at=T0 + timedelta(seconds=5)))
    bridge.send(ended(phone_number=LEAD_26))  # answered on Marta's phone (5)
    run_due()
    lead = alpha_portal.state.entities["LEAD"][26]
    call = Call.objects.get()
    if not setting:
        assert lead["ASSIGNED_BY_ID"] == 3
        assert not ActionRun.objects.filter(action_type="transfer_responsible").exists()
        return
    assert lead["ASSIGNED_BY_ID"] == 5
    run = ActionRun.objects.get(action_type="transfer_responsible")
    assert (run.status, run.result) == ("done", {"lead": 26, "from": 3, "to": 5})
    note = CallTransition.objects.get(call=call, changes__has_key="lead_responsible")
    assert note.description == (
        "Lead 26: responsible changed from Piotr Wiśniewski (3) to Marta Nowak (5), "
        "who answered the call (transfer)"
    )


def test_no_transfer_when_the_responsible_answered(alpha_portal: Any, alpha: Tenant) -> None:
    settings_set(transfer_updates_responsible=True)
    _, token = device_register(
        name="Piotr's phone", phone_number="+48500100333", bitrix24_user_id=3, country="PL"
    )
    piotr = Bridge(token)
    piotr.send(started(phone_number=LEAD_26))
    piotr.send(ended(phone_number=LEAD_26))
    run_due()
    assert not ActionRun.objects.filter(action_type="transfer_responsible").exists()
    assert alpha_portal.state.entities["LEAD"][26]["ASSIGNED_BY_ID"] == 3


def test_the_call_page_shows_which_rule_matched_and_why(alpha_portal: Any, bridge: Bridge) -> None:
    settings_set(responsible_first=False)
    RoutingRule.objects.create(name="Web leads", target="user", users=[11], position=1)
    RoutingCondition.objects.create(
        rule=RoutingRule.objects.get(name="Web leads"), source="entity", field="source",
        operator="equals", values=["WEB"],
    )  # fmt: skip
    queue_to_ewa_then_piotr()
    bridge.send(started())
    call = Call.objects.get()
    client = Client(HTTP_HOST="alpha.localhost")
    client.force_login(User.objects.create_superuser("boss", password="pw"))
    page = client.get(f"/admin/calls/call/{call.pk}/change/").content.decode()
    assert 'id="routing"' in page
    assert 'Routed to Ewa Lewandowska (9) by "Contracts desk"' in page
    assert "Next in the queue: Piotr Wiśniewski (3)" in page
    assert "&#10007; entity.source equals WEB <small>(value: [&#x27;CALL&#x27;])</small>" in page
    assert "&#10003; deal.pipeline equals 1 <small>(deal 71 matches)</small>" in page
