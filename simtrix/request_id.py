"""Every request gets an id: the proxy's X-Request-ID when it is a sane token, a new one
otherwise. It is in every log line of the request (simtrix.logs) and echoed in the response's
X-Request-ID, so a support ticket's id finds the server's lines and the proxy's alike. A Celery
task queued during the request carries it too (simtrix.celery)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from contextvars import ContextVar, Token

from django.http import HttpRequest, HttpResponseBase

HEADER = "X-Request-ID"

# What proxies send (nginx's $request_id, UUIDs, base64 trace ids), and nothing that could split a
# log line or a header: no spaces, quotes or control characters, at most 128 characters.
_SANE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:=+/-]{0,127}")

_request_id: ContextVar[str | None] = ContextVar("simtrix_request_id", default=None)


def current_request_id() -> str | None:
    return _request_id.get()


def request_id_set(request_id: str | None) -> Token[str | None]:
    """For code that is no request (a Celery task): its lines carry `request_id` until
    `request_id_reset` with the returned token."""
    return _request_id.set(request_id)


def request_id_reset(token: Token[str | None]) -> None:
    _request_id.reset(token)


def request_id_from(header: str | None) -> str:
    """The incoming id if sane, else a new one (32 hex digits)."""
    if header and _SANE.fullmatch(header):
        return header
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """First in MIDDLEWARE, so even a host no tenant owns is answered with its id."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        request_id = request_id_from(request.headers.get(HEADER))
        token = _request_id.set(request_id)
        try:
            response = self.get_response(request)
        finally:
            _request_id.reset(token)
        response[HEADER] = request_id
        return response
