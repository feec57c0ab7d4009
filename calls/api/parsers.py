"""Request bodies with hard limits: a rejected request has read no more than the limit."""

from __future__ import annotations

import json
import math
import re
import tempfile
from collections.abc import Mapping
from typing import Any

from django.core.files.uploadedfile import UploadedFile
from django.utils.translation import gettext, gettext_lazy
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import BaseParser, DataAndFiles

MAX_JSON_BODY_BYTES = 512 * 1024  # a full batch of 100 events is well under 100 KB
# Levels of objects and arrays: a batch is 3 ({"events": [{...}]}). Room for a newer app's extra
# fields, far below the parser's recursion limit (50 000 levels crashed it).
MAX_JSON_DEPTH = 32
# What PostgreSQL's text and jsonb cannot hold: NUL, and UTF-16 surrogates not in a pair (JSON's
# "\ud800" escapes decode to them; a valid pair was joined into one character by the decoder).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_UNSTORABLE_TEXT = gettext_lazy(
    "JSON strings may not contain NUL (\\u0000) or unpaired surrogates (\\ud800-\\udfff)."
)


def _too_deep() -> str:
    return gettext("JSON nested deeper than %(depth)s levels.") % {"depth": MAX_JSON_DEPTH}


def _json_too_large() -> str:
    return gettext("JSON bodies are limited to %(limit)s bytes.") % {"limit": MAX_JSON_BODY_BYTES}


def recordings_too_large(limit: int) -> str:
    return gettext("Recordings are limited to %(limit)s bytes.") % {"limit": limit}


class PayloadTooLarge(APIException):
    status_code = 413
    default_detail = gettext_lazy("The request body is too large.")
    default_code = "payload_too_large"


def declared_length(meta: Mapping[str, Any]) -> int:
    """The request's Content-Length; 0 when absent or not a number (the read limits still hold)."""
    try:
        return int(meta.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0


def _declared_length(parser_context: Mapping[str, Any] | None) -> int:
    request = (parser_context or {}).get("request")
    return declared_length(request.META) if request is not None else 0


class BoundedJSONParser(BaseParser):
    """JSON within MAX_JSON_BODY_BYTES that the database can hold, or a 400/413.

    Refused at parse time, whatever field it is in: NaN, Infinity and numbers too large for a
    float (not JSON, and jsonb refuses them), nesting beyond MAX_JSON_DEPTH, NUL and unpaired
    surrogates (json_check_storable).
    """

    media_type = "application/json"

    def parse(
        self,
        stream: Any,
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        if _declared_length(parser_context) > MAX_JSON_BODY_BYTES:
            raise PayloadTooLarge(_json_too_large())
        raw = stream.read(MAX_JSON_BODY_BYTES + 1) if stream is not None else b""
        if len(raw) > MAX_JSON_BODY_BYTES:
            raise PayloadTooLarge(_json_too_large())
        try:
            data = json.loads(
                raw.decode("utf-8"), parse_constant=_refuse_constant, parse_float=_finite_float
            )
        except RecursionError as exc:
            raise ParseError(_too_deep()) from exc
        except (UnicodeDecodeError, ValueError) as exc:
            raise ParseError(gettext("Malformed JSON: %(error)s") % {"error": exc}) from exc
        json_check_storable(data)
        return data


def _refuse_constant(name: str) -> Any:
    raise ValueError(gettext("%(name)s is not a JSON number") % {"name": name})


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(gettext("%(text)s is out of range for a number") % {"text": text})
    return value


def json_check_storable(data: Any) -> None:
    """Refuses (ParseError: a 400) what a bridge never sends and the database cannot store.

    Nesting beyond MAX_JSON_DEPTH, NUL and unpaired surrogates in any string or key. One
    iterative walk of the parsed body (no recursion, so no depth can crash it), before any view
    reads a field: the whole body is refused, also in a field nobody looks at.
    """
    pending: list[tuple[Any, int]] = [(data, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, str):
            if _UNSTORABLE.search(value):
                raise ParseError(_UNSTORABLE_TEXT)
        elif isinstance(value, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise ParseError(_too_deep())
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, str) and _UNSTORABLE.search(key):
                    raise ParseError(_UNSTORABLE_TEXT)
                if isinstance(item, str | dict | list):
                    pending.append((item, depth + 1))


class RawAudioParser(BaseParser):
    """A recording sent as the raw body; the limit comes from the view (a tenant setting).

    Any Content-Type other than multipart lands here: the content, not the label, decides
    whether it is audio (415 otherwise).
    """

    media_type = "*/*"

    def parse(
        self,
        stream: Any,
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> DataAndFiles:
        view = (parser_context or {}).get("view")
        limit = view.upload_limit_bytes() if view is not None else MAX_JSON_BODY_BYTES
        if _declared_length(parser_context) > limit:
            raise PayloadTooLarge(recordings_too_large(limit))
        spool = tempfile.SpooledTemporaryFile(max_size=2 * 1024 * 1024)  # noqa: SIM115 - handed on
        size = 0
        while stream is not None:
            chunk = stream.read(min(1024 * 1024, limit + 1 - size))
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                spool.close()
                raise PayloadTooLarge(recordings_too_large(limit))
            spool.write(chunk)
        spool.seek(0)
        upload = UploadedFile(
            file=spool, name="recording", content_type=media_type or "", size=size
        )
        return DataAndFiles({}, {"file": upload})
