"""Phone number handling the way Bitrix24 does it (REFERENCE 3.1, 4.1).

Bitrix24 never infers a country: it only strips formatting and applies a handful of
prefix rules, so a national number (``600 111 333``) does not match its E.164 form.
The sandbox reproduces exactly that so clients learn to store and send E.164.
"""

from __future__ import annotations

import re

# Extension markers people type into CRM phone fields: "#12", ";12", ",12", "ext. 12", "доб. 12".
_EXTENSION = re.compile(r"(?:[#;,]|ext\.?|доб\.?)\s*\d*\s*$", re.IGNORECASE)


def normalize_phone(value: object) -> str:
    """Port of ``DuplicateCommunicationCriterion::normalizePhone`` + ``NormalizePhone($n, 1)``."""
    if not isinstance(value, str) or value == "":
        return ""
    number = value.strip()
    # "+8..." is an international number (e.g. China +86), not a Russian trunk 8, so it is
    # rewritten to the 00 form before the 8->7 rule can touch it.
    if number.startswith("+8"):
        number = "00" + number[1:]
    digits_before = re.sub(r"[^0-9]", "", number)
    if digits_before:
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


def clean_phone(value: object) -> str:
    """What ``telephony.externalcall.register`` keeps of PHONE_NUMBER: ``[0-9#*+,;]``."""
    if value is None:
        return ""
    return re.sub(r"[^0-9#*+,;]", "", str(value))


_EXTENSION_DIGITS = re.compile(r"(?:[#;,]|ext\.?|доб\.?)\s*(\d*)\s*$", re.IGNORECASE)
PORTAL_COUNTRY_CODE = "48"  # the sandbox is a Polish portal (seed.py)


def phone_extension(value: str) -> str:
    """The extension part of a clicked number (``+48 22 123 45 67 #12`` -> ``12``)."""
    m = _EXTENSION_DIGITS.search(value)
    return m.group(1) if m and re.search(r"\d", value[: m.start()]) else ""


def international_phone(value: str) -> str:
    """``PHONE_NUMBER_INTERNATIONAL`` of ONEXTERNALCALLSTART: the E.164 form the portal's phone
    parser gives with the portal's country as default (an approximation of
    ``Parser::parse($number)->format(E164)``; the number itself is sent as clicked)."""
    number = value.strip()
    m = _EXTENSION_DIGITS.search(number)
    if m and re.search(r"\d", number[: m.start()]):
        number = number[: m.start()]
    digits = re.sub(r"\D", "", number)
    if not digits:
        return ""
    if number.startswith("+"):
        return "+" + digits
    if digits.startswith("00"):
        return "+" + digits[2:]
    return f"+{PORTAL_COUNTRY_CODE}{digits.removeprefix('0')}"
