"""Routing in the configuration document: export, import into another tenant, all or nothing,
references Bitrix24 lacks, documents from before routing was part of it."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from django_tenants.utils import schema_context

from scenarios.document import DEFAULT_CONFIGURATION, config_export, config_import
from scenarios.models import (
    RoundRobinCursor,
    RoutingCondition,
    RoutingRule,
    RoutingSettings,
    Scenario,
)
from scenarios.routing.services import routing_rules_check
from scenarios.validation import ConfigError
from tenants.models import Tenant

SETTINGS = {
    "responsible_first": False,
    "use_timeman": True,
    "others_target": "user",
    "others_user_id": 3,
    "missed_to": "next",
    "transfer_updates_responsible": True,
}


def _snapshot() -> dict[str, Any]:
    data = config_export()
    data.pop("exported_at")
    return data


def _rules_make() -> list[RoutingRule]:
    """Three rules as the admin saves them (rows, then the check against Bitrix24), listed
    out of creation order so the order comes from `position`."""
    RoutingSettings.objects.update_or_create(singleton=1, defaults=SETTINGS)
    specs: list[tuple[str, int, dict[str, Any], list[tuple[str, str, str, list[str]]]]] = [
        ("Negotiation -> Legal", 20, {"target": "queue", "users": [9, 3]},
         [("deal", "stage", "equals", ["C1:NEGOTIATION"]), ("deal", "pipeline", "equals", ["1"])]),
        ("Support pool", 30, {"target": "round_robin", "department_id": 3, "enabled": False}, []),
        ("Leads to their owner", 10, {"target": "responsible"},
         [("entity_type", "", "equals", ["lead"]),
          ("entity", "UF_CRM_PREFERRED_SIM", "not_empty", [])]),
    ]  # fmt: skip
    rules = []
    for name, position, fields, conditions in specs:
        rule = RoutingRule.objects.create(name=name, position=position, **fields)
        for index, (source, field, operator, values) in enumerate(conditions):
            RoutingCondition.objects.create(
                rule=rule, position=index, source=source, field=field, operator=operator,
                values=values,
            )  # fmt: skip
        rules.append(rule)
    assert routing_rules_check() == 0
    return rules


def test_routing_round_trips_into_another_tenant(alpha: Tenant, alpha_portal: Any) -> None:
    _rules_make()
    exported = json.loads(json.dumps(config_export()))
    exported.pop("exported_at")
    routing = exported["routing"]
    assert routing["settings"] == SETTINGS
    # The order is the list's order (positions 10, 20, 30), not the order of creation.
    assert [rule["name"] for rule in routing["rules"]] == [
        "Leads to their owner", "Negotiation -> Legal", "Support pool",
    ]  # fmt: skip
    assert routing["rules"][1] == {
        "name": "Negotiation -> Legal", "enabled": True, "target": "queue", "users": [9, 3],
        "department_id": None,
        "conditions": [
            {"source": "deal", "field": "stage", "operator": "equals",
             "values": ["C1:NEGOTIATION"]},
            {"source": "deal", "field": "pipeline", "operator": "equals", "values": ["1"]},
        ],
    }  # fmt: skip
    assert routing["rules"][2]["enabled"] is False

    with schema_context("beta"):
        assert not RoutingRule.objects.exists()
        counts = config_import(data=exported)
        assert counts["routing_rules"] == 3
        assert counts["routing_conditions"] == 4
        assert counts["routing_settings"] == 1
        assert counts["routing_rules_broken"] == 0
        assert _snapshot() == exported
        assert list(RoutingRule.objects.values_list("position", "name")) == [
            (10, "Leads to their owner"), (20, "Negotiation -> Legal"), (30, "Support pool"),
        ]  # fmt: skip
        assert RoutingRule.objects.filter(checked_at__isnull=True).count() == 0
    assert _snapshot() == exported  # alpha untouched


def test_rules_naming_what_bitrix24_lacks_are_imported_and_marked_broken(
    alpha: Tenant, alpha_portal: Any
) -> None:
    settings_before = _snapshot()["routing"]["settings"]
    document = copy.deepcopy(DEFAULT_CONFIGURATION)
    document["routing"] = {
        "rules": [
            {"name": "Gone stage", "target": "user", "users": [9],
             "conditions": [{"source": "deal", "field": "stage", "operator": "equals",
                             "values": ["C9:NOWHERE"]}]},
            {"name": "Gone user", "target": "queue", "users": [404, 3]},
            {"name": "Fine", "target": "user", "users": [9]},
        ]
    }  # fmt: skip
    counts = config_import(data=document)
    assert counts["routing_rules_broken"] == 2
    assert dict(RoutingRule.objects.values_list("name", "broken_reason")) == {
        "Gone stage": "condition 'deal.stage equals C9:NOWHERE': "
        "stage C9:NOWHERE no longer exists in Bitrix24",
        "Gone user": "target: user 404 no longer exists in Bitrix24",
        "Fine": "",
    }
    # Settings were not in the document: left as they were.
    assert "routing_settings" not in counts
    assert _snapshot()["routing"]["settings"] == settings_before


def test_an_invalid_routing_section_changes_nothing(alpha: Tenant) -> None:
    rules = _rules_make()
    RoundRobinCursor.objects.create(key=f"route:{rules[1].pk}", last_user_id=3)
    before = _snapshot()
    bad = copy.deepcopy(before)
    bad["scenarios"] = bad["scenarios"][:1]  # valid on its own: would drop five scenarios
    bad["office_hours"]["weekly"] = []
    bad["routing"]["settings"].update(others_target="queue", colour="red")
    good, pool = bad["routing"]["rules"][1], bad["routing"]["rules"][2]
    owner: dict[str, Any] = {}
    good["conditions"][0]["operator"] = "like"
    good["conditions"][1].update(source="contact", values=[])
    pool.update(target="everyone", position=1)
    bad["routing"]["rules"] = [
        bad["routing"]["rules"][0],
        good,
        pool,
        {"name": "Negotiation -> Legal", "target": "user", "users": ["9"], "enabled": "yes"},
        {"name": "x", "target": "queue", "users": [5], "conditions": [
            {"source": "entity", "field": "POST", "operator": "empty", "values": ["a"]},
            {"source": "deal", "field": "stage", "operator": "equals", "values": []},
            {"source": "entity_type", "field": "", "operator": "equals", "values": ["robot"]},
            {"source": "entity", "operator": "equals", "values": ["x"]},
            {"operator": "equals"},
        ]},
        owner,
    ]  # fmt: skip
    with pytest.raises(ConfigError) as raised:
        config_import(data=bad)
    operators = "['equals', 'not_equals', 'contains', 'not_contains', 'empty', 'not_empty']"
    assert raised.value.errors == [
        "routing.settings: unknown keys ['colour']",
        "routing.settings.others_target: must be one of ['agent', 'user']",
        f"routing.rules[1].conditions[0].operator: unknown operator 'like'; use one of {operators}",
        "routing.rules[1].conditions[1].source: unknown source 'contact'; use one of "
        "['entity_type', 'entity', 'deal']",
        "routing.rules[2]: unknown keys ['position'] (the order is the list's order)",
        "routing.rules[2].target: unknown target 'everyone'; use one of "
        "['responsible', 'user', 'round_robin', 'queue']",
        "routing.rules[3].name: 'Negotiation -> Legal' appears twice (rule names are unique)",
        "routing.rules[3].enabled: must be true or false",
        "routing.rules[3].users: must be a list of Bitrix24 user ids",
        "routing.rules[4].conditions[0].values: 'is empty' takes no values",
        "routing.rules[4].conditions[1].values: 'equals' needs at least one value",
        "routing.rules[4].conditions[2].values: caller types are contact, company, lead; "
        "not ['robot']",
        "routing.rules[4].conditions[3].field: name the field (e.g. stage, source or "
        "UF_CRM_REGION)",
        "routing.rules[4].conditions[4]: must be an object with source, operator and "
        "optionally field, values",
        "routing.rules[5].name: must be non-empty text of at most 100 characters",
        "routing.rules[5].target: unknown target None; use one of "
        "['responsible', 'user', 'round_robin', 'queue']",
    ]
    assert _snapshot() == before
    assert sorted(RoutingRule.objects.values_list("pk", flat=True)) == sorted(r.pk for r in rules)
    assert RoundRobinCursor.objects.filter(key=f"route:{rules[1].pk}").exists()

    with pytest.raises(ConfigError) as raised:
        config_import(data={**bad, "routing": {"rules": "all"}})
    assert "routing.rules: must be a list" in raised.value.errors
    with pytest.raises(ConfigError) as raised:
        config_import(data={**DEFAULT_CONFIGURATION, "routing": []})
    assert raised.value.errors == ["routing: must be an object with 'settings' and/or 'rules'"]
    assert _snapshot() == before


def test_a_document_without_routing_imports_and_leaves_routing_as_it_is(alpha: Tenant) -> None:
    rules = _rules_make()
    routing_before = _snapshot()["routing"]
    older = copy.deepcopy(DEFAULT_CONFIGURATION)
    older["scenarios"] = older["scenarios"][:2]
    counts = config_import(data=older)
    assert counts == {"scenarios": 2, "actions": 6, "office_hours": 5, "holidays": 0}
    assert Scenario.objects.count() == 2
    assert _snapshot()["routing"] == routing_before
    assert sorted(RoutingRule.objects.values_list("pk", flat=True)) == sorted(r.pk for r in rules)

    # Each part replaces only itself: rules without settings, an empty list clears the rules.
    counts = config_import(data={**older, "routing": {"rules": []}})
    assert counts["routing_rules"] == 0
    assert not RoutingRule.objects.exists()
    assert _snapshot()["routing"]["settings"] == SETTINGS
    config_import(data={**older, "routing": {"settings": {"missed_to": "next"}}})
    # Settings left out of a given `settings` take their defaults.
    assert _snapshot()["routing"]["settings"] == {
        **SETTINGS, "responsible_first": True, "use_timeman": False, "others_target": "agent",
        "others_user_id": None, "transfer_updates_responsible": False,
    }  # fmt: skip


def test_the_commands_carry_routing(alpha: Tenant, tmp_path: Path) -> None:
    _rules_make()
    out = io.StringIO()
    call_command("export_config", "--schema", "alpha", stdout=out)
    exported = json.loads(out.getvalue())
    assert exported["routing"]["rules"][0]["name"] == "Leads to their owner"
    path = tmp_path / "config.json"
    path.write_text(json.dumps(exported))
    out = io.StringIO()
    call_command("import_config", "--schema", "beta", str(path), stdout=out)
    assert json.loads(out.getvalue()) == {
        "schema": "beta", "scenarios": 6, "actions": 12, "office_hours": 5, "holidays": 0,
        "routing_settings": 1, "routing_rules": 3, "routing_conditions": 4,
        "routing_rules_broken": 0,
    }  # fmt: skip
    with schema_context("beta"):
        assert _snapshot()["routing"] == exported["routing"]


def test_the_admin_import_says_what_became_of_routing(alpha: Tenant) -> None:
    User.objects.create_superuser("alpha-admin", password="pw")
    client = Client(HTTP_HOST="alpha.localhost")
    assert client.login(username="alpha-admin", password="pw")
    _rules_make()
    response = client.post(
        "/admin/scenarios/scenario/import/", {"text": json.dumps(DEFAULT_CONFIGURATION)},
        follow=True,
    )  # fmt: skip
    assert "routing left as it was (the file has none)" in response.content.decode()
    assert RoutingRule.objects.count() == 3
    bad = {**DEFAULT_CONFIGURATION, "routing": {"rules": [{"name": "x", "target": "nobody"}]}}
    response = client.post("/admin/scenarios/scenario/import/", {"text": json.dumps(bad)})
    assert response.status_code == 200
    assert "routing.rules[0].target: unknown target" in response.content.decode()
    assert RoutingRule.objects.count() == 3
