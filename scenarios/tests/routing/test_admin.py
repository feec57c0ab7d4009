"""The tenant admin of routing: the ordered rule list with its warnings, the rule form with
values from the Bitrix24 directory, the test box, the settings."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from crm.services import directory_sync
from scenarios.models import RoundRobinCursor, RoutingCondition, RoutingRule, RoutingSettings
from scenarios.tests.routing.test_services import rule_make, settings_set
from tenants.models import Tenant

LIST = "/admin/scenarios/routingrule/"


@pytest.fixture
def admin(alpha: Tenant, alpha_portal: Any) -> Client:
    client = Client(HTTP_HOST="alpha.localhost")
    client.force_login(User.objects.create_superuser("alpha-admin", password="pw"))
    return client


def text_of(response: Any) -> str:
    return re.sub(r"\s+", " ", response.content.decode())


def _rule_post(**overrides: Any) -> dict[str, Any]:
    data = {
        "name": "Negotiation -> Legal", "enabled": "on", "position": "10", "target": "queue",
        "users": "9, 3", "department_id": "",
        "conditions-TOTAL_FORMS": "1", "conditions-INITIAL_FORMS": "0",
        "conditions-MIN_NUM_FORMS": "0", "conditions-MAX_NUM_FORMS": "1000",
        "conditions-0-position": "0", "conditions-0-source": "deal",
        "conditions-0-field": "stage", "conditions-0-operator": "equals",
        "conditions-0-picked": ["C1:NEGOTIATION"], "conditions-0-typed": "",
    }  # fmt: skip
    data.update(overrides)
    return data


def test_a_rule_is_made_with_values_from_the_directory_and_routes(admin: Client) -> None:
    form = text_of(admin.get(f"{LIST}add/"))
    # Values come from the synced directory; fields from crm.*.fields (UF_* too).
    assert '<option value="C1:NEGOTIATION">Contracts: Contract negotiation (C1:NEGOTIATION)' in form
    assert '<option value="UF_CRM_PREFERRED_SIM">' in form
    assert "Ewa Lewandowska (9)" in form

    response = admin.post(f"{LIST}add/", _rule_post())
    assert response.status_code == 302, text_of(response)
    rule = RoutingRule.objects.get()
    assert (rule.target, rule.users, rule.broken_reason) == ("queue", [9, 3], "")
    condition = rule.conditions.get()
    assert (condition.field, condition.values) == ("stage", ["C1:NEGOTIATION"])
    assert rule.checked_at is not None  # checked against Bitrix24 on save

    page = text_of(admin.get(f"{LIST}test/?phone_number=600111222"))
    assert 'Routed to Marta Nowak (5) by "Responsible user"' in page  # the default
    settings_set(responsible_first=False)
    page = text_of(admin.get(f"{LIST}test/?phone_number=600111222"))
    assert "CRM data found for +48600111222: found" in page
    assert "<td>entity.type</td><td>CLIENT</td>" in page
    assert "open deal 71" in page
    assert 'Routed to Ewa Lewandowska (9) by "Negotiation -&gt; Legal"' in page
    assert "&#10003; deal.stage equals C1:NEGOTIATION <small>(deal 71 matches)</small>" in page
    assert "If they cannot take it: Piotr Wiśniewski (3)" in page


def test_what_bitrix24_does_not_have_is_refused_when_saved(admin: Client) -> None:
    unknown_stage = _rule_post(**{"conditions-0-picked": [], "conditions-0-typed": "C1:GONE"})
    page = text_of(admin.post(f"{LIST}add/", unknown_stage))
    assert "stage C1:GONE no longer exists in Bitrix24" in page
    gone_user = _rule_post(users="9, 404")
    # Refused by the users field itself, naming the user as it is shown.
    refused = text_of(admin.post(f"{LIST}add/", gone_user))
    assert "Not an active Bitrix24 user: User #404 (not in Bitrix24)" in refused
    no_values = _rule_post(**{"conditions-0-picked": []})
    assert "needs at least one value" in text_of(admin.post(f"{LIST}add/", no_values))
    assert not RoutingRule.objects.exists()


def test_the_list_orders_flags_and_warns_about_broken_rules(
    admin: Client, alpha_portal: Any
) -> None:
    first = rule_make("First", [("entity_type", "", "equals", ["lead"])])
    second = rule_make("Negotiation", [("deal", "stage", "equals", ["C1:NEGOTIATION"])])
    alpha_portal.control.delete_stage("C1:NEGOTIATION", category_id=1)
    directory_sync()

    page = text_of(admin.get(LIST))
    assert "Some rules refer to what Bitrix24 no longer has and are skipped until fixed" in page
    assert "Broken, skipped: condition &#x27;deal.stage equals C1:NEGOTIATION&#x27;" in page
    assert 'name="form-0-enabled"' in page  # the enabled flag is edited in the list
    assert f"{LIST}{second.pk}/move/up/" in page
    rule_page = text_of(admin.get(f"{LIST}{second.pk}/change/"))
    assert "This rule is skipped until fixed: condition" in rule_page

    response = admin.post(f"{LIST}{second.pk}/move/up/")
    assert response.status_code == 302
    assert list(RoutingRule.objects.values_list("name", flat=True)) == ["Negotiation", "First"]
    assert admin.get(f"{LIST}{first.pk}/move/up/").status_code == 405  # POST only

    # Fixed in the rule page: another stage; the warning goes at once.
    condition = second.conditions.get()
    fix = _rule_post(
        name="Negotiation", target="user", users="9",
        **{"conditions-INITIAL_FORMS": "1", "conditions-0-id": str(condition.pk),
           "conditions-0-rule": str(second.pk), "conditions-0-picked": ["C1:NEW"]},
    )  # fmt: skip
    response = admin.post(f"{LIST}{second.pk}/change/", fix)
    assert response.status_code == 302, text_of(response)
    second.refresh_from_db()
    assert not second.broken
    assert RoutingCondition.objects.get(pk=condition.pk).values == ["C1:NEW"]
    assert "Some rules refer" not in text_of(admin.get(LIST))


def test_the_test_box_takes_no_round_robin_turn(admin: Client) -> None:
    settings_set(responsible_first=False)
    rule = rule_make("Pool", [], target="round_robin", users=[3, 9])
    for _ in range(2):
        page = text_of(admin.get(f"{LIST}test/?phone_number=%2B48+600+999+111"))
        assert "CRM data found for +48600999111: not_found" in page
        assert 'Routed to Piotr Wiśniewski (3) by "Pool"' in page
    assert not RoundRobinCursor.objects.filter(key=f"route:{rule.pk}").exists()
    assert "Enter a" not in text_of(admin.get(f"{LIST}test/"))
    assert "not a phone number" in text_of(admin.get(f"{LIST}test/?phone_number=abc")).lower()


def test_the_settings_page_is_the_one_row(admin: Client) -> None:
    response = admin.get("/admin/scenarios/routingsettings/")
    settings = RoutingSettings.objects.get()
    assert response.status_code == 302
    assert response["Location"].endswith(f"/{settings.pk}/change/")
    page = text_of(admin.get(response["Location"]))
    assert "route identified callers to their responsible user" in page.lower()
    assert '<option value="11">Krzysztof Wójcik</option>' in page
    data = {
        "responsible_first": "on", "others_target": "user", "others_user_id": "11",
        "missed_to": "next",
    }  # fmt: skip
    assert admin.post(response["Location"], data).status_code == 302
    settings.refresh_from_db()
    assert (settings.others_user_id, settings.missed_to, settings.use_timeman) == (
        11,
        "next",
        False,
    )
    data["others_user_id"] = ""
    assert "Choose the user" in text_of(admin.post(response["Location"], data))
