from __future__ import annotations

import math
import time
from typing import Any

import pytest
from django_tenants.utils import schema_context

from crm import client as b24
from crm.cache import cache_get, lookup_key
from crm.client import Bitrix24Client
from crm.models import Bitrix24Connection
from crm.phones import InvalidPhoneNumber
from crm.redis_client import get_redis
from crm.selectors import crm_find_by_phone, crm_phone_known
from crm.services import crm_entity_set_responsible, crm_lead_create, crm_lookup_invalidate
from crm.tests.conftest import top_level


@pytest.mark.parametrize(
    ("dialled", "entity"),
    [
        ("+48600111222", ("contact", 12, "Anna Kowalska")),  # stored E.164
        ("+48 600 111 333", ("contact", 14, "Piotr Nowicki")),  # stored national "600 111 333"
        ("600111444", ("contact", 15, "Katarzyna Wiśniewska")),  # stored "0048 600-111-444"
        ("+48600111555", ("contact", 16, "Michał Dąbrowski")),  # stored "+48 600-111 555"
        ("+7 912 345 67 89", ("contact", 17, "Iwan Pietrow")),  # stored "8 (912) 345-67-89"
        ("+48221234567", ("company", 21, "Kancelaria Prawna Lex Sp. z o.o.")),
        ("+48601222333", ("lead", 25, "Incoming call +48 601 222 333")),
        ("+48602333444", ("lead", 26, "Tomasz Lis")),
    ],
)
def test_finds_the_caller_however_the_number_is_stored(
    portal: Any, dialled: str, entity: tuple[str, int, str]
) -> None:
    lookup = crm_find_by_phone(phone=dialled)

    assert lookup.status == "found", lookup.error
    assert lookup.entity is not None
    assert (lookup.entity.type, lookup.entity.id, lookup.entity.name) == entity
    assert len(top_level(portal)) == 1  # one HTTP request per cache miss


def test_national_form_alone_would_miss_a_number_stored_nationally(portal: Any) -> None:
    # Why every typed form is searched: Bitrix24 compares whole digit strings (REFERENCE 3.1).
    hits = Bitrix24Client().run(b24.duplicate_findbycomm(["+48600111333"], "CONTACT"))
    assert hits == {}
    found = crm_find_by_phone(phone="+48600111333").entity
    assert found is not None
    assert found.id == 14


def test_found_caller_carries_responsible_open_deals_and_routing_fields(portal: Any) -> None:
    lookup = crm_find_by_phone(phone="+48 600 111 222")

    assert lookup.as_api() == {
        "status": "found",
        "entity": {
            "type": "contact",
            "id": 12,
            "name": "Anna Kowalska",
            "url": f"{portal.url}/crm/contact/details/12/",
        },
        "responsible": {"id": 5, "name": "Marta Nowak"},
        # Deal 63 of Anna is won: only open deals are listed.
        "deals": [
            {
                "id": 71,
                "title": "Legal review",
                "pipeline": "Contracts",
                "stage": "Contract negotiation",
            }
        ],
    }
    assert lookup.phone_e164 == "+48600111222"
    assert lookup.entity_fields["TYPE_ID"] == "CLIENT"
    assert lookup.entity_fields["SOURCE_ID"] == "CALL"
    assert int(lookup.entity_fields["ASSIGNED_BY_ID"]) == 5
    deal = lookup.deals[0]
    assert (deal.category_id, deal.stage_id, deal.assigned_by_id) == (1, "C1:NEGOTIATION", 5)
    assert deal.fields["TYPE_ID"] == "SERVICES"


def test_unknown_number_is_not_found_in_one_request(portal: Any) -> None:
    lookup = crm_find_by_phone(phone="+48 500 000 001")

    assert lookup.status == "not_found"
    assert lookup.as_api() == {
        "status": "not_found",
        "entity": None,
        "responsible": None,
        "deals": [],
    }
    assert len(top_level(portal)) == 1


def test_a_background_lookup_searches_first_and_lists_only_what_it_found(portal: Any) -> None:
    ringing = crm_find_by_phone(phone="+48600111222", use_cache=False)  # one request
    portal.control.clear_requests()

    unknown = crm_find_by_phone(phone="+48 500 000 001", budget_s=math.inf)
    assert unknown.status == "not_found"
    assert [r["method"] for r in top_level(portal)] == ["batch"]
    searched = portal.state.query_requests(in_batch=True)
    assert [r["method"] for r in searched] == ["crm.duplicate.findbycomm"] * 3
    portal.control.clear_requests()

    found = crm_find_by_phone(phone="+48600111222", budget_s=math.inf, use_cache=False)
    assert found.as_api() == ringing.as_api()  # the same answer as the one-request lookup
    assert [r["method"] for r in top_level(portal)] == ["batch", "batch"]
    commands = [r["method"] for r in portal.state.query_requests(in_batch=True)]
    # The number is a contact's and a lead's: their lists and the contact's open deals, and
    # nothing of companies (no company has it).
    assert commands == ["crm.duplicate.findbycomm"] * 3 + [
        "crm.contact.list",
        "crm.lead.list",
        "crm.deal.list",
    ]


@pytest.mark.parametrize(
    ("dialled", "known"),
    [
        ("+48 600 111 333", True),  # a contact, stored nationally
        ("+48221234567", True),  # a company
        ("+48601222333", True),  # a lead
        ("+48 500 000 001", False),
    ],
)
def test_whether_a_number_is_anyones_is_one_command_not_the_cache(
    portal: Any, dialled: str, known: bool
) -> None:
    crm_find_by_phone(phone=dialled)  # cached now
    portal.control.clear_requests()

    assert crm_phone_known(phone=dialled) is known

    [request] = top_level(portal)
    assert request["method"] == "crm.duplicate.findbycomm"
    assert "entity_type" not in request["params"]  # all three types at once


@pytest.mark.parametrize("raw", ["hello", "12", "+48 600 111 222 333 444 555"])
def test_what_cannot_be_a_phone_number_is_refused_without_a_request(portal: Any, raw: str) -> None:
    with pytest.raises(InvalidPhoneNumber):
        crm_find_by_phone(phone=raw)
    assert top_level(portal) == []


def test_twenty_hits_of_one_type_do_not_hide_the_contact(portal: Any) -> None:
    number = "+48699000111"
    for index in range(21):
        portal.control.add_entity(
            "lead", TITLE=f"Spam {index}", PHONE=[{"VALUE": number, "VALUE_TYPE": "WORK"}]
        )
    contact = portal.control.add_entity(
        "contact",
        NAME="Real",
        LAST_NAME="Client",
        PHONE=[{"VALUE": "699 000 111", "VALUE_TYPE": "MOBILE"}],
    )
    # One search over all types loses the contact (REFERENCE 3.1)...
    everything = Bitrix24Client().session.call(
        "crm.duplicate.findbycomm", {"type": "PHONE", "values": [number, "699 000 111"]}
    )
    assert "CONTACT" not in everything.result
    assert len(everything.result["LEAD"]) >= 20

    # ...the lookup asks per type and finds it.
    lookup = crm_find_by_phone(phone=number)
    assert lookup.entity is not None
    assert (lookup.entity.type, lookup.entity.id, lookup.entity.name) == (
        "contact",
        contact,
        "Real Client",
    )


def test_most_recently_active_entity_wins(portal: Any) -> None:
    phone = [{"VALUE": "+48699000222", "VALUE_TYPE": "WORK"}]
    older = portal.control.add_entity("contact", NAME="Older", PHONE=phone)
    newer = portal.control.add_entity("contact", NAME="Newer", PHONE=phone)
    Bitrix24Client().run(b24.entity_update("CONTACT", older, {"POST": "touched"}))

    found = crm_find_by_phone(phone="+48699000222").entity
    assert found is not None
    assert found.id == older
    assert newer != older


def test_second_lookup_is_served_from_the_cache(portal: Any) -> None:
    first = crm_find_by_phone(phone="+48600111222")
    second = crm_find_by_phone(phone="600 111 222")

    assert not first.cached
    assert second.cached
    assert second.as_api() == first.as_api()
    assert second.entity_fields == first.entity_fields
    assert len(top_level(portal)) == 1
    ttl = get_redis().ttl(lookup_key("+48600111222"))
    assert 250 < ttl <= 300


def test_not_found_is_cached_briefly(portal: Any) -> None:
    crm_find_by_phone(phone="+48500000002")
    assert 0 < get_redis().ttl(lookup_key("+48500000002")) <= 60


def test_use_cache_false_asks_the_portal(portal: Any) -> None:
    crm_find_by_phone(phone="+48600111222")
    crm_find_by_phone(phone="+48600111222", use_cache=False)
    assert len(top_level(portal)) == 2


def test_creating_a_lead_invalidates_the_cached_not_found(portal: Any) -> None:
    assert crm_find_by_phone(phone="+48500000003").status == "not_found"

    lead_id = crm_lead_create(
        intent_key="test:lead:invalidate",
        phone="500 000 003",
        title="Call from +48 500 000 003",
        status_id="NEW",
        source_id="CALL",
        responsible_id=5,
    )

    lookup = crm_find_by_phone(phone="+48500000003")
    assert lookup.entity is not None
    assert (lookup.status, lookup.entity.type, lookup.entity.id) == ("found", "lead", lead_id)
    assert not lookup.cached


def test_changing_the_responsible_invalidates_every_number_of_the_entity(portal: Any) -> None:
    before = crm_find_by_phone(phone="+48600111222").responsible
    assert before is not None
    assert before.id == 5

    crm_entity_set_responsible(entity=("contact", 12), user_id=9)

    lookup = crm_find_by_phone(phone="+48600111222")
    assert not lookup.cached
    assert lookup.responsible is not None
    assert lookup.responsible.id == 9
    assert lookup.responsible.name == "Ewa Lewandowska"


def test_lookup_invalidate(portal: Any) -> None:
    crm_find_by_phone(phone="+48600111222")
    crm_lookup_invalidate(phone="600-111-222")
    assert cache_get("+48600111222") is None


def test_cached_lookups_are_per_tenant(portal: Any) -> None:
    crm_find_by_phone(phone="+48600111222")
    with schema_context("beta"):
        assert cache_get("+48600111222") is None
        beta = crm_find_by_phone(phone="+48600111222")
    assert beta.status == "unavailable"  # beta has no Bitrix24 connection
    assert "not connected" in beta.error


def test_slow_portal_gives_pending_within_the_budget(portal: Any) -> None:
    portal.set_fault("slow", delay_ms=1500, method="batch")
    started = time.monotonic()

    lookup = crm_find_by_phone(phone="+48600111222", budget_s=0.3)

    assert time.monotonic() - started < 0.6
    assert lookup.status == "pending"
    assert lookup.as_api()["status"] == "pending"
    assert cache_get("+48600111222") is None  # nothing half-done is cached


def test_tenant_budget_is_the_default(portal: Any) -> None:
    Bitrix24Connection.objects.update(lookup_budget_ms=200)
    portal.set_fault("slow", delay_ms=1000, method="batch")
    started = time.monotonic()
    assert crm_find_by_phone(phone="+48600111222").status == "pending"
    assert time.monotonic() - started < 0.5
    # The sandbox finishes the slow request after the test; wait for it, or the next test
    # would count it as its own.
    until = time.monotonic() + 5
    while not top_level(portal, "batch") and time.monotonic() < until:
        time.sleep(0.05)


@pytest.mark.parametrize("mode", ["http503", "reset"])
def test_portal_down_gives_unavailable(portal: Any, mode: str) -> None:
    portal.set_fault("down", mode=mode)

    lookup = crm_find_by_phone(phone="+48600111222", budget_s=0.8)

    assert lookup.status == "unavailable"
    assert lookup.error


def test_refused_credentials_give_unavailable_at_once(portal: Any) -> None:
    Bitrix24Connection.objects.update(webhook_url=f"{portal.url}/rest/1/wrongsecret/")

    lookup = crm_find_by_phone(phone="+48600111222")

    assert lookup.status == "unavailable"
    assert "INVALID_CREDENTIALS" in lookup.error
    assert len(top_level(portal)) == 1  # permanent: not retried


def test_not_connected_tenant_gets_unavailable(portal: Any) -> None:
    Bitrix24Connection.objects.all().delete()
    assert crm_find_by_phone(phone="+48600111222").status == "unavailable"
