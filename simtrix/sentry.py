"""Error tracking with sentry-sdk, on when SENTRY_DSN is set (web and Celery alike: both load the
settings, which call `sentry_init`).

Callers' phone numbers are personal data the operators do not need to fix a bug, so they never
leave the server: `send_default_pii` is off (no cookies, users or IP addresses), and every event,
transaction and breadcrumb goes through `scrub_phones` first. It replaces the value of every
field whose name says phone (`phone`, `phone_number`, `PHONE`, `e164`, `caller`...) wherever it
is (request bodies, local variables, `extra`), the same fields inside text (JSON or form bodies
kept as a string, query strings), and anything that looks like an international number
(`+48 600 111 222`) or a bare run of 9-15 digits in any other text.
"""

from __future__ import annotations

import re
from typing import Any

import sentry_sdk
from sentry_sdk.integrations.celery import CeleryIntegration
from sentry_sdk.integrations.django import DjangoIntegration

FILTERED = "[Filtered]"

# Field names that hold a phone number: ours, the bridge contract's and Bitrix24's.
_PHONE_KEY = re.compile(
    r"(?i)(phone|e164|msisdn|caller_?number|caller_?id|called_?number|^number$|^caller$|^callee$)"
)
# The same fields written out in text: "phone_number": "600 111 222", PHONE=600111222, ...
_PHONE_FIELD_IN_TEXT = re.compile(
    r"""(?ix)
    (["']?[a-z_]*(?:phone|e164|msisdn|caller_?number)[a-z_0-9\]\[]*["']?\s*[:=]\s*["']?)
    ([^"'&,;}\]\s][^"'&,;}\]]*)
    """
)
# "+48 600 111 222", "+1 (415) 555-0100", "+48600111222": a plus, then 7-15 digits.
_INTERNATIONAL = re.compile(r"\+\d(?:[\s.\-()]{0,2}\d){6,14}")
# 600111222, 48600111222: a national or E.164 number without its plus.
_DIGIT_RUN = re.compile(r"(?<!\d)\d{9,15}(?!\d)")


def scrub_text(text: str) -> str:
    text = _PHONE_FIELD_IN_TEXT.sub(lambda m: m.group(1) + FILTERED, text)
    text = _INTERNATIONAL.sub(FILTERED, text)
    return _DIGIT_RUN.sub(FILTERED, text)


# The event's own bookkeeping: ids and times Sentry needs intact (a hex id may hold a digit run).
_TECHNICAL_KEYS = frozenset(
    {"event_id", "trace_id", "span_id", "parent_span_id", "timestamp", "start_timestamp", "sdk"}
)


def scrub_phones(value: Any) -> Any:
    """A copy of `value` (an event, or any part of one) without phone numbers."""
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, dict):
        return {key: _scrub_item(key, item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(scrub_phones(item) for item in value)
    return value


def _scrub_item(key: Any, item: Any) -> Any:
    if not isinstance(key, str):
        return scrub_phones(item)
    if key in _TECHNICAL_KEYS:
        return item
    if _PHONE_KEY.search(key) and _has_value(item):
        return FILTERED
    return scrub_phones(item)


def _has_value(item: Any) -> bool:
    # A phone field that is empty, false or a nested object (a config section named "phone")
    # is walked, not blanked: only a number or a list of numbers is replaced.
    if isinstance(item, list | tuple):
        return any(_has_value(i) for i in item) or not item
    if isinstance(item, dict):
        return bool(item) and ("VALUE" in item or "value" in item)
    return item not in (None, "", False)


def before_send(event: Any, hint: dict[str, Any]) -> Any:
    return scrub_phones(event)


def before_breadcrumb(crumb: Any, hint: dict[str, Any]) -> Any:
    return scrub_phones(crumb)


def sentry_init(
    *, dsn: str, environment: str = "", release: str = "", traces_sample_rate: float = 0.0
) -> bool:
    """Starts error tracking if a DSN is given; True when it did (nothing is sent otherwise)."""
    if not dsn:
        return False
    sentry_sdk.init(
        dsn=dsn,
        integrations=[DjangoIntegration(), CeleryIntegration()],
        send_default_pii=False,
        before_send=before_send,
        before_send_transaction=before_send,
        before_breadcrumb=before_breadcrumb,
        environment=environment or None,
        release=release or None,
        traces_sample_rate=traces_sample_rate,
    )
    return True
