"""Pure functions: no database, no portal."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import phonenumbers
import pytest
from hypothesis import given
from hypothesis import strategies as st

from crm.errors import Bitrix24PermanentError
from crm.mapping import (
    automation_target,
    display_name,
    finish_status_code,
    iso_datetime,
    origin_id,
    stage_category,
    stage_semantics,
    task_binding,
)
from crm.phones import MAX_FORMS, lookup_forms, match_key
from crm.redaction import redact_params, scrub


@pytest.mark.parametrize(
    ("outcome", "reason", "code"),
    [
        ("answered", "", "200"),
        ("missed", "", "304"),
        ("rejected", "", "603"),
        ("busy", "", "486"),
        ("no_answer", "", "480"),
        ("cancelled", "", "603-S"),
        ("failed", "Network unreachable", "503"),
        ("failed", "Invalid number", "404"),
        ("failed", "Insufficient funds", "402"),
        ("failed", "Call failed on the phone", "OTHER"),
    ],
)
def test_call_outcome_to_status_code(outcome: str, reason: str, code: str) -> None:
    assert finish_status_code(outcome, reason) == code


def test_unknown_outcome_is_refused() -> None:
    with pytest.raises(ValueError, match="outcome"):
        finish_status_code("exploded")


@pytest.mark.parametrize(
    ("stored", "searched"),
    [
        ("+7 (912) 345-67-89", "79123456789"),
        ("89123456789", "+79123456789"),
        ("0048 600-111-444", "+48600111444"),
        ("+48 600 111 222 #12", "48600111222"),
    ],
)
def test_match_key_follows_bitrix24(stored: str, searched: str) -> None:
    assert match_key(stored) == match_key(searched)


def test_match_key_keeps_what_bitrix24_keeps_apart() -> None:
    assert match_key("600 111 333") != match_key("+48600111333")  # no country inference
    assert match_key("07911 123456") != match_key("+44 7911 123456")


def test_lookup_forms_cover_the_formats_people_type() -> None:
    forms = lookup_forms("+48600111333", country="PL")
    assert forms[0] == "+48600111333"
    keys = {match_key(f) for f in forms}
    for stored in ("600 111 333", "600-111-333", "0048 600 111 333", "+48 600 111 333"):
        assert match_key(stored) in keys
    uk = {match_key(f) for f in lookup_forms("+447911123456", country="PL")}
    for stored in ("07911 123456", "+44 (0)7911 123456", "+44 7911 123456"):
        assert match_key(stored) in uk


_REGIONS = ["PL", "DE", "GB", "RU", "US", "IT", "FR", "UA", "CN"]


@given(region=st.sampled_from(_REGIONS), home=st.sampled_from(_REGIONS), seed=st.integers(0, 10**6))
def test_lookup_forms_are_distinct_bounded_and_find_the_e164_form(
    region: str, home: str, seed: int
) -> None:
    example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
    assert example is not None  # every region sampled has a mobile example
    nsn = phonenumbers.national_significant_number(example)
    # Vary the last digits of a valid example number.
    digits = str(seed).zfill(4)
    number = phonenumbers.parse(f"+{example.country_code}{nsn[:-4]}{digits}", None)
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)

    forms = lookup_forms(e164, country=home)

    keys = [match_key(f) for f in forms]
    assert len(forms) <= MAX_FORMS
    assert len(set(keys)) == len(keys)
    assert match_key(e164) == keys[0]
    national = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
    assert match_key(national) in keys


def test_entity_references() -> None:
    assert task_binding(("company", 21)) == "CO_21"
    assert task_binding(("contact", 12)) == "C_12"
    assert automation_target(("deal", 57)) == "DEAL_57"
    with pytest.raises(ValueError, match="entity type"):
        task_binding(("invoice", 1))


def test_names() -> None:
    assert (
        display_name("contact", {"ID": "12", "NAME": "Anna", "LAST_NAME": "Kowalska"})
        == "Anna Kowalska"
    )
    assert display_name("company", {"ID": "21", "TITLE": "Lex"}) == "Lex"
    assert (
        display_name("lead", {"ID": "25", "TITLE": "Incoming call", "NAME": ""}) == "Incoming call"
    )
    assert display_name("contact", {"ID": "30"}) == "Contact #30"


def test_stage_helpers() -> None:
    assert stage_category("DEAL_STAGE") == 0
    assert stage_category("DEAL_STAGE_3") == 3
    assert stage_category("STATUS") is None
    assert stage_semantics({"SEMANTICS": "S"}) == "success"
    assert stage_semantics({"SEMANTICS": None, "EXTRA": {"SEMANTICS": "apology"}}) == "failure"
    assert stage_semantics({"SEMANTICS": None}) == "process"


def test_datetimes_always_carry_an_offset() -> None:
    warsaw = timezone(timedelta(hours=1))
    assert (
        iso_datetime(datetime(2026, 11, 21, 14, 32, 5, tzinfo=warsaw))
        == "2026-11-21T14:32:05+01:00"
    )
    with pytest.raises(ValueError, match="offset"):
        iso_datetime(datetime(2026, 11, 21, 14, 32, 5))


def test_origin_marker_is_stable_and_short() -> None:
    assert origin_id("call:1:lead") == origin_id("call:1:lead")
    assert origin_id("call:1:lead") != origin_id("call:2:lead")
    assert len(origin_id("x" * 200)) == 35


def test_redaction() -> None:
    summary = redact_params(
        {
            "auth": "token-123456",
            "fields": {"TITLE": "t", "PHONE": [{"VALUE": "+48600111222"}]},
            "FILE_CONTENT": "QUJD" * 100,
            "note": "see https://p.example/rest/1/s3cr3tvalue/crm.lead.add?auth=abcdef123",
        }
    )
    assert summary["auth"] == "****"
    assert summary["FILE_CONTENT"] == "<400 chars>"
    assert summary["fields"]["PHONE"][0]["VALUE"] == "+48600111222"
    assert "s3cr3tvalue" not in summary["note"]
    assert "abcdef123" not in summary["note"]
    assert scrub("the key is abcdefgh", ["abcdefgh"]) == "the key is ****"


def test_error_display_names_the_code_and_what_to_do() -> None:
    error = Bitrix24PermanentError("Invalid request credentials", code="INVALID_CREDENTIALS")
    assert str(error) == "Invalid request credentials (INVALID_CREDENTIALS): check the webhook URL"
    assert str(Bitrix24PermanentError("Not found")) == "Not found"
