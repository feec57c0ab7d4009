"""Request bodies with hard limits: a rejected request has read no more than the limit."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from typing import Any

from django.core.files.uploadedfile import UploadedFile
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import BaseParser, DataAndFiles

MAX_JSON_BODY_BYTES = 512 * 1024  # a full batch of 100 events is well under 100 KB


class PayloadTooLarge(APIException):
    status_code = 413
    default_detail = "The request body is too large."
    default_code = "payload_too_large"


def _declared_length(parser_context: Mapping[str, Any] | None) -> int:
    request = (parser_context or {}).get("request")
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0) if request is not None else 0
    except ValueError:
        return 0


class BoundedJSONParser(BaseParser):
    media_type = "application/json"

    def parse(
        self,
        stream: Any,
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        if _declared_length(parser_context) > MAX_JSON_BODY_BYTES:
            raise PayloadTooLarge(f"JSON bodies are limited to {MAX_JSON_BODY_BYTES} bytes.")
        raw = stream.read(MAX_JSON_BODY_BYTES + 1) if stream is not None else b""
        if len(raw) > MAX_JSON_BODY_BYTES:
            raise PayloadTooLarge(f"JSON bodies are limited to {MAX_JSON_BODY_BYTES} bytes.")
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ParseError(f"Malformed JSON: {exc}") from exc


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
            raise PayloadTooLarge(f"Recordings are limited to {limit} bytes.")
        spool = tempfile.SpooledTemporaryFile(max_size=2 * 1024 * 1024)  # noqa: SIM115 - handed on
        size = 0
        while stream is not None:
            chunk = stream.read(min(1024 * 1024, limit + 1 - size))
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                spool.close()
                raise PayloadTooLarge(f"Recordings are limited to {limit} bytes.")
            spool.write(chunk)
        spool.seek(0)
        upload = UploadedFile(
            file=spool, name="recording", content_type=media_type or "", size=size
        )
        return DataAndFiles({}, {"file": upload})
