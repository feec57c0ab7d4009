"""Error tracking with sentry-sdk, on when SENTRY_DSN is set (web and Celery alike: both load the
settings, which call `sentry_init`).

Two kinds of data never leave the server, whatever part of an event carries them (every event,
transaction and breadcrumb goes through `scrub_event` first):

- Bitrix24 credentials. A webhook's secret is part of its URL (`/rest/1/<secret>/`, also URL-
  encoded in a form body), the OAuth refresh sends `client_secret` and `refresh_token` in its
  query, the admin's connection form posts `new_webhook_url` and `new_client_secret`, the
  install callback `auth[access_token]`. So: the value of every field whose name contains
  token, secret, password, webhook, auth or key is blanked (in dicts and inside text such as
  form bodies and query strings), a `/rest/<id>/<secret>` in any text is masked, and the
  outbound-request breadcrumbs (`httplib`) keep their URL without its query.
  Frames' local variables are not sent at all (`include_local_variables=False`): a traceback's
  file, function and line are what fixing a bug takes, and locals are where addresses and tokens
  sit under names no list foresees (`url`, `address`, `params`). The scrubber would still walk
  them if they were turned back on.
- Callers' phone numbers: personal data the operators do not need to fix a bug.
  `send_default_pii` is off (no cookies, users or IP addresses); the value of every field whose
  name says phone (`phone`, `phone_number`, `PHONE`, `e164`, `caller`...) is replaced, the same
  fields inside text, and anything that looks like a number in any other text: international
  (`+48 600 111 222`, `0048 600 111 222`) or national (`600 111 222`, `600-111-222`,
  `(22) 123 45 67`), 9 to 15 digits in groups separated by spaces, hyphens or parentheses.

Sentry's own bookkeeping (event, trace and span ids, timestamps) is kept intact. Every pattern is
bounded, so a 100 KB request body is scrubbed in linear time.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import sentry_sdk
from sentry_sdk.integrations.celery import CeleryIntegration
from sentry_sdk.integrations.django import DjangoIntegration

from crm.redaction import scrub as scrub_bitrix24_secrets

FILTERED = "[Filtered]"

# Field names that hold a phone number: ours, the bridge contract's and Bitrix24's.
_PHONE_KEY = re.compile(
    r"(?i)(phone|e164|msisdn|caller_?number|caller_?id|called_?number|^number$|^caller$|^callee$)"
)
# Field names that hold a credential: the webhook URL, OAuth tokens and secrets, passwords,
# `Authorization`, the CSRF token, API keys (and `auth[access_token]`-style form names).
_SECRET_KEY = re.compile(r"(?i)(token|secret|password|passwd|webhook|auth|key)")
# A field written out in text: "phone_number": "600 111 222", PHONE=600111222,
# new_webhook_url=https%3A..., auth%5Baccess_token%5D=... The name is matched whole (from a
# boundary, at most 80 characters) and judged by `_field_in_text`: a pattern with a free prefix
# before a fixed word (`[a-z_]*phone`) retries at every position of a long run of letters, which
# took seconds on 20 KB. A value ends at a quote, a separator or a space not followed by a digit.
_FIELD_IN_TEXT = re.compile(
    r"""(?ix)
    (?<![\w\[\]%])
    (["']?([\w\[\]%]{1,80})["']?\s{0,3}[:=]\s{0,3}["']?)
    ([^"'&,;}\]\s](?:[^"'&,;}\]\s]|\s(?=[\d(+]))*)
    """
)


def _field_in_text(match: re.Match[str]) -> str:
    name = match.group(2)
    if _SECRET_KEY.search(name) or _PHONE_KEY_IN_TEXT.search(name):
        return match.group(1) + FILTERED
    return match.group()


_PHONE_KEY_IN_TEXT = re.compile(r"(?i)(phone|e164|msisdn|caller_?number)")
# A webhook's secret URL-encoded (a form body): %2Frest%2F1%2F<secret>
_ENCODED_WEBHOOK_PATH = re.compile(r"(?i)(%2Frest%2F\d+%2F)[^%&\s'\"]+")
# "+48 600 111 222", "+1 (415) 555-0100", "+48600111222": a plus, then 7-15 digits.
_INTERNATIONAL = re.compile(r"\+\d(?:[\s.\-()]{0,2}\d){6,14}")
# 600111222, 600 111 222, 600-111-222, 0048 600 111 222, (22) 123 45 67: runs of digits joined
# by one or two separators (never by a dot or a colon: versions, addresses and times are not
# numbers). Separators are required between runs, so a run is matched one way only (linear).
# Whether it is a number (9-15 digits) is decided on the match: `_national`.
_DIGIT_GROUPS = re.compile(r"(?<![\w.:/])\(?\d{1,15}(?:[ ()\-]{1,2}\d{1,15}){0,7}(?![\w:/]|\.\d)")


def _national(match: re.Match[str]) -> str:
    digits = sum(char.isdigit() for char in match.group())
    return FILTERED if 9 <= digits <= 15 else match.group()


def scrub_text(text: str) -> str:
    """`text` without credentials or phone numbers."""
    text = _FIELD_IN_TEXT.sub(_field_in_text, text)
    text = scrub_bitrix24_secrets(text)
    text = _ENCODED_WEBHOOK_PATH.sub(lambda m: m.group(1) + FILTERED, text)
    text = _INTERNATIONAL.sub(FILTERED, text)
    return _DIGIT_GROUPS.sub(_national, text)


# The event's own bookkeeping: ids and times Sentry needs intact (a hex id may hold a digit run).
_TECHNICAL_KEYS = frozenset(
    {"event_id", "trace_id", "span_id", "parent_span_id", "timestamp", "start_timestamp", "sdk"}
)


def scrub_event(value: Any) -> Any:
    """A copy of `value` (an event, or any part of one) without credentials or phone numbers."""
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, dict):
        return {key: _scrub_item(key, item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(scrub_event(item) for item in value)
    return value


# The name the tests and older callers know.
scrub_phones = scrub_event


def _scrub_item(key: Any, item: Any) -> Any:
    if not isinstance(key, str):
        return scrub_event(item)
    if key in _TECHNICAL_KEYS:
        return item
    if _SECRET_KEY.search(key) and _is_scalar(item):
        return FILTERED
    if _PHONE_KEY.search(key) and _has_value(item):
        return FILTERED
    return scrub_event(item)


def _is_scalar(item: Any) -> bool:
    # A secret field's value, or a list of them; a section named "auth" (the install callback's
    # nested form) is walked, and its own fields are blanked by name.
    if isinstance(item, list | tuple):
        return all(_is_scalar(i) for i in item)
    return not isinstance(item, dict) and item not in (None, "", False)


def _has_value(item: Any) -> bool:
    # A phone field that is empty, false or a nested object (a config section named "phone")
    # is walked, not blanked: only a number or a list of numbers is replaced.
    if isinstance(item, list | tuple):
        return any(_has_value(i) for i in item) or not item
    if isinstance(item, dict):
        return bool(item) and ("VALUE" in item or "value" in item)
    return item not in (None, "", False)


def _without_query(url: Any) -> Any:
    if not isinstance(url, str):
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return FILTERED
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def before_send(event: Any, hint: dict[str, Any]) -> Any:
    return scrub_event(event)


def before_breadcrumb(crumb: Any, hint: dict[str, Any]) -> Any:
    """An outbound request's crumb keeps method, host, path (secret masked) and status; its
    query and fragment (OAuth's refresh_token and client_secret) are dropped."""
    data = crumb.get("data") if isinstance(crumb, dict) else None
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if k not in ("http.query", "http.fragment")}
        if "url" in data:
            data["url"] = _without_query(data["url"])
        crumb = {**crumb, "data": data}
    return scrub_event(crumb)


def sentry_init(
    *,
    dsn: str,
    environment: str = "",
    release: str = "",
    traces_sample_rate: float = 0.0,
    transport: Any = None,
) -> bool:
    """Starts error tracking if a DSN is given; True when it did (nothing is sent otherwise).
    `transport` replaces the HTTP one (the tests catch envelopes with it)."""
    if not dsn:
        return False
    sentry_sdk.init(
        dsn=dsn,
        integrations=[DjangoIntegration(), CeleryIntegration()],
        send_default_pii=False,
        include_local_variables=False,
        before_send=before_send,
        before_send_transaction=before_send,
        before_breadcrumb=before_breadcrumb,
        environment=environment or None,
        release=release or None,
        traces_sample_rate=traces_sample_rate,
        transport=transport,
    )
    return True
