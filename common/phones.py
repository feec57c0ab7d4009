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
