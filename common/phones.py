"""Phone numbers as SIMtrix stores them: E.164, read in the tenant's default country."""

from __future__ import annotations

from functools import lru_cache

import phonenumbers


class InvalidPhoneNumber(ValueError):
    pass


@lru_cache(maxsize=4096)
def phone_to_e164(raw: str, *, country: str) -> str:
    """Parses a number as a phone shows it or a person types it; refuses non-numbers.

    Memoised: a call.started parses its number for the lookup, for crm and for the call."""
    try:
        parsed = phonenumbers.parse(raw, country)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhoneNumber(f"{raw!r} is not a phone number.") from exc
    if not phonenumbers.is_possible_number(parsed):
        raise InvalidPhoneNumber(f"{raw!r} is not a possible phone number.")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


_TEXTABLE = {
    phonenumbers.PhoneNumberType.MOBILE,
    phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
}


def phone_sms_problem(e164: str) -> str | None:
    """Why an SMS to this number cannot arrive (a landline, a short code, a number of no known
    type), or None for a mobile number. Decided by phonenumbers' number type."""
    try:
        parsed = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return "it is not a phone number"
    if not phonenumbers.is_valid_number(parsed):
        return "it is not a valid number (a short code or a mistyped one)"
    kind = phonenumbers.number_type(parsed)
    if kind in _TEXTABLE:
        return None
    name = {
        phonenumbers.PhoneNumberType.FIXED_LINE: "a landline",
        phonenumbers.PhoneNumberType.TOLL_FREE: "a toll-free number",
        phonenumbers.PhoneNumberType.PREMIUM_RATE: "a premium-rate number",
        phonenumbers.PhoneNumberType.SHARED_COST: "a shared-cost number",
        phonenumbers.PhoneNumberType.VOIP: "a VoIP number",
        phonenumbers.PhoneNumberType.UAN: "a company's universal number",
        phonenumbers.PhoneNumberType.PAGER: "a pager",
        phonenumbers.PhoneNumberType.VOICEMAIL: "a voicemail number",
    }.get(kind, "not known to be a mobile number")
    return f"it is {name}"
