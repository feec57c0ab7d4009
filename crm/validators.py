from __future__ import annotations

import re

from django.core.exceptions import ValidationError

# https://PORTAL/rest/{USER_ID}/{SECRET}/ (REFERENCE 1.1); the trailing slash is optional on input.
WEBHOOK_URL_RE = re.compile(
    r"^https://(?P<host>[^/\s]+)/rest/(?P<user_id>\d+)/(?P<secret>[^/\s]+)/?$"
)


def validate_webhook_url(value: str) -> None:
    if not WEBHOOK_URL_RE.match(value):
        raise ValidationError(
            f"Invalid Bitrix24 webhook URL {mask_webhook_url(value)!r}: expected "
            "https://PORTAL/rest/USER_ID/SECRET/ (Bitrix24 only accepts webhooks over HTTPS)."
        )


def mask_webhook_url(value: str) -> str:
    """The URL with its secret hidden, for display and logs."""
    match = WEBHOOK_URL_RE.match(value)
    if not match:
        return re.sub(r"/rest/(\d+)/[^/]+", r"/rest/\1/****", value)
    return f"https://{match['host']}/rest/{match['user_id']}/****/"
