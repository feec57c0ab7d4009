"""Typed failures of the Bitrix24 boundary.

Every error that leaves ``crm`` is a ``Bitrix24Error``: callers decide what to do from
``transient`` (retry later) and never from HTTP details. ``description`` carries Bitrix24's own
``error_description`` so an operator reads the portal's words, not ours.
"""

from __future__ import annotations

from django.utils.translation import gettext, gettext_lazy

# The portal (or the network in front of it) does not answer: a while of it is an outage.
DOWN_CODES = frozenset(
    {
        "CONNECTION_ERROR",
        "TIMEOUT",
        "BAD_GATEWAY",
        "SERVICE_UNAVAILABLE",
        "GATEWAY_TIMEOUT",
        "SERVER_ERROR",
        "INTERNAL_SERVER_ERROR",
    }
)
# Bitrix24 error codes that mean "the request was not executed, try again later".
RATE_LIMIT_CODES = frozenset({"QUERY_LIMIT_EXCEEDED", "OPERATION_TIME_LIMIT", "OVERLOAD_LIMIT"})
# Codes about who is calling: the tenant must fix its connection, retrying cannot help.
AUTH_CODES = frozenset(
    {
        "INVALID_CREDENTIALS",
        "NO_AUTH_FOUND",
        "INVALID_TOKEN",
        "EXPIRED_TOKEN",
        "INSUFFICIENT_SCOPE",
        "INVALID_GRANT",
        "INVALID_CLIENT",
        "WRONG_AUTH_TYPE",
        "ACCESS_DENIED",
        "USER_ACCESS_ERROR",
        "PAYMENT_REQUIRED",
        "AUTHORIZATION_ERROR",
    }
)

# Every code this client tells apart (Bitrix24's documented ones and its own, for failures
# without an answer): the metrics' outcome label is one of these, or `error` for any code a
# portal makes up, so a portal cannot grow the label set.
KNOWN_CODES = (
    RATE_LIMIT_CODES
    | AUTH_CODES
    | frozenset(
        {
            "PORTAL_DELETED",
            "PORTAL_MOVED",
            "ERROR_METHOD_NOT_FOUND",
            "NOT_FOUND",
            "ERROR_NOT_FOUND",
            "INVALID_ARG_VALUE",
            "ERROR_ARGUMENT",
            "ERROR_CORE",
            "INTERNAL_SERVER_ERROR",
            "ERROR_UNEXPECTED_ANSWER",
            "UNEXPECTED_ANSWER",
            "BAD_GATEWAY",
            "SERVICE_UNAVAILABLE",
            "GATEWAY_TIMEOUT",
            "SERVER_ERROR",
            "CONNECTION_ERROR",
            "TIMEOUT",
            "NOT_CONFIGURED",
            "RATE_LIMITED",
            "INTENT_EXPIRED",
            "INTENT_IN_PROGRESS",
        }
    )
)

# What an operator should do about the errors they will meet most (shown in the admin, in the
# language active when the error is displayed).
HINTS = {
    "INVALID_CREDENTIALS": gettext_lazy("check the webhook URL"),
    "NO_AUTH_FOUND": gettext_lazy("check the webhook URL or reinstall the application"),
    "INSUFFICIENT_SCOPE": gettext_lazy("tick the missing scope on the webhook or application"),
    "INVALID_GRANT": gettext_lazy("reinstall the local application in Bitrix24"),
    "INVALID_CLIENT": gettext_lazy("check the application's client id and secret"),
    "WRONG_AUTH_TYPE": gettext_lazy(
        "telephony needs the local application; calls are logged as activities"
    ),
    "ERROR_METHOD_NOT_FOUND": gettext_lazy(
        "the portal does not offer this method (module not installed?)"
    ),
    "QUERY_LIMIT_EXCEEDED": gettext_lazy(
        "the portal's request rate limit was hit; SIMtrix slows down"
    ),
    "OPERATION_TIME_LIMIT": gettext_lazy(
        "the portal blocked this method for a while; SIMtrix waits"
    ),
    "CONNECTION_ERROR": gettext_lazy("the portal could not be reached"),
    "TIMEOUT": gettext_lazy("the portal did not answer in time"),
}


class Bitrix24Error(Exception):
    """A failed Bitrix24 request, after the retries the adapter was allowed to make."""

    transient: bool = False

    def __init__(
        self,
        description: str,
        *,
        code: str = "",
        http_status: int | None = None,
        method: str = "",
        retry_after: float | None = None,
        ambiguous: bool = False,
    ) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.http_status = http_status
        self.method = method
        # Seconds after which a retry may succeed (rate limits), when the portal said so.
        self.retry_after = retry_after
        # The request may have been executed although no answer arrived (timeout, reset).
        self.ambiguous = ambiguous

    def __str__(self) -> str:
        return self.display()

    @property
    def outcome(self) -> str:
        """The metrics' label for this failure: its code in lower case, if a known one."""
        code = (self.code or "").upper()
        return code.lower() if code in KNOWN_CODES else "error"

    def display(self) -> str:
        """One line for people: Bitrix24's words, its code, and what to do."""
        text = self.description or gettext("Bitrix24 request failed")
        if self.code:
            text = f"{text} ({self.code})"
        hint = HINTS.get(self.code.upper()) if self.code else None
        return f"{text}: {hint}" if hint else text


class Bitrix24TransientError(Bitrix24Error):
    """Timeouts, connection errors, 5xx and rate limits: the same request may succeed later."""

    transient = True


class Bitrix24PermanentError(Bitrix24Error):
    """Validation, auth, access and unknown-method errors: retrying the same request won't help."""

    transient = False


class Bitrix24AuthTypeDenied(Bitrix24PermanentError):
    """403 WRONG_AUTH_TYPE: this method refuses the tenant's auth mode (telephony via webhook)."""


class Bitrix24NotConfigured(Bitrix24PermanentError):
    """The tenant has no usable Bitrix24 connection (no webhook, or the app is not installed)."""

    def __init__(self, description: str | None = None) -> None:
        if description is None:
            description = gettext("Bitrix24 is not connected for this tenant")
        super().__init__(description, code="NOT_CONFIGURED")


class Bitrix24IntentInProgress(Bitrix24TransientError):
    """Another worker is sending the same non-idempotent request right now; try again later."""
