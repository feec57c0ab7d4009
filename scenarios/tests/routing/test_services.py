"""Routing by CRM data against the sandbox portal: rules as rows, real lookups, the directory.

The seed (bitrix24_sandbox/seed.py): Anna Kowalska (contact 12, +48600111222, type CLIENT, source
CALL, post "Office manager", responsible Marta 5) has the open deal 71 (pipeline 1 "Contracts",
stage C1:NEGOTIATION, responsible 5) and the won deal 63. Users: 1, 3, 5, 9, 11 active (9 on a
paused work day, 11 closed), 7 left the company (inactive). Departments: 2 Sales {5, 7},
3 Support {3, 11}, 4 Legal {9}.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection, transaction
from django_tenants.utils import schema_context

from crm.models import EntityField
from crm.services import directory_sync
from scenarios.models import RoundRobinCursor, RoutingCondition, RoutingRule, RoutingSettings
from scenarios.routing.services import (
    route_decide_call,
    route_preview,
    routing_availability_refresh,
    routing_rule_move,
    routing_rules_check,
)
from tenants.models import Tenant

ANNA = "+48600111222"
UNKNOWN = "+48600999111"
AGENT = 1  # the device's agent in these tests ("Others" by default)
Cond = tuple[str, str, str, list[str]]


def rule_make(
    name: str, conditions: list[Cond], target: str = "user", users: list[int] | None = None,
    **fields: Any,
) -> RoutingRule:  # fmt: skip
    last = RoutingRule.objects.order_by("-position").values_list("position", flat=True).first()
    rule = RoutingRule.objects.create(
        name=name,
        target=target,
        users=[9] if users is None and target != "responsible" else (users or []),
        position=(last or 0) + 10,
        **fields,
    )
    for index, (source, field, operator, values) in enumerate(conditions):
        RoutingCondition.objects.create(
            rule=rule, position=index, source=source, field=field, operator=operator, values=values
        )
    routing_rules_check(rule_ids=[rule.pk])
    rule.refresh_from_db()
    return rule


def settings_set(**values: Any) -> None:
    RoutingSettings.objects.update_or_create(singleton=1, defaults=values)


def route_of(phone: str) -> dict[str, Any]:
    return route_preview(phone=phone, agent_id=AGENT)["route"]


def routed(phone: str) -> tuple[int, str]:
    route = route_of(phone)
    return route["user"]["id"], route["rule"]


@pytest.fixture
def portal(alpha: Tenant, alpha_portal: Any) -> Any:
    """The sandbox, alpha connected; rules are evaluated without responsible-first unless a
    test turns it back on."""
    settings_set(responsible_first=False)
    return alpha_portal


# --- Operators on text, choice and empty fields ---------------------------------------------

CASES = [
    # Choice fields (directory values): the contact's type and source.
    ("entity", "type", "equals", ["CLIENT"], True),
    ("entity", "type", "equals", ["PARTNER", "SUPPLIER"], False),
    ("entity", "source", "not_equals", ["WEB"], True),
    ("entity", "source", "not_equals", ["CALL"], False),
    ("entity", "type", "contains", ["CLIENT"], True),
    ("entity", "source", "not_contains", ["CALL"], False),
    # A text field.
    ("entity", "POST", "contains", ["office", "MANAGER"], True),
    ("entity", "POST", "contains", ["office", "legal"], False),
    ("entity", "POST", "not_contains", ["legal"], True),
    ("entity", "POST", "not_contains", ["manager"], False),
    ("entity", "POST", "equals", ["office manager"], True),
    ("entity", "POST", "not_empty", [], True),
    ("entity", "POST", "empty", [], False),
    # An empty custom field.
    ("entity", "UF_CRM_PREFERRED_SIM", "empty", [], True),
    ("entity", "UF_CRM_PREFERRED_SIM", "not_empty", [], False),
    ("entity", "UF_CRM_PREFERRED_SIM", "not_equals", ["+48500100200"], True),
    # The caller's type, and a deal field.
    ("entity_type", "", "equals", ["contact"], True),
    ("entity_type", "", "not_equals", ["contact", "company"], False),
    ("deal", "stage", "equals", ["C1:NEGOTIATION"], True),
    ("deal", "stage", "equals", ["WON"], False),  # deal 63 is won: not an open deal
]


@pytest.mark.parametrize(("source", "field", "operator", "values", "matches"), CASES)
def test_each_operator_on_text_choice_and_empty_fields(  # noqa: PLR0917
    portal: Any, source: str, field: str, operator: str, values: list[str], matches: bool
) -> None:
    rule = rule_make("Under test", [(source, field, operator, values)], users=[9])
    assert not rule.broken, rule.broken_reason
    route = route_of(ANNA)
    assert (route["user"]["id"], route["rule"]) == ((9, "Under test") if matches else (1, "Others"))
    [step, *_] = route["explanation"]
    assert step["conditions"][0]["holds"] is matches


def test_a_custom_field_with_a_value(portal: Any) -> None:
    portal.control.add_entity(
        "contact", NAME="Zofia", PHONE=[{"VALUE": "+48600777888", "VALUE_TYPE": "WORK"}],
        UF_CRM_PREFERRED_SIM="Orange business",
    )  # fmt: skip
    rule_make("Orange", [("entity", "UF_CRM_PREFERRED_SIM", "contains", ["orange"])], users=[3])
    assert routed("+48600777888") == (3, "Orange")
    assert routed(ANNA) == (AGENT, "Others")


# --- Deals, order, Others, responsible-first --------------------------------------------------


def test_any_open_deal_matches_and_one_deal_must_satisfy_all_deal_conditions(
    portal: Any,
) -> None:
    portal.control.add_entity(
        "deal", TITLE="SIM cards", CATEGORY_ID=0, STAGE_ID="EXECUTING", CONTACT_IDS=[12],
        ASSIGNED_BY_ID=3,
    )  # fmt: skip
    rule_make("Mixed", [("deal", "pipeline", "equals", ["0"]),
                        ("deal", "stage", "equals", ["C1:NEGOTIATION"])])  # fmt: skip
    rule_make("Executing -> its owner", [("deal", "stage", "equals", ["EXECUTING"])],
              target="responsible")  # fmt: skip
    route = route_of(ANNA)
    # No one deal is in pipeline 0 and at C1:NEGOTIATION; the new deal's owner gets the call.
    assert (route["user"]["id"], route["rule"]) == (3, "Executing -> its owner")
    mixed = route["explanation"][0]
    assert mixed["matched"] is False
    assert "open deals' values" in mixed["conditions"][0]["detail"]


def test_rules_apply_in_order_and_can_be_moved(portal: Any) -> None:
    first = rule_make("Clients to Piotr", [("entity", "type", "equals", ["CLIENT"])], users=[3])
    second = rule_make("Contracts to Ewa", [("deal", "pipeline", "equals", ["1"])], users=[9])
    assert routed(ANNA) == (3, first.name)
    assert routing_rule_move(rule_id=second.pk, step=-1)
    assert routed(ANNA) == (9, second.name)
    assert not routing_rule_move(rule_id=second.pk, step=-1)  # already first
    RoutingRule.objects.filter(pk=second.pk).update(enabled=False)
    assert routed(ANNA) == (3, first.name)


def test_others_takes_unmatched_and_unknown_callers(portal: Any) -> None:
    rule_make("Known callers", [("entity_type", "", "not_empty", [])], users=[9])
    assert routed(ANNA) == (9, "Known callers")
    assert routed(UNKNOWN) == (AGENT, "Others")
    settings_set(others_target="user", others_user_id=11)
    assert routed(UNKNOWN) == (11, "Others")
    settings_set(others_user_id=7)  # left the company: the device's agent instead
    route = route_of(UNKNOWN)
    assert (route["user"]["id"], route["rule"]) == (AGENT, "Others")
    assert "Others user 7 is unavailable" in route["explanation"][-1]["detail"]


def test_an_unknown_number_can_have_a_rule_of_its_own(portal: Any) -> None:
    rule_make("New callers to sales", [("entity_type", "", "empty", [])], users=[5])
    assert routed(UNKNOWN) == (5, "New callers to sales")
    assert routed(ANNA) == (AGENT, "Others")


def test_identified_callers_go_to_their_responsible_first_when_the_setting_is_on(
    portal: Any,
) -> None:
    rule_make("Contracts to Ewa", [("deal", "pipeline", "equals", ["1"])], users=[9])
    assert routed(ANNA) == (9, "Contracts to Ewa")
    settings_set(responsible_first=True)
    route = route_of(ANNA)
    assert (route["user"]["id"], route["rule"]) == (5, "Responsible user")
    # Should Marta not answer: the rules decide.
    assert route["next"] == {"user": {"id": 9, "name": "Ewa Lewandowska"},
                             "rule": "Contracts to Ewa"}  # fmt: skip
    portal.control.deactivate_user(5)
    directory_sync()
    route = route_of(ANNA)
    assert (route["user"]["id"], route["rule"]) == (9, "Contracts to Ewa")
    assert route["explanation"][0] == {
        "step": "Responsible user", "user_id": 5, "available": False,
    }  # fmt: skip


def test_responsible_first_is_on_by_default(portal: Any) -> None:
    RoutingSettings.objects.all().delete()
    assert routed(ANNA) == (5, "Responsible user")


# --- Availability -------------------------------------------------------------------------------


def test_an_unavailable_target_falls_through_the_queue_then_to_others(portal: Any) -> None:
    rule_make("Queue", [("entity_type", "", "equals", ["contact"])], target="queue",
              users=[7, 9, 3])  # fmt: skip
    route = route_of(ANNA)
    # 7 left the company (inactive): the next member takes it; 3 would be next.
    assert (route["user"]["id"], route["rule"]) == (9, "Queue")
    assert route["unavailable"] == {"7": "Bitrix24 user 7 is inactive"}
    assert route["next"]["user"]["id"] == 3

    # With the work-day status: Ewa's is paused (seed), so Piotr takes it.
    settings_set(use_timeman=True)
    assert routing_availability_refresh() == 5  # the active users
    assert routed(ANNA) == (3, "Queue")
    # Piotr closes his day: nobody of the queue can take it, and no later rule is tried.
    rule_make("Later rule", [], users=[11])
    portal.control.set_timeman_status(3, "CLOSED")
    routing_availability_refresh()
    route = route_of(ANNA)
    assert (route["user"]["id"], route["rule"]) == (AGENT, "Others")
    assert route["explanation"][0]["fell_through"] == "no available target"
    assert route["unavailable"] == {
        "7": "Bitrix24 user 7 is inactive", "9": "work day paused", "3": "work day closed",
    }  # fmt: skip


def test_work_day_statuses_survive_the_hourly_directory_sync(portal: Any) -> None:
    from crm.models import Bitrix24User

    settings_set(use_timeman=True)
    routing_availability_refresh()
    directory_sync()  # user.get does not carry TIMEMAN_STATUS: what timeman.status said stays
    assert dict(Bitrix24User.objects.filter(id__in=[5, 9]).values_list("id", "timeman_status")) == {
        5: "OPENED", 9: "PAUSED",
    }  # fmt: skip
    settings_set(use_timeman=False)
    assert routing_availability_refresh() == 0  # not used: not read


# --- Round-robin ---------------------------------------------------------------------------------


def test_round_robin_over_a_department_takes_turns_and_peeking_takes_none(portal: Any) -> None:
    rule = rule_make("Support pool", [], target="round_robin", users=[], department_id=3)
    facts = route_preview(phone=ANNA, agent_id=AGENT)["facts"]

    def decide() -> int:
        user = route_decide_call(
            facts=facts, crm_status="found", direction="incoming", agent_id=AGENT
        )["user"]
        assert user is not None  # a decided route names its user
        return user["id"]

    assert routed(ANNA)[0] == 3  # a preview: no turn taken
    assert [decide() for _ in range(4)] == [3, 11, 3, 11]
    assert RoundRobinCursor.objects.get(key=f"route:{rule.pk}").assignments == 4


def test_round_robin_rules_are_fair_across_concurrent_calls(
    alpha_portal: Any, committed_db: Callable, django_db_blocker: Any
) -> None:
    with schema_context("alpha"):
        settings_set(responsible_first=False)
        rule = rule_make("Pool", [("entity_type", "", "equals", ["contact"])],
                         target="round_robin", users=[3, 5, 9])  # fmt: skip
        facts = route_preview(phone=ANNA, agent_id=AGENT)["facts"]

    def cleanup() -> None:
        with schema_context("alpha"):
            RoutingRule.objects.all().delete()
            RoutingSettings.objects.all().delete()
            RoundRobinCursor.objects.filter(key=f"route:{rule.pk}").delete()

    committed_db(cleanup)
    picks: list[int] = []
    barrier = threading.Barrier(10)

    def caller() -> None:
        try:
            with schema_context("alpha"):
                barrier.wait()
                for _ in range(6):
                    # As the bridge API does: decided in the transaction that records the call.
                    with transaction.atomic():
                        route = route_decide_call(
                            facts=facts, crm_status="found", direction="incoming", agent_id=1
                        )
                    assert route["user"] is not None
                    picks.append(route["user"]["id"])
        finally:
            connection.close()

    threads = [threading.Thread(target=caller) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert Counter(picks) == {3: 20, 5: 20, 9: 20}


# --- Broken rules ----------------------------------------------------------------------------


def test_a_rule_breaks_when_its_stage_is_deleted_in_bitrix24_and_heals_when_it_is_back(
    portal: Any,
) -> None:
    rule = rule_make("Negotiation -> Legal", [("deal", "stage", "equals", ["C1:NEGOTIATION"])],
                     users=[9])  # fmt: skip
    assert not rule.broken
    assert routed(ANNA) == (9, rule.name)

    portal.control.delete_stage("C1:NEGOTIATION", category_id=1)
    directory_sync()  # the sync tells the rules (crm.signals.directory_synced)

    rule.refresh_from_db()
    assert rule.broken_reason == (
        "condition 'deal.stage equals C1:NEGOTIATION': "
        "stage C1:NEGOTIATION no longer exists in Bitrix24"
    )
    condition = rule.conditions.get()
    assert condition.broken_reason == "stage C1:NEGOTIATION no longer exists in Bitrix24"
    # Skipped, not half-applied: Anna's deal still says C1:NEGOTIATION, the rule is not used.
    route = route_of(ANNA)
    assert (route["user"]["id"], route["rule"]) == (AGENT, "Others")
    assert route["explanation"][0]["skipped"] == "broken: refers to removed data"

    portal.control.add_stage("C1:NEGOTIATION", "Contract negotiation", category_id=1, sort=20)
    directory_sync()
    rule.refresh_from_db()
    assert not rule.broken
    assert routed(ANNA) == (9, rule.name)


def test_a_rule_breaks_when_its_custom_field_or_user_disappears(portal: Any) -> None:
    assert EntityField.objects.filter(entity_type="contact", name="UF_CRM_PREFERRED_SIM").exists()
    by_field = rule_make("SIM", [("entity", "UF_CRM_PREFERRED_SIM", "not_empty", [])])
    by_user = rule_make("Pool", [], target="queue", users=[11, 3])
    with portal.state.lock:
        del portal.state.uf_fields["CONTACT"]["UF_CRM_PREFERRED_SIM"]
        del portal.state.users[11]
    directory_sync()
    by_field.refresh_from_db()
    by_user.refresh_from_db()
    assert "field UF_CRM_PREFERRED_SIM no longer exists" in by_field.broken_reason
    assert by_user.broken_reason == "target: user 11 no longer exists in Bitrix24"
    assert routed(ANNA) == (AGENT, "Others")


def test_without_a_synced_directory_nothing_is_called_broken(alpha: Tenant) -> None:
    rule = rule_make("Anything", [("deal", "stage", "equals", ["NOWHERE"])])
    assert not rule.broken
    assert routing_rules_check() == 0


def test_work_day_statuses_are_refreshed_every_minute_for_every_tenant() -> None:
    from django.conf import settings

    entry = settings.CELERY_BEAT_SCHEDULE["routing-availability"]
    # One task in public queues the refresh for the tenants that route by it (TenantSchedule).
    assert (entry["task"], entry["schedule"]) == ("scenarios.availability_refresh_all", 60.0)
    assert "tenant_schemas" not in entry


def test_routing_settings_are_memoised_and_a_saved_change_is_seen_at_once(portal: Any) -> None:
    from scenarios.routing.selectors import routing_settings_get

    settings_set(responsible_first=True)
    assert routed(ANNA) == (5, "Responsible user")
    RoutingSettings.objects.filter(singleton=1).update(responsible_first=False)
    assert routing_settings_get().responsible_first is True  # memoised: not read per call
    RoutingSettings.objects.get(singleton=1).save()  # the admin saves: forgotten at once
    assert routing_settings_get().responsible_first is False
    RoutingSettings.objects.all().delete()
    assert routing_settings_get().responsible_first is True  # the default again
