"""How one phone number may have been typed into Bitrix24, and how Bitrix24 compares numbers.

Pure functions. Bitrix24's duplicate search reduces both the stored and the searched number to
digits with a few prefix rules and then compares whole strings (REFERENCE 3.1): it never infers a
country, so a number stored as ``600 111 333`` is not found by ``+48600111333``. The lookup
therefore asks for every plausible typed form in one request.
"""

from __future__ import annotations

import re

import phonenumbers

from common.phones import InvalidPhoneNumber, phone_to_e164

__all__ = ["MAX_FORMS", "InvalidPhoneNumber", "lookup_forms", "match_key", "phone_to_e164"]

# crm.duplicate.findbycomm uses at most 20 values per call.
MAX_FORMS = 20
_EXTENSION = re.compile(r"(?:[#;,]|ext\.?|доб\.?)\s*\d*\s*$", re.IGNORECASE)


def match_key(value: str) -> str:
    """The digit string Bitrix24 compares (port of ``NormalizePhone($n, 1)``, REFERENCE 3.1)."""
    number = value.strip()
    if number.startswith("+8"):
        number = "00" + number[1:]
    if re.search(r"\d", number):
        number = _EXTENSION.sub("", number)
    number = re.sub(r"[^0-9#*]", "", number)
    if len(number) >= 10:
        if number[:2] in ("80", "81", "82"):
            pass
        elif number.startswith("00"):
            number = number[2:]
        elif number.startswith("011"):
            number = number[3:]
        elif number.startswith("8"):
            number = "7" + number[1:]
        elif number.startswith("0"):
            number = number[1:]
    return number


def lookup_forms(e164: str, *, country: str) -> list[str]:
    """Typed forms of ``e164`` that Bitrix24 would not match with each other, E.164 first.

    ``country`` is the tenant's default country: its people type foreign numbers with its
    international dialling prefix.
    """
    number = phonenumbers.parse(e164, None)
    nsn = phonenumbers.national_significant_number(number)
    cc = str(number.country_code)
    region = phonenumbers.region_code_for_number(number)
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region) if region else None
    trunk = (metadata.national_prefix or "") if metadata else ""
    home = phonenumbers.PhoneMetadata.metadata_for_region(country.upper())
    dial_out = (home.international_prefix or "") if home else ""

    candidates = [
        e164,
        phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL),
        nsn,
        f"00{cc}{nsn}",
    ]
    if trunk:
        candidates += [f"{trunk}{nsn}", f"+{cc}{trunk}{nsn}"]  # "07911…", "+44 (0)7911…"
    if dial_out.isdigit() and dial_out != "00":
        candidates.append(f"{dial_out}{cc}{nsn}")  # "011 48 …", "810 48 …"

    forms: list[str] = []
    seen: set[str] = set()
    for candidate in candidates:
        key = match_key(candidate)
        if key and key not in seen:
            seen.add(key)
            forms.append(candidate)
    return forms[:MAX_FORMS]
