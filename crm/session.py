"""The only module that sends HTTP to Bitrix24 (through the official SDK, b24pysdk).

It owns everything about *how* a request is made, so nothing else has to know:

- auth: the tenant's inbound webhook or its local OAuth application; an ``expired_token`` answer
  refreshes the token pair once, under a row lock, so concurrent workers share one refresh and
  the rotated refresh token is persisted;
- rate limits: a Redis model of the portal's leaky bucket (``crm.limiter``) is consulted before
  every request; 503 ``QUERY_LIMIT_EXCEEDED`` lowers the limiter's estimate of the portal's
  bucket, blocks every worker briefly and backs off; 429 ``OPERATION_TIME_LIMIT`` waits until
  ``operating_reset_at``;
- errors: classified into transient (retried with jittered exponential backoff) and permanent
  (raised at once with Bitrix24's ``error_description``); a failure after which the request may
  still have been executed is marked ``ambiguous`` and is never retried blindly for a
  non-idempotent method (see ``crm.intents``);
- timeouts and deadlines (a caller lookup must answer within its budget);
- the request log (``crm.RequestLog``), one row per HTTP attempt plus one per batch command,
  tagged with the SIMtrix call being served (``crm.context``), with secrets redacted;
- where it connects: only through ``crm.outbound`` (public addresses, pinned to the address
  that was checked, no redirect followed). A portal that moved (HTTP 302 to its new domain,
  as Bitrix24 cloud answers after a rename) is followed once, and when the new address passes
  the same checks and answers, the connection is updated. What a tenant admin is told about a
  network failure is only "could not reach the portal"; the detail goes to operators' logs.

b24pysdk is used for URL building, auth placement, JSON encoding, batch ``cmd`` encoding, response
parsing and its typed errors; its requesters send through the pinned transport instead of
``requests.post``, the portal's requests over connections kept per portal within the process
(``crm.outbound``: keep-alive) instead of a new TLS connection each. Its own retry loop is
switched off (``max_retries=1``: it only retries 503 with fixed sleeps and knows no shared
limiter), and its token wrappers are not used: they refresh in memory only, against a
hard-coded OAuth host, without a lock or persistence, and follow a 302 to any domain.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3.exceptions
from b24pysdk import BitrixAppLocal
from b24pysdk import errors as sdk_errors
from b24pysdk.api.callers.call_method import _MethodCaller
from b24pysdk.api.requesters import BitrixAPIRequester, BitrixOAuthRequester
from b24pysdk.utils.encoding import encode_params
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from redis.exceptions import RedisError

from common.metrics import bitrix24_request_record
from crm.coalesce import Owner, active_coalescer
from crm.context import crm_live_active, current_call_id
from crm.errors import (
    AUTH_CODES,
    DOWN_CODES,
    RATE_LIMIT_CODES,
    Bitrix24AuthTypeDenied,
    Bitrix24Error,
    Bitrix24NotConfigured,
    Bitrix24PermanentError,
    Bitrix24TransientError,
)
from crm.limiter import MAX_RATE_WAIT, PortalLimiter, limiter_learns, method_block_key
from crm.mapping import php_dict
from crm.models import Bitrix24Connection, RequestLog
from crm.outbound import OutboundAddressRefused, Resolver, outbound_request
from crm.redaction import redact_params, scrub
from crm.redis_client import get_redis
from crm.validators import (
    WEBHOOK_URL_RE,
    AddressProblem,
    address_parse,
    mask_webhook_url,
    validate_oauth_token_url,
)
from tenants.connection import tenant_connection

logger = logging.getLogger(__name__)

# A 5xx without a JSON body (a proxy's or load balancer's page) is named by its status.
_HTTP_5XX_CODES = {502: "BAD_GATEWAY", 503: "SERVICE_UNAVAILABLE", 504: "GATEWAY_TIMEOUT"}

CONNECT_TIMEOUT = 3.05
READ_TIMEOUT = 10.0
MAX_ATTEMPTS = 4
BACKOFF_BASE = 0.2
BACKOFF_CAP = 4.0
MAX_BATCH = 50

# What a tenant admin reads about a failed connection, whatever the cause (the cause is in the
# operators' log): see Bitrix24Session._transport_error.
UNREACHABLE = "Could not reach the portal"
NOT_A_PORTAL = "Not a Bitrix24 portal: the address answered, but not like Bitrix24"
UNREACHABLE_OAUTH = "Could not reach the OAuth server"
NOT_A_PORTAL_DOWN = "Not a Bitrix24 answer: the address answered with an error page (portal down?)"

Command = tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class _Move:
    """Where a portal that answered 302 says it now lives (already checked as an address)."""

    scheme: str
    domain: str


@dataclass
class _Attempt:
    """One HTTP request's outcome."""

    payload: dict[str, Any]
    error: Bitrix24Error | None = None
    # Bitrix24 answered (JSON, success or error): the address is a portal.
    answered: bool = True
    move: _Move | None = None


@dataclass
class RestResponse:
    result: Any
    total: int | None = None
    next: int | None = None
    time: dict[str, Any] = field(default_factory=dict)


@dataclass
class BatchResponse:
    results: dict[str, Any]
    errors: dict[str, Bitrix24Error]
    totals: dict[str, int]
    nexts: dict[str, int]

    def value(self, key: str) -> Any:
        """The command's result, or its error raised."""
        if key in self.errors:
            raise self.errors[key]
        return self.results.get(key)


class _PortalRequester(BitrixAPIRequester):
    """The SDK's REST requester, sending through the pinned transport (no redirect followed).

    The SDK writes every portal URL as ``https://``: a portal the operator allows over plain
    http gets its scheme back here.
    """

    def __init__(
        self,
        url: str,
        *,
        params: dict[str, Any],
        timeout: tuple[float, float],
        scheme: str,
        resolver: Resolver | None,
    ) -> None:
        super().__init__(url, params=params, timeout=timeout, max_retries=1)
        self._scheme = scheme
        self._resolver = resolver

    def _request(self) -> requests.Response:
        url = self._url
        if self._scheme == "http" and url.startswith("https://"):
            url = "http://" + url.removeprefix("https://")
        return outbound_request(
            "POST",
            url,
            json=self._params,
            headers=self._headers,
            timeout=self._timeout,
            resolver=self._resolver,
            keep_alive=True,
        )


class _TokenEndpoint(BitrixOAuthRequester):
    """The SDK's OAuth requester pointed at the tenant's token URL (its own URL is hard-coded),
    sending through the pinned transport (its own follows redirects)."""

    def __init__(
        self, app: BitrixAppLocal, *, token_url: str, resolver: Resolver | None = None
    ) -> None:
        super().__init__(app, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT), max_retries=1)
        self._OAUTH_TOKEN_URL = token_url
        self._resolver = resolver

    def _request(self, url: str, params: dict[str, Any]) -> requests.Response:
        return outbound_request(
            "GET",
            url,
            params=params,
            headers=self._headers,
            timeout=self._timeout,
            resolver=self._resolver,
        )


def _now() -> float:
    return time.monotonic()


# A thread running run after run (a backlog's lane) keeps its session this long: the
# connection row is read, and its tokens decrypted, once rather than for every request. A
# token another process refreshed meanwhile is adopted on the portal's `expired_token`.
REUSE_SECONDS = 10.0
_reuse: ContextVar[dict[str, tuple[float, Bitrix24Session]] | None] = ContextVar(
    "crm_session_reuse", default=None
)


@contextmanager
def crm_session_reuse() -> Iterator[None]:
    """Within, in this thread, `Bitrix24Session.for_tenant` answers each tenant with the
    session it built for it in the last REUSE_SECONDS (a change of the connection, e.g. a new
    webhook, is seen that much later)."""
    token = _reuse.set({})
    try:
        yield
    finally:
        _reuse.reset(token)


class Bitrix24Session:
    """Requests to one tenant's portal. Cheap to build; use one per unit of work.

    ``resolver`` replaces the system's DNS lookup (tests: a public-looking name that resolves
    to a private address).
    """

    def __init__(self, connection: Bitrix24Connection, *, resolver: Resolver | None = None) -> None:
        self.connection = connection
        self.auth_mode = connection.auth_mode
        self.domain = connection.portal_domain
        self.resolver = resolver
        if connection.auth_mode == Bitrix24Connection.AuthMode.OAUTH:
            if not (connection.oauth_access_token and connection.oauth_client_endpoint):
                raise Bitrix24NotConfigured(
                    "The local application is not installed yet (no tokens): install it in "
                    "Bitrix24 so it posts its tokens to /bitrix24/install/"
                )
            address = connection.oauth_client_endpoint
        else:
            match = WEBHOOK_URL_RE.match(connection.webhook_url or "")
            if not match:
                raise Bitrix24NotConfigured("No Bitrix24 webhook URL is configured")
            self._webhook = f"{match['user_id']}/{match['secret']}"
            address = connection.webhook_url
        # Rows written before the address rules, or by a path that skipped them, are checked
        # here too; what the name resolves to is checked when connecting (crm.outbound).
        try:
            self.scheme = address_parse(address).scheme
        except AddressProblem as exc:
            shown = mask_webhook_url(address)
            raise Bitrix24NotConfigured(f"The portal address {shown!r} is refused: {exc}") from None
        self.limiter = PortalLimiter(self.domain, *connection.rate_limit)
        # When the last request's slot was reserved (Redis time), for the limiter's learning.
        self._reserved_at = 1e18  # none yet: as if reserved just now

    @classmethod
    def for_tenant(cls) -> Bitrix24Session:
        """The session of the current tenant schema (within `crm_session_reuse`, the one built
        for it a moment ago)."""
        reuse = _reuse.get()
        schema = tenant_connection.schema_name
        if reuse is not None and schema in reuse and reuse[schema][0] > _now():
            return reuse[schema][1]
        connection = Bitrix24Connection.objects.filter(singleton=1).first()
        if connection is None:
            raise Bitrix24NotConfigured()
        session = cls(connection)
        if reuse is not None:
            reuse[schema] = (_now() + REUSE_SECONDS, session)
        return session

    # ------------------------------------------------------------------------------------------
    # Public API

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        idempotent: bool = True,
        deadline: float | None = None,
        intent_key: str = "",
        max_attempts: int = MAX_ATTEMPTS,
    ) -> RestResponse:
        payload = self._execute(
            method,
            params or {},
            commands=None,
            idempotent=idempotent,
            deadline=deadline,
            intent_key=intent_key,
            max_attempts=max_attempts,
        )
        return RestResponse(
            result=payload.get("result"),
            total=payload.get("total"),
            next=payload.get("next"),
            time=payload.get("time") or {},
        )

    def batch(
        self,
        commands: dict[str, Command],
        *,
        halt: bool = False,
        idempotent: bool = True,
        deadline: float | None = None,
        intent_key: str = "",
        max_attempts: int = MAX_ATTEMPTS,
    ) -> BatchResponse:
        """Up to 50 commands in one HTTP request (one request for the rate limiter).

        Values may reference earlier results (``$result[key]``), as Bitrix24 allows.
        """
        if not commands:
            return BatchResponse({}, {}, {}, {})
        if len(commands) > MAX_BATCH:
            raise ValueError(f"A batch holds at most {MAX_BATCH} commands, got {len(commands)}")
        payload = self._execute(
            "batch",
            {"halt": 1 if halt else 0},
            commands=commands,
            idempotent=idempotent,
            deadline=deadline,
            intent_key=intent_key,
            max_attempts=max_attempts,
        )
        body = payload.get("result") or {}
        results = php_dict(body.get("result"))
        raw_errors = php_dict(body.get("result_error"))
        errors = {
            key: _error_from_payload(value, http_status=None, method=commands[key][0])
            for key, value in raw_errors.items()
            if key in commands
        }
        return BatchResponse(
            results=results,
            errors=errors,
            totals={k: int(v) for k, v in php_dict(body.get("result_total")).items()},
            nexts={k: int(v) for k, v in php_dict(body.get("result_next")).items()},
        )

    # ------------------------------------------------------------------------------------------
    # The request loop

    def _execute(
        self,
        method: str,
        params: dict[str, Any],
        *,
        commands: dict[str, Command] | None,
        idempotent: bool,
        deadline: float | None,
        intent_key: str,
        max_attempts: int,
        slot_taken: bool = False,
        owners: dict[str, Owner] | None = None,
    ) -> dict[str, Any]:
        """The request's answer (retried by the rules above), or its error raised.

        Inside a backlog's coalescer (``crm.coalesce``), a request it takes rides in a shared
        batch instead. ``slot_taken``: the first attempt's limiter slot is already reserved;
        ``owners``: the shared batch's commands, each with the call it serves."""
        coalescer = active_coalescer() if owners is None else None
        if coalescer is not None and coalescer.takes(
            self, method, params, commands, deadline=deadline
        ):
            return coalescer.execute(
                self,
                method,
                params,
                commands,
                idempotent=idempotent,
                intent_key=intent_key,
                max_attempts=max_attempts,
            )
        return self._requests(
            method,
            params,
            commands=commands,
            idempotent=idempotent,
            deadline=deadline,
            intent_key=intent_key,
            max_attempts=max_attempts,
            slot_taken=slot_taken,
            owners=owners,
        )

    def _requests(
        self,
        method: str,
        params: dict[str, Any],
        *,
        commands: dict[str, Command] | None,
        idempotent: bool,
        deadline: float | None,
        intent_key: str,
        max_attempts: int,
        slot_taken: bool,
        owners: dict[str, Owner] | None,
    ) -> dict[str, Any]:
        """The request loop: HTTP attempts until an answer, or an error worth raising."""
        attempt = 0
        refreshed = False
        followed = False
        moved_from: tuple[str, str] | None = None  # (scheme, domain) while trying a new address
        last_error: Bitrix24Error | None = None
        while True:
            attempt += 1
            try:
                self._wait_for_slot(method, commands, deadline, taken=slot_taken and attempt == 1)
                timeout = _timeout(deadline)
            except Bitrix24Error as exc:
                # Out of time before a retry: the failure worth reporting is the last real one.
                failure = last_error or exc
                self._note_failure(failure)
                raise failure from None
            started = _now()
            outcome = self._attempt(method, params, commands, timeout)
            error = outcome.error
            duration_ms = int((_now() - started) * 1000)
            parent = self._log(
                method,
                params,
                commands,
                attempt=attempt,
                duration_ms=duration_ms,
                error=error,
                intent_key=intent_key,
                owners=owners,
            )
            if moved_from is not None:
                if not outcome.answered:
                    error = self._move_failed(moved_from, error)
                    self._note_failure(error)
                    raise error
                self._move_persist(moved_from)
                moved_from = None
            if error is None:
                if commands:
                    self._log_commands(parent, commands, outcome.payload, intent_key, owners)
                self._note_success()
                return outcome.payload

            if outcome.move is not None and not followed:
                # A 302 means the old address executed nothing: sending again is safe.
                followed = True
                moved_from = (self.scheme, self.domain)
                self._move_to(outcome.move.scheme, outcome.move.domain)
                continue

            if error.code.upper() == "EXPIRED_TOKEN" and self._is_oauth and not refreshed:
                refreshed = True
                self._refresh_tokens(stale_access_token=self.connection.oauth_access_token)
                continue
            last_error = error
            self._respect_limits(method, error)
            retry = self.retry_allowed(error, attempt, max_attempts, idempotent=idempotent)
            delay = self._retry_delay(attempt, error) if retry else 0.0
            if retry and (deadline is None or _now() + delay < deadline - 0.05):
                logger.info("Bitrix24 %s failed (%s), retrying in %.2fs", method, error, delay)
                time.sleep(delay)
                continue
            self._note_failure(error)
            raise error

    def _attempt(
        self,
        method: str,
        params: dict[str, Any],
        commands: dict[str, Command] | None,
        timeout: tuple[float, float],
    ) -> _Attempt:
        try:
            return _Attempt(self._send(method, params, commands, timeout))
        except OutboundAddressRefused as exc:
            return _Attempt({}, self._refused(exc, method), answered=False)
        except sdk_errors.BitrixResponse302JSONDecodeError as exc:
            error, move = self._redirected(exc, method)
            return _Attempt({}, error, answered=False, move=move)
        except sdk_errors.BitrixSDKException as exc:
            answered = isinstance(getattr(exc, "json_response", None), dict)
            return _Attempt({}, self._classify(exc, method), answered=answered)

    def _respect_limits(self, method: str, error: Bitrix24Error) -> None:
        try:
            self._limits_note(method, error)
        except RedisError as exc:
            logger.warning("the portal's limit not noted (Redis unavailable): %s", exc)

    def _limits_note(self, method: str, error: Bitrix24Error) -> None:
        if error.code == "QUERY_LIMIT_EXCEEDED":
            # Someone else is using the portal too, or its bucket is smaller than configured:
            # the estimate goes down (and creeps back), and everybody slows down for a moment.
            self.limiter.exceeded(self._reserved_at, learns=limiter_learns())
            self.limiter.block(1.0 / self.limiter.per_second + random.uniform(0, 0.5))
        if error.code == "OPERATION_TIME_LIMIT" and error.retry_after is not None:
            get_redis().set(
                method_block_key(self.domain, method),
                time.time() + error.retry_after,
                px=int(error.retry_after * 1000) + 1000,
            )

    def _send(
        self,
        method: str,
        params: dict[str, Any],
        commands: dict[str, Command] | None,
        timeout: tuple[float, float],
    ) -> dict[str, Any]:
        if commands is not None:
            # The batch's commands travel as query strings (REFERENCE 1.6), as the SDK writes them.
            method, params = (
                "batch",
                {
                    "cmd": {key: f"{m}?{encode_params(p)}" for key, (m, p) in commands.items()},
                    "halt": bool(params.get("halt")),
                },
            )
        caller = _MethodCaller(
            domain=self.domain,
            auth_token=self.connection.oauth_access_token if self._is_oauth else self._webhook,
            is_webhook=not self._is_oauth,
            api_method=method,
            params=params,
        )
        requester = _PortalRequester(
            caller._url,
            params=caller._effective_params,
            timeout=timeout,
            scheme=self.scheme,
            resolver=self.resolver,
        )
        return requester.call()

    @property
    def _is_oauth(self) -> bool:
        return self.auth_mode == Bitrix24Connection.AuthMode.OAUTH

    def _wait_for_slot(
        self,
        method: str,
        commands: dict[str, Command] | None,
        deadline: float | None,
        *,
        taken: bool = False,
    ) -> None:
        """Sleeps until the request may be sent (``taken``: its slot is reserved already)."""
        if taken:
            return
        try:
            self._slot_take(method, commands, deadline)
        except RedisError as exc:
            raise _limiter_unavailable(exc, method) from exc

    def _slot_take(
        self, method: str, commands: dict[str, Command] | None, deadline: float | None
    ) -> None:
        max_wait = MAX_RATE_WAIT if deadline is None else max(0.0, deadline - _now() - 0.05)
        # A method blocked by OPERATION_TIME_LIMIT stays blocked until its reset time.
        blocked = [method] if commands is None else sorted({m for m, _ in commands.values()})
        for name in blocked:
            wait = self._method_blocked_for(name)
            if wait > max_wait:
                raise _method_blocked(name, wait)
            if wait > 0:
                time.sleep(wait)
        # A request somebody waits for (a ringing phone's lookup: it has a deadline; the
        # register that pops its card) takes the priority lane, ahead of the backlog.
        slot = self.limiter.acquire(
            max_wait=max_wait,
            learns=limiter_learns(),
            priority=deadline is not None or crm_live_active(),
        )
        if slot is None:
            raise Bitrix24TransientError(
                "No request slot free within the time allowed (portal rate limit)",
                code="RATE_LIMITED",
                method=method,
                retry_after=1.0 / self.limiter.per_second,
            )
        self._reserved_at = slot.at
        if slot.wait > 0:
            time.sleep(slot.wait)

    def _method_blocked_for(self, method: str) -> float:
        """Seconds until Bitrix24 takes ``method`` again (OPERATION_TIME_LIMIT), or 0."""
        raw = get_redis().get(method_block_key(self.domain, method))
        return 0.0 if raw is None else max(0.0, float(raw) - time.time())

    def methods_blocked(self, methods: set[str]) -> Bitrix24TransientError | None:
        """The error of a request using one of ``methods`` while Bitrix24 blocks it, or while
        Redis cannot tell (the shared batch of ``crm.coalesce`` leaves such a request out), or
        None."""
        for name in sorted(methods):
            try:
                wait = self._method_blocked_for(name)
            except RedisError as exc:
                return _limiter_unavailable(exc, name)
            if wait > 0:
                return _method_blocked(name, wait)
        return None

    def command_error(self, payload: dict[str, Any], method: str) -> Bitrix24Error:
        """A batch command's ``result_error`` entry as a typed error."""
        return _error_from_payload(payload, http_status=None, method=method, scrub_with=self)

    @staticmethod
    def retry_allowed(
        error: Bitrix24Error, attempt: int, max_attempts: int, *, idempotent: bool
    ) -> bool:
        """Whether a failed request is sent again: a transient error, attempts left, and no
        chance of doing a non-idempotent request twice."""
        return error.transient and attempt < max_attempts and (idempotent or not error.ambiguous)

    @staticmethod
    def _retry_delay(attempt: int, error: Bitrix24Error) -> float:
        if error.retry_after is not None:
            return error.retry_after + random.uniform(0, 0.2)
        backoff = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1))
        return backoff / 2 + random.uniform(0, backoff / 2)

    # ------------------------------------------------------------------------------------------
    # Errors

    def _classify(self, exc: sdk_errors.BitrixSDKException, method: str) -> Bitrix24Error:
        if isinstance(exc, sdk_errors.BitrixRequestError):
            return self._transport_error(exc, method)
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
        payload = getattr(exc, "json_response", None)
        if isinstance(payload, dict):
            return _error_from_payload(payload, http_status=status, method=method, scrub_with=self)
        # A body that is not JSON: a proxy's error page, a web site that is not a portal.
        logger.warning("Bitrix24 %s on %s: HTTP %s without JSON", method, self.domain, status)
        if status is not None and status >= 500:
            return Bitrix24TransientError(
                NOT_A_PORTAL_DOWN,
                code=_HTTP_5XX_CODES.get(status, "SERVER_ERROR"),
                http_status=status,
                method=method,
                ambiguous=True,
            )
        return Bitrix24PermanentError(
            NOT_A_PORTAL, code="UNEXPECTED_ANSWER", http_status=status, method=method
        )

    def _transport_error(self, exc: sdk_errors.BitrixRequestError, method: str) -> Bitrix24Error:
        """Every failure to connect reads the same to the tenant: refused, filtered, TLS and
        name errors told apart would make "Test connection" a port scanner. Operators' logs
        keep the detail; the classification (transient, ambiguous) is the detail's."""
        original = exc.__cause__ or (exc.args[1] if len(exc.args) > 1 else exc)
        detail = scrub(str(original), self._secrets())
        logger.warning("Bitrix24 %s on %s failed: %s", method, self.domain, detail)
        if isinstance(original, requests.exceptions.SSLError):
            # A certificate that does not fit will not fit on the next attempt either.
            return Bitrix24PermanentError(UNREACHABLE, code="CONNECTION_ERROR", method=method)
        not_sent = isinstance(original, requests.exceptions.ConnectTimeout) or _never_connected(
            original
        )
        if isinstance(original, requests.exceptions.Timeout) and not not_sent:
            # Connected, TLS verified, request sent: a real portal that is slow to answer.
            return Bitrix24TransientError(
                "Bitrix24 did not answer in time", code="TIMEOUT", method=method, ambiguous=True
            )
        return Bitrix24TransientError(
            UNREACHABLE, code="CONNECTION_ERROR", method=method, ambiguous=not not_sent
        )

    def _refused(self, exc: OutboundAddressRefused, method: str) -> Bitrix24Error:
        logger.warning("Bitrix24 %s: not connecting to %s, which %s", method, exc.host, exc.reason)
        # Transient like any unreachable portal: once the address (or the operator's policy)
        # is fixed, the work waiting for the portal goes through.
        return Bitrix24TransientError(UNREACHABLE, code="CONNECTION_ERROR", method=method)

    # ------------------------------------------------------------------------------------------
    # A moved portal

    def _redirected(
        self, exc: sdk_errors.BitrixResponse302JSONDecodeError, method: str
    ) -> tuple[Bitrix24Error, _Move | None]:
        """A 302 answer: a moved portal when it points at the same REST path on another host."""
        location = exc.redirect_url or ""
        parts = urlsplit(location)
        shown = scrub(mask_webhook_url(location), self._secrets())
        if not (parts.scheme and parts.netloc and parts.path.startswith("/rest/")):
            logger.warning("Bitrix24 %s on %s: redirect to %s", method, self.domain, shown)
            return Bitrix24PermanentError(
                NOT_A_PORTAL, code="UNEXPECTED_ANSWER", http_status=302, method=method
            ), None
        base = mask_webhook_url(f"{parts.scheme}://{parts.netloc}")
        try:
            target = address_parse(f"{parts.scheme}://{parts.netloc}/rest/")
            if target.scheme == "http" and self.scheme == "https":
                raise AddressProblem("from https:// to http:// would send the secret in clear")
            if (target.scheme, target.netloc) == (self.scheme, self.domain.lower()):
                raise AddressProblem("it is the same address")
        except AddressProblem as problem:
            logger.warning(
                "Bitrix24 portal %s moved to %s: refused (%s)", self.domain, base, problem
            )
            return Bitrix24PermanentError(
                f"The portal moved to {base}, an address SIMtrix does not connect to "
                f"({problem}): update the connection",
                code="PORTAL_MOVED",
                http_status=302,
                method=method,
            ), None
        return Bitrix24PermanentError(
            f"The portal moved to {target.base}",
            code="PORTAL_MOVED",
            http_status=302,
            method=method,
        ), _Move(target.scheme, target.netloc)

    def _move_to(self, scheme: str, domain: str) -> None:
        self.scheme, self.domain = scheme, domain
        self.limiter = PortalLimiter(domain, *self.connection.rate_limit)

    def _move_persist(self, moved_from: tuple[str, str]) -> None:
        """The new address answered like Bitrix24: the connection points there from now on."""
        conn = self.connection
        base = f"{self.scheme}://{self.domain}"
        if self._is_oauth:
            conn.oauth_client_endpoint = f"{base}/rest/"
            conn.save(update_fields=["oauth_client_endpoint", "updated_at"])
        else:
            conn.webhook_url = f"{base}/rest/{self._webhook}/"
            conn.save(update_fields=["webhook_url", "updated_at"])
        logger.warning(
            "Bitrix24 portal %s://%s moved to %s: the connection was updated", *moved_from, base
        )

    def _move_failed(
        self, moved_from: tuple[str, str], error: Bitrix24Error | None
    ) -> Bitrix24Error:
        """The new address did not answer like Bitrix24: back to the stored one, and say so."""
        target = f"{self.scheme}://{self.domain}"
        self._move_to(*moved_from)
        logger.warning(
            "Bitrix24 portal %s://%s moved to %s, which did not answer (%s)",
            *moved_from,
            target,
            error.code if error else "?",
        )
        transient = error is not None and error.transient
        cls = Bitrix24TransientError if transient else Bitrix24PermanentError
        return cls(
            f"The portal moved to {target}, which did not answer like a Bitrix24 portal: "
            "check the new address and update the connection",
            code="PORTAL_MOVED",
            http_status=error.http_status if error else None,
            method=error.method if error else "",
            # The request may have reached the new address before it failed.
            ambiguous=bool(error and error.ambiguous),
        )

    def _secrets(self) -> list[str]:
        conn = self.connection
        values = [conn.oauth_access_token, conn.oauth_refresh_token, conn.oauth_client_secret]
        if not self._is_oauth:
            values.append(self._webhook.split("/", 1)[1])
        return [v for v in values if v]

    # ------------------------------------------------------------------------------------------
    # OAuth

    def _refresh_tokens(self, *, stale_access_token: str) -> None:
        """Exchanges the refresh token for a new pair, once for all concurrent workers.

        The connection row is locked for the duration: a worker that waited on the lock finds a
        different access token in the row and adopts it instead of refreshing again (a second
        refresh with the already-rotated refresh token would fail with ``invalid_grant``).
        """
        try:
            with transaction.atomic():
                conn = Bitrix24Connection.objects.select_for_update().get(pk=self.connection.pk)
                if conn.oauth_access_token and conn.oauth_access_token != stale_access_token:
                    self.connection = conn
                    return
                if not (conn.oauth_refresh_token and conn.oauth_client_id):
                    raise Bitrix24NotConfigured(
                        "The access token expired and no refresh token is stored: reinstall "
                        "the application"
                    )
                data = oauth_token_request(
                    conn, refresh_token=conn.oauth_refresh_token, resolver=self.resolver
                )
                apply_token_response(conn, data)
                conn.save(
                    update_fields=[
                        "oauth_access_token",
                        "oauth_refresh_token",
                        "oauth_expires_at",
                        "oauth_client_endpoint",
                        "oauth_member_id",
                        "updated_at",
                    ]
                )
        except Bitrix24Error as exc:
            self._note_failure(exc)  # outside the rolled-back block, so it stays visible
            raise
        self.connection = conn
        self.domain = conn.portal_domain

    # ------------------------------------------------------------------------------------------
    # Request log and connection health

    def _log(
        self,
        method: str,
        params: dict[str, Any],
        commands: dict[str, Command] | None,
        *,
        attempt: int,
        duration_ms: int,
        error: Bitrix24Error | None,
        intent_key: str,
        owners: dict[str, Owner] | None = None,
    ) -> RequestLog:
        """``owners``: a batch of several calls' commands, each command's row naming its own
        call (also when the batch failed: every call's audit shows its attempt)."""
        bitrix24_request_record(method=method, outcome="ok" if error is None else error.outcome)
        summary = redact_params(params)
        sub_methods: list[str] = []
        if commands is not None:
            sub_methods = [f"{key}: {m}" for key, (m, _) in commands.items()]
        row = RequestLog.objects.create(
            method=method,
            is_batch=commands is not None,
            sub_methods=sub_methods,
            attempt=attempt,
            duration_ms=duration_ms,
            http_status=200 if error is None else error.http_status,
            error_code=(error.code or "ERROR") if error else "",
            error_description=error.description if error else "",
            auth_mode=self.auth_mode,
            call_id=None if owners is not None else current_call_id(),
            intent_key=intent_key[:200],
            params=summary,
        )
        if commands and owners is not None and error is not None:
            self._log_commands(row, commands, {}, intent_key, owners, failed=error)
        return row

    def _log_commands(
        self,
        parent: RequestLog,
        commands: dict[str, Command],
        payload: dict[str, Any],
        intent_key: str,
        owners: dict[str, Owner] | None = None,
        *,
        failed: Bitrix24Error | None = None,
    ) -> None:
        """A row per command of a batch; ``owners``: whose each command is (a shared batch);
        ``failed``: the batch as a whole failed with this error."""
        body = payload.get("result") or {}
        errors = php_dict(body.get("result_error"))
        times = php_dict(body.get("result_time"))
        call_id = current_call_id()
        rows = []
        for key, (sub_method, sub_params) in commands.items():
            err: Any = errors.get(key)
            if failed is not None:
                err = {"error": failed.code or "ERROR", "error_description": failed.description}
            executed = key in php_dict(body.get("result")) or err is not None
            owner = owners.get(key) if owners else None
            duration = (times.get(key) or {}).get("duration") if isinstance(times, dict) else None
            rows.append(
                RequestLog(
                    parent=parent,
                    method=sub_method,
                    is_batch=True,
                    attempt=parent.attempt,
                    duration_ms=int(float(duration or 0) * 1000),
                    http_status=None,
                    error_code=(
                        (str(err.get("error") or "ERROR") if isinstance(err, dict) else "ERROR")
                        if err is not None
                        else ("" if executed else "NOT_EXECUTED")
                    ),
                    error_description=(
                        str(err.get("error_description") or "") if isinstance(err, dict) else ""
                    ),
                    auth_mode=self.auth_mode,
                    call_id=owner.call_id if owner else call_id,
                    intent_key=(owner.intent_key if owner else intent_key)[:200],
                    params={"key": key, **redact_params(sub_params)},
                )
            )
        RequestLog.objects.bulk_create(rows)

    def _note_failure(self, error: Bitrix24Error) -> None:
        """Errors about the connection itself (not about one request's data) go on the row."""
        if not _is_connection_problem(error):
            return
        now = timezone.now()
        Bitrix24Connection.objects.filter(pk=self.connection.pk).update(
            last_error_code=error.code[:64],
            last_error=error.display(),
            last_error_at=now,
        )
        self.connection.last_error_code = error.code
        self.connection.last_error = error.display()

    def _note_success(self) -> None:
        if not self.connection.last_error_code:
            return
        Bitrix24Connection.objects.filter(pk=self.connection.pk).update(
            last_error_code="", last_error="", last_ok_at=timezone.now()
        )
        self.connection.last_error_code = ""
        self.connection.last_error = ""


# ----------------------------------------------------------------------------------------------
# OAuth token endpoint


def oauth_token_request(
    conn: Bitrix24Connection, *, refresh_token: str, resolver: Resolver | None = None
) -> dict[str, Any]:
    """One refresh at the OAuth server; logged (redacted) like every other request.

    Like the portal, the OAuth server is reached through ``crm.outbound`` and a redirect is
    never followed (the SDK's own requester would follow it anywhere, secret in the query).
    """
    try:
        validate_oauth_token_url(conn.oauth_token_url)
    except ValidationError as exc:
        raise Bitrix24NotConfigured(exc.messages[0]) from None
    secrets = [refresh_token, conn.oauth_client_secret]
    app = BitrixAppLocal(
        domain=conn.portal_domain or "unknown",
        client_id=conn.oauth_client_id,
        client_secret=conn.oauth_client_secret,
    )
    started = _now()
    error: Bitrix24Error | None = None
    data: dict[str, Any] = {}
    try:
        endpoint = _TokenEndpoint(app, token_url=conn.oauth_token_url, resolver=resolver)
        data = endpoint.refresh_oauth_token(refresh_token)
    except OutboundAddressRefused as exc:
        logger.warning("OAuth token request: not connecting to %s, which %s", exc.host, exc.reason)
        error = Bitrix24TransientError(UNREACHABLE_OAUTH, code="CONNECTION_ERROR")
    except sdk_errors.BitrixRequestError as exc:
        detail = scrub(str(exc.__cause__ or exc), secrets)
        logger.warning("OAuth token request to %s failed: %s", conn.oauth_token_url, detail)
        error = Bitrix24TransientError(UNREACHABLE_OAUTH, code="CONNECTION_ERROR")
    except sdk_errors.BitrixResponse302JSONDecodeError as exc:
        target = scrub(mask_webhook_url(exc.redirect_url or ""), secrets)
        logger.warning("OAuth token request to %s: redirect to %s", conn.oauth_token_url, target)
        error = Bitrix24TransientError(
            "The OAuth server answered with a redirect (not followed): check the OAuth token URL",
            code="UNEXPECTED_ANSWER",
            http_status=302,
        )
    except sdk_errors.BitrixSDKException as exc:
        payload = getattr(exc, "json_response", None)
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if isinstance(payload, dict):
            error = _error_from_payload(payload, http_status=status, method="oauth.token")
            if error.code.upper() == "INVALID_GRANT":
                error.description = error.description or "The refresh token is no longer valid"
        else:
            logger.warning("OAuth token request: HTTP %s without JSON", status)
            error = Bitrix24TransientError(
                "Not a Bitrix24 OAuth server: the address answered, but not like Bitrix24",
                http_status=status,
            )
    RequestLog.objects.create(
        method="oauth.token",
        duration_ms=int((_now() - started) * 1000),
        http_status=200 if error is None else error.http_status,
        error_code=(error.code or "ERROR") if error else "",
        error_description=error.description if error else "",
        auth_mode="oauth",
        call_id=current_call_id(),
        params={"grant_type": "refresh_token", "client_id": conn.oauth_client_id},
    )
    if error is not None:
        raise error
    if not data.get("access_token") or not data.get("refresh_token"):
        raise Bitrix24PermanentError(
            "The OAuth server answered without tokens", code="INVALID_GRANT"
        )
    return data


def apply_token_response(conn: Bitrix24Connection, data: dict[str, Any]) -> None:
    """Copies a token response (refresh answer or install callback) onto the connection."""
    conn.oauth_access_token = str(data["access_token"])
    conn.oauth_refresh_token = str(data.get("refresh_token") or conn.oauth_refresh_token)
    expires_in = int(data.get("expires_in") or 3600)
    conn.oauth_expires_at = timezone.now() + timedelta(seconds=expires_in)
    if data.get("client_endpoint"):
        conn.oauth_client_endpoint = str(data["client_endpoint"])
    if data.get("member_id"):
        conn.oauth_member_id = str(data["member_id"])


# ----------------------------------------------------------------------------------------------
# Helpers


def _timeout(deadline: float | None) -> tuple[float, float]:
    if deadline is None:
        return (CONNECT_TIMEOUT, READ_TIMEOUT)
    remaining = deadline - _now()
    if remaining <= 0.02:
        raise Bitrix24TransientError("The time allowed for this request is over", code="TIMEOUT")
    return (min(CONNECT_TIMEOUT, remaining), min(READ_TIMEOUT, remaining))


def _never_connected(error: BaseException) -> bool:
    """True when the request certainly never reached the portal (refused, DNS, no route)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(
            current,
            (
                urllib3.exceptions.NewConnectionError,
                urllib3.exceptions.ConnectTimeoutError,
                urllib3.exceptions.NameResolutionError,
                ConnectionRefusedError,
            ),
        ):
            return True
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException) and id(reason) not in seen:
            current = reason
            continue
        nested = (
            current.args[0] if current.args and isinstance(current.args[0], BaseException) else None
        )
        current = nested or current.__cause__ or current.__context__
    return False


def _error_from_payload(
    payload: dict[str, Any],
    *,
    http_status: int | None,
    method: str,
    scrub_with: Bitrix24Session | None = None,
) -> Bitrix24Error:
    """Bitrix24's ``{"error", "error_description"}`` as a typed error."""
    code = str(payload.get("error") or "")
    description = str(payload.get("error_description") or "")
    if scrub_with is not None:
        description = scrub(description, scrub_with._secrets())
    upper = code.upper()
    if upper == "WRONG_AUTH_TYPE":
        return Bitrix24AuthTypeDenied(
            description, code=code, http_status=http_status, method=method
        )
    if upper in RATE_LIMIT_CODES or http_status in (429, 503):
        retry_after = None
        if upper == "OPERATION_TIME_LIMIT":
            reset_at = (payload.get("time") or {}).get("operating_reset_at")
            retry_after = max(0.0, float(reset_at) - time.time()) if reset_at else 60.0
        return Bitrix24TransientError(
            description, code=code, http_status=http_status, method=method, retry_after=retry_after
        )
    if upper == "EXPIRED_TOKEN":
        return Bitrix24PermanentError(
            description, code=code, http_status=http_status, method=method
        )
    if (http_status is not None and http_status >= 500) or upper in (
        "INTERNAL_SERVER_ERROR",
        "ERROR_UNEXPECTED_ANSWER",
    ):
        # The portal may have done the work before failing.
        return Bitrix24TransientError(
            description, code=code, http_status=http_status, method=method, ambiguous=True
        )
    return Bitrix24PermanentError(description, code=code, http_status=http_status, method=method)


def _limiter_unavailable(exc: RedisError, method: str) -> Bitrix24TransientError:
    # The portal's budget is shared by every process through Redis: without it, no request is
    # sent (a lookup answers "unavailable", an action retries later).
    return Bitrix24TransientError(
        f"The request rate to the portal cannot be kept without Redis: {exc}",
        code="RATE_LIMITER_UNAVAILABLE",
        method=method,
    )


def _method_blocked(method: str, wait: float) -> Bitrix24TransientError:
    return Bitrix24TransientError(
        f"Bitrix24 blocked {method} for {wait:.0f}s (operation time limit)",
        code="OPERATION_TIME_LIMIT",
        method=method,
        retry_after=wait,
    )


def _is_connection_problem(error: Bitrix24Error) -> bool:
    code = error.code.upper()
    return (
        code in AUTH_CODES
        or code in RATE_LIMIT_CODES
        or code in DOWN_CODES
        or code in {"ERROR_METHOD_NOT_FOUND", "NOT_CONFIGURED", "PORTAL_DELETED", "PORTAL_MOVED"}
        or (error.http_status is not None and error.http_status >= 500)
    )
