"""Validation of provisioning input, shared by the admin form and the management command."""

from __future__ import annotations

import re
import zoneinfo
from functools import cache

import phonenumbers
from django.core.exceptions import ValidationError
from django.utils.translation import gettext

# Lower-case identifiers only: a schema name also appears in cache keys and task headers.
SCHEMA_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
RESERVED_SCHEMAS = {"public", "information_schema", "tenant_template"}
HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
)


@cache
def _timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def validate_schema_name(value: str) -> None:
    if not SCHEMA_NAME_RE.match(value) or value.startswith("pg_") or value in RESERVED_SCHEMAS:
        raise ValidationError(
            gettext(
                "Invalid schema name %(value)s: use 1-63 lower-case letters, digits and '_', "
                "starting with a letter (not 'public', 'pg_*' or 'tenant_template')."
            ),
            code="invalid",
            params={"value": repr(value)},
        )


def validate_domain(value: str) -> None:
    if not HOSTNAME_RE.match(value):
        raise ValidationError(
            gettext("Invalid domain %(value)s: expected a host name like acme.example.com."),
            code="invalid",
            params={"value": repr(value)},
        )


def validate_timezone(value: str) -> None:
    if value not in _timezones():
        raise ValidationError(
            gettext("Unknown timezone %(value)s: use an IANA name like Europe/Warsaw."),
            code="invalid",
            params={"value": repr(value)},
        )


def validate_country(value: str) -> None:
    if value not in phonenumbers.SUPPORTED_REGIONS:
        raise ValidationError(
            gettext("Unknown country %(value)s: use an ISO 3166-1 alpha-2 code like PL."),
            code="invalid",
            params={"value": repr(value)},
        )


# Bitrix24's application_token is 32 hex digits; other lengths pass, other characters do not.
EVENTS_TOKEN_RE = re.compile(r"^[A-Za-z0-9._-]{8,128}$")


def validate_events_token(value: str) -> None:
    # Never echoes the value: it is a secret.
    if not EVENTS_TOKEN_RE.match(value):
        raise ValidationError(
            gettext(
                "Invalid Bitrix24 events token: expected the application_token of the portal's "
                "outbound webhook (8 to 128 letters, digits, '.', '_' or '-')."
            ),
            code="invalid",
        )
