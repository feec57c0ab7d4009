"""A routing rule or a scenario action broken by a change in Bitrix24's directory (a stage
deleted, a user deactivated): alerted once each, cleared when Bitrix24 has it again."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from alerts.models import AlertSettings, Incident
from alerts.services import alerts_check
from alerts.tests.conftest import MARTA, notifications_to
from crm.services import directory_sync
from scenarios.models import RoutingCondition, RoutingRule, Scenario
from scenarios.routing.services import routing_rules_check

pytestmark = pytest.mark.usefixtures("always_open")


def test_rules_and_actions_broken_by_the_directory_are_alerted_and_cleared(
    alpha_portal: Any, alerts_on: AlertSettings
) -> None:
    alerts_on.user_ids = [MARTA]  # Ewa is the one who leaves
    alerts_on.save()
    rule = RoutingRule.objects.create(name="Negotiation to Ewa", target="user", users=[9])
    RoutingCondition.objects.create(
        rule=rule, source="deal", field="stage", operator="equals", values=["C1:NEGOTIATION"]
    )
    routing_rules_check(rule_ids=[rule.pk])
    notify = Scenario.objects.get(trigger="incoming_missed").actions.get(action_type="notify")
    notify.users = [9]
    notify.save()
    alerts_check()
    assert not Incident.objects.exists()  # all there

    alpha_portal.control.delete_stage("C1:NEGOTIATION", category_id=1)
    alpha_portal.control.deactivate_user(9)
    directory_sync()
    alerts_check()
    alerts_check()
    broken = {i.kind: i for i in Incident.objects.filter(cleared_at__isnull=True)}
    assert set(broken) == {"rule_broken", "action_broken"}
    assert broken["action_broken"].details["action_id"] == notify.pk
    [rule_note] = notifications_to(alpha_portal, MARTA, "“Negotiation to Ewa” is broken")
    assert "C1:NEGOTIATION no longer exists" in rule_note["MESSAGE"]
    [action_note] = notifications_to(alpha_portal, MARTA, "“Bitrix24 notification”")
    assert "Bitrix24 user 9 is inactive" in action_note["MESSAGE"]
    assert len(notifications_to(alpha_portal, MARTA, "SIMtrix alert")) == 2

    alpha_portal.control.add_stage("C1:NEGOTIATION", "Contract negotiation", category_id=1, sort=20)
    alpha_portal.control.activate_user(9)
    directory_sync()
    alerts_check()
    assert not Incident.objects.filter(cleared_at__isnull=True).exists()
    assert len(notifications_to(alpha_portal, MARTA, "is no longer broken")) == 2
    alerts_check()
    assert len(notifications_to(alpha_portal, MARTA)) == 4


def test_a_disabled_rule_is_no_alert(alpha_portal: Any, alerts_on: AlertSettings) -> None:
    rule = RoutingRule.objects.create(name="Old", target="user", users=[9], enabled=False)
    RoutingCondition.objects.create(
        rule=rule, source="deal", field="stage", operator="equals", values=["C1:NEGOTIATION"]
    )
    alpha_portal.control.delete_stage("C1:NEGOTIATION", category_id=1)
    directory_sync()
    rule.refresh_from_db()
    assert rule.broken
    alerts_check()
    assert not Incident.objects.filter(kind="rule_broken").exists()


def test_a_rule_edited_into_breaking_is_found_within_minutes(
    alpha_portal: Any, alerts_on: AlertSettings
) -> None:
    """Between directory syncs the rules are looked at every few minutes, not every minute."""
    alerts_on.user_ids = [MARTA]
    alerts_on.save()
    t0 = timezone.now()
    alerts_check(now=t0)
    rule = RoutingRule.objects.create(name="Typo", target="user", users=[9])
    RoutingCondition.objects.create(
        rule=rule, source="deal", field="stage", operator="equals", values=["C1:NO_SUCH"]
    )
    routing_rules_check(rule_ids=[rule.pk])  # as saving it in the admin does
    alerts_check(now=t0 + timedelta(minutes=1))
    assert not Incident.objects.exists()
    alerts_check(now=t0 + timedelta(minutes=6))
    assert Incident.objects.get().kind == "rule_broken"
    assert len(notifications_to(alpha_portal, MARTA, "“Typo” is broken")) == 1
