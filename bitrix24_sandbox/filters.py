"""Bitrix24 list semantics: filter prefixes, ordering and 50-row pages (REFERENCE 1.5, 3.4)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from .core import PAGE_SIZE, Page, parse_datetime, to_bool, to_float, to_int
from .phone import normalize_phone

# Longest prefixes first so "!=" is not read as "!" + "=FIELD".
OPS = ("!=", ">=", "<=", "!@", "=%", "%=", "!%", "=", "!", ">", "<", "@", "%")
NEGATED = {"!": "=", "!=": "=", "!@": "@", "!%": "%"}

# Value kinds a field can have; decides how filter values are coerced and compared.
INT, FLOAT, DT, STR, CHAR, BOOL, PHONES, INTS, STRS = (
    "int",
    "float",
    "dt",
    "str",
    "char",
    "bool",
    "phones",
    "ints",
    "strs",
)
LIST_KINDS = {PHONES, INTS, STRS}

Getter = Callable[[dict[str, Any], str], Any]
KindOf = Callable[[str], str | None]


def split_key(key: str) -> tuple[str, str]:
    for op in OPS:
        if key.startswith(op) and len(key) > len(op):
            return op, key[len(op) :]
    return "=", key


def _scalar_kind(kind: str) -> str:
    return {INTS: INT, STRS: STR, PHONES: STR}.get(kind, kind)


def _to_char(value: Any) -> str | None:
    if isinstance(value, str) and value.upper() in ("Y", "N"):
        return value.upper()
    b = to_bool(value)
    return None if b is None else ("Y" if b else "N")


def _to_text(value: Any) -> str:
    if isinstance(value, bool):
        return "y" if value else "n"
    return str(value).lower()


_COERCE = {INT: to_int, FLOAT: to_float, DT: parse_datetime, BOOL: to_bool, CHAR: _to_char}


def _coerce(kind: str, value: Any) -> Any:
    if value is None:
        return None
    return _COERCE.get(_scalar_kind(kind), _to_text)(value)


def _record_scalar(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if _scalar_kind(kind) == STR:
        return str(value).lower()
    if kind == CHAR:
        return str(value).upper()
    return value


def _is_empty(value: Any) -> bool:
    return value is None or value in ("", []) or value is False


def _like(pattern: str, explicit: bool) -> re.Pattern[str]:
    if explicit:
        parts = [re.escape(p) for p in pattern.split("%")]
        return re.compile("^" + ".*".join(parts) + "$", re.IGNORECASE | re.DOTALL)
    return re.compile(re.escape(pattern.strip("%")), re.IGNORECASE)


def _eq(kind: str, rec: Any, val: Any) -> bool:
    if kind == PHONES:
        if val is None:
            return False
        raw = str(val).lower()
        norm = normalize_phone(str(val))
        return str(rec).lower() == raw or (norm != "" and normalize_phone(str(rec)) == norm)
    return rec == val


def _equals(kind: str, rec_values: list[Any], value: Any, op: str) -> bool:
    """``=`` (a list value means IN) and ``@`` (IN)."""
    wanted = value if isinstance(value, (list, dict)) else ([value] if op == "@" else None)
    if wanted is not None:
        items = wanted.values() if isinstance(wanted, dict) else wanted
        targets = [_coerce(kind, v) for v in items]
        return any(_eq(kind, r, t) for r in rec_values for t in targets)
    if value is None or value == "":
        return not rec_values or all(_is_empty(r) for r in rec_values)
    target = _coerce(kind, value)
    # target None: e.g. "abc" for an integer field, which matches nothing
    return target is not None and any(_eq(kind, r, target) for r in rec_values)


_COMPARE = {
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
}


def _compare(kind: str, op: str, rec_values: list[Any], value: Any) -> bool:
    target = _coerce(kind, value)
    if target is None:
        return False
    for r in rec_values:
        if r is None or (isinstance(r, str) and _scalar_kind(kind) != STR and r == ""):
            continue
        try:
            if _COMPARE[op](r, target):
                return True
        except TypeError:
            continue
    return False


def _positive(kind: str, op: str, rec_values: list[Any], value: Any) -> bool:
    """Evaluate a non-negated operator; any matching element satisfies list-valued fields."""
    if op in ("=", "@"):
        return _equals(kind, rec_values, value, op)
    if op in ("%", "=%", "%="):
        rx = _like(str(value), explicit=op != "%")
        return any(r is not None and rx.search(str(r)) for r in rec_values)
    return _compare(kind, op, rec_values, value)


def compile_filter(flt: Any, kind_of: KindOf) -> list[tuple[str, str, str, Any]]:
    """Turn a filter dict into (field, op, kind, value) conditions; unknown fields are ignored
    like Bitrix24's legacy list methods do."""
    conds: list[tuple[str, str, str, Any]] = []
    if not isinstance(flt, dict):
        return conds
    for key, value in flt.items():
        op, name = split_key(str(key))
        kind = kind_of(name)
        if kind is None:
            continue
        conds.append((name, op, kind, value))
    return conds


def matches(rec: dict[str, Any], conds: list[tuple[str, str, str, Any]], get: Getter) -> bool:
    for name, op, kind, value in conds:
        raw = get(rec, name)
        values = list(raw) if isinstance(raw, (list, tuple)) else [raw]
        if kind == CHAR and values == [None]:
            values = ["N"]
        values = [_record_scalar(kind, v) for v in values] if kind != PHONES else values
        if op in NEGATED:
            ok = not _positive(kind, NEGATED[op], values, value)
        else:
            ok = _positive(kind, op, values, value)
        if not ok:
            return False
    return True


def parse_order(order: Any, kind_of: KindOf) -> list[tuple[str, bool]]:
    """``{"DATE_MODIFY": "DESC"}`` -> [("DATE_MODIFY", True)] (True = descending)."""
    result: list[tuple[str, bool]] = []
    if isinstance(order, dict):
        items: Iterable[tuple[Any, Any]] = order.items()
    elif isinstance(order, list):
        items = [(f, "ASC") for f in order]
    else:
        return result
    for name, direction in items:
        if kind_of(str(name)) is None:
            continue
        result.append((str(name), str(direction).strip().upper() == "DESC"))
    return result


def sort_rows(rows: list[dict[str, Any]], order: list[tuple[str, bool]], get: Getter) -> None:
    for name, desc in reversed(order):
        # MySQL puts NULLs first in ascending order and last in descending order.
        def key(rec: dict[str, Any], name: str = name) -> tuple[int, Any]:
            v = get(rec, name)
            if isinstance(v, list):
                v = v[0] if v else None
            if v is None or v == "":
                return (0, 0)
            if isinstance(v, str):
                iv = to_int(v)
                return (1, (0, iv, "")) if iv is not None else (1, (1, 0, v.lower()))
            return (1, (0, v, ""))

        rows.sort(key=key, reverse=desc)


def paginate(rows: list[Any], start: Any) -> Page:
    offset = to_int(start, 0) or 0
    if offset == -1:
        # start=-1 skips the COUNT: no total and no next (REFERENCE 1.5).
        return Page(rows[:PAGE_SIZE])
    offset = max(offset, 0)
    chunk = rows[offset : offset + PAGE_SIZE]
    nxt = offset + PAGE_SIZE if offset + PAGE_SIZE < len(rows) else None
    return Page(chunk, total=len(rows), next=nxt)


def select_rows(
    records: Iterable[dict[str, Any]],
    flt: Any,
    order: Any,
    kind_of: KindOf,
    get: Getter,
    *,
    default_order: list[tuple[str, bool]] | None = None,
) -> list[dict[str, Any]]:
    conds = compile_filter(flt, kind_of)
    rows = [r for r in records if matches(r, conds, get)]
    parsed = parse_order(order, kind_of) or default_order or [("ID", False)]
    sort_rows(rows, parsed, get)
    return rows


def plain_get(rec: dict[str, Any], name: str) -> Any:
    return rec.get(name)
