"""Phone numbers as SIMtrix stores them: E.164, read in the tenant's default country."""

from __future__ import annotations

from functools import lru_cache

import phonenumbers
from django.utils.translation import gettext, gettext_lazy


class InvalidPhoneNumber(ValueError):
    pass


@lru_cache(maxsize=4096)
def phone_to_e164(raw: str, *, country: str) -> str:
    """Parses a number as a phone shows it or a person types it; refuses non-numbers.

    Memoised: a call.started parses its number for the lookup, for crm and for the call."""
    try:
        parsed = phonenumbers.parse(raw, country)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhoneNumber(
            gettext("%(number)s is not a phone number.") % {"number": repr(raw)}
        ) from exc
    if not phonenumbers.is_possible_number(parsed):
        raise InvalidPhoneNumber(
            gettext("%(number)s is not a possible phone number.") % {"number": repr(raw)}
        )
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


_TEXTABLE = {
    phonenumbers.PhoneNumberType.MOBILE,
    phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
}

# Why a number of each other type cannot get an SMS: whole phrases, for the translators.
_SMS_PROBLEMS = {
    phonenumbers.PhoneNumberType.FIXED_LINE: gettext_lazy("it is a landline"),
    phonenumbers.PhoneNumberType.TOLL_FREE: gettext_lazy("it is a toll-free number"),
    phonenumbers.PhoneNumberType.PREMIUM_RATE: gettext_lazy("it is a premium-rate number"),
    phonenumbers.PhoneNumberType.SHARED_COST: gettext_lazy("it is a shared-cost number"),
    phonenumbers.PhoneNumberType.VOIP: gettext_lazy("it is a VoIP number"),
    phonenumbers.PhoneNumberType.UAN: gettext_lazy("it is a company's universal number"),
    phonenumbers.PhoneNumberType.PAGER: gettext_lazy("it is a pager"),
    phonenumbers.PhoneNumberType.VOICEMAIL: gettext_lazy("it is a voicemail number"),
}
_NOT_KNOWN_MOBILE = gettext_lazy("it is not known to be a mobile number")


def phone_sms_problem(e164: str) -> str | None:
    """Why an SMS to this number cannot arrive (a landline, a short code, a number of no known
    type), or None for a mobile number. Decided by phonenumbers' number type."""
    try:
        parsed = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return gettext("it is not a phone number")
    if not phonenumbers.is_valid_number(parsed):
        return gettext("it is not a valid number (a short code or a mistyped one)")
    kind = phonenumbers.number_type(parsed)
    if kind in _TEXTABLE:
        return None
    problem = _SMS_PROBLEMS.get(kind, _NOT_KNOWN_MOBILE)
    return str(problem)  # in the language active now
