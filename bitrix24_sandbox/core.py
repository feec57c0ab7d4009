"""Shared building blocks of the sandbox: errors, auth context, method registry, value helpers.

Everything here is pure standard library so the sandbox can run without Django.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone, tzinfo
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .state import State

try:  # The product targets Polish portals; fall back to a fixed offset if tzdata is missing.
    from zoneinfo import ZoneInfo

    PORTAL_TZ: tzinfo = ZoneInfo("Europe/Warsaw")
except Exception:  # pragma: no cover - depends on the host
    PORTAL_TZ = timezone(timedelta(hours=1))

PAGE_SIZE = 50

# Every scope a full-access webhook may carry. `user_basic`/`user_brief` are the reduced user
# scopes Bitrix24 offers; methods of the `user` family accept any of the three.
ALL_SCOPES = [
    "crm",
    "telephony",
    "user",
    "user_basic",
    "user_brief",
    "department",
    "im",
    "task",
    "timeman",
    "bizproc",
    "call",
    "disk",
    "entity",
    "pull",
    "messageservice",
]


class RestError(Exception):
    """A REST-level failure rendered as ``{"error": code, "error_description": text}``.

    Bitrix24 throws most validation errors without a code, which the REST server turns into
    HTTP 400 with ``"error": ""`` (REFERENCE 1.4), hence the defaults.
    """

    def __init__(
        self,
        description: str,
        code: str = "",
        status: int = 400,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(description)
        self.description = description
        self.code = code
        self.status = status
        self.extra = extra or {}

    def payload(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.code, "error_description": self.description}
        body.update(self.extra)
        return body


@dataclass
class Auth:
    """Who is calling: an inbound webhook or an OAuth access token."""

    mode: str  # "webhook" | "oauth"
    user_id: int
    scopes: list[str]
    key: str  # identifies the webhook/app for per-app accounting (operating time)
    app_id: int | None = None
    client_id: str | None = None
    access_token: str | None = None
    webhook_id: int | None = None


@dataclass
class Ctx:
    state: State
    auth: Auth
    base_url: str
    request_id: int
    in_batch: bool = False


@dataclass
class Page:
    """A list-method result; the REST server lifts ``total``/``next`` into the envelope."""

    result: Any
    total: int | None = None
    next: int | None = None


@dataclass(frozen=True)
class MethodSpec:
    name: str
    scopes: tuple[str, ...]  # any of these grants access; empty = no scope needed
    func: Callable[[Ctx, dict[str, Any]], Any]
    batchable: bool = True


METHODS: dict[str, MethodSpec] = {}


def rest_method(
    name: str, scope: str | tuple[str, ...] | None, batchable: bool = True
) -> Callable[[Callable[[Ctx, dict[str, Any]], Any]], Callable[[Ctx, dict[str, Any]], Any]]:
    scopes: tuple[str, ...]
    if scope is None:
        scopes = ()
    elif isinstance(scope, str):
        scopes = (scope,)
    else:
        scopes = scope

    def register(
        func: Callable[[Ctx, dict[str, Any]], Any],
    ) -> Callable[[Ctx, dict[str, Any]], Any]:
        METHODS[name.lower()] = MethodSpec(name.lower(), scopes, func, batchable)
        return func

    return register


USER_SCOPES = ("user", "user_basic", "user_brief")


# --------------------------------------------------------------------------------------------
# Parameter helpers. Legacy CRM methods look a parameter up in lower case first, then upper case
# (CCrmRestProxyBase::resolveParam), so both spellings work there.


def param(p: dict[str, Any], name: str, default: Any = None) -> Any:
    for key in (name, name.lower(), name.upper()):
        if key in p:
            return p[key]
    return default


def upper_keys(p: Any) -> dict[str, Any]:
    if not isinstance(p, dict):
        return {}
    return {str(k).upper(): v for k, v in p.items()}


def to_int(value: Any, default: int | None = None) -> int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        s = value.strip()
        if re.fullmatch(r"[+-]?\d+", s):
            return int(s)
    return default


def to_float(value: Any, default: float | None = None) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip().replace(",", "."))
        except ValueError:
            return default
    return default


def to_bool(value: Any) -> bool | None:
    """PHP-ish truthiness for flags sent as 1/0, Y/N, true/false."""
    if isinstance(value, bool):
        return value
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return value != 0
    s = str(value).strip().lower()
    if s in ("1", "y", "yes", "true", "on"):
        return True
    if s in ("0", "n", "no", "false", "off", ""):
        return False
    return None


def as_list(value: Any) -> list[Any]:
    """PHP arrays arrive as lists or as dicts with arbitrary keys; both mean 'a list of values'."""
    if value is None:
        return []
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        return list(value.values())
    return [value]


# --------------------------------------------------------------------------------------------
# Dates. Bitrix24 renders datetimes in ISO-8601 with the portal's offset, second resolution.


def now() -> float:
    return time.time()


def iso(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, PORTAL_TZ).isoformat(timespec="seconds")


def parse_datetime(value: Any) -> float | None:
    """Parse ISO-8601, ``YYYY-MM-DD`` or the legacy ``DD.MM.YYYY [HH:MM[:SS]]`` into a timestamp.

    Values without an offset are read in the portal's time zone, which is what Bitrix24 does
    (and why REFERENCE 7.5 tells clients to always send one).
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    dt = _parse_dt_text(str(value).strip())
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=PORTAL_TZ)
    return dt.timestamp()


def _parse_dt_text(s: str) -> datetime | None:
    m = re.fullmatch(r"(\d{2})\.(\d{2})\.(\d{4})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2}))?)?", s)
    try:
        if m:
            d, mo, y, hh, mi, ss = m.groups()
            return datetime(int(y), int(mo), int(d), int(hh or 0), int(mi or 0), int(ss or 0))
        try:
            return datetime.fromisoformat(s)
        except ValueError:
            return datetime.combine(date.fromisoformat(s), datetime.min.time())
    except ValueError:
        return None


def php_array(value: Any) -> Any:
    """Mimic PHP's json_encode of arrays: empty -> ``[]``, keys 0..n-1 in order -> a list."""
    if isinstance(value, dict):
        if not value:
            return []
        keys = list(value.keys())
        if all(to_int(k) == i and str(k) == str(i) for i, k in enumerate(keys)):
            return list(value.values())
    return value


@dataclass
class OperatingLog:
    """Per (app/webhook, method) execution time over the last 10 minutes (REFERENCE 2)."""

    entries: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    def add(self, key: str, started: float, seconds: float) -> None:
        items = self.entries.setdefault(key, [])
        items.append((started, seconds))
        cutoff = started - 600
        while items and items[0][0] < cutoff:
            items.pop(0)

    def summary(self, key: str, at: float) -> tuple[float, int]:
        items = [e for e in self.entries.get(key, []) if e[0] >= at - 600]
        total = sum(s for _, s in items)
        reset_at = int((items[0][0] if items else at) + 600)
        return total, reset_at
