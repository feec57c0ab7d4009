"""What of a Bitrix24 request may be stored: secrets and tokens never, file bodies as sizes."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

SECRET_KEYS = frozenset(
    {
        "auth",
        "auth_token",
        "access_token",
        "refresh_token",
        "client_secret",
        "application_token",
        "password",
        "secret",
        "token",
    }
)
FILE_KEYS = frozenset({"file_content", "files"})
MASK = "****"
MAX_STRING = 300
_WEBHOOK_PATH = re.compile(r"/rest/(\d+)/[^/\s'\"?]+")
_QUERY_SECRET = re.compile(
    r"((?:auth|access_token|refresh_token|client_secret|token)=)[^&\s'\"]+", re.IGNORECASE
)


def redact_params(value: Any, *, depth: int = 0) -> Any:
    """A JSON-safe summary of request parameters with secrets masked and blobs summarised."""
    if depth > 6:
        return "…"
    if isinstance(value, dict):
        summary: dict[str, Any] = {}
        for key, item in value.items():
            name = str(key)
            lowered = name.lower()
            if lowered in SECRET_KEYS:
                summary[name] = MASK
            elif lowered in FILE_KEYS:
                summary[name] = f"<{_size(item)} chars>"
            else:
                summary[name] = redact_params(item, depth=depth + 1)
        return summary
    if isinstance(value, (list, tuple)):
        return [redact_params(item, depth=depth + 1) for item in value[:50]]
    if isinstance(value, str):
        text = scrub(value)
        return text if len(text) <= MAX_STRING else f"{text[:MAX_STRING]}… ({len(text)} chars)"
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return scrub(str(value))[:MAX_STRING]


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """Removes webhook secrets (in URLs), tokens in query strings and known secret values."""
    for secret in secrets:
        if secret and len(secret) >= 6:
            text = text.replace(secret, MASK)
    text = _WEBHOOK_PATH.sub(rf"/rest/\1/{MASK}", text)
    return _QUERY_SECRET.sub(rf"\1{MASK}", text)


def _size(value: Any) -> int:
    if isinstance(value, (str, bytes)):
        return len(value)
    if isinstance(value, (list, tuple)):
        return sum(_size(v) for v in value)
    return len(str(value))
