"""Bitrix24 failures in two kinds: transient (retry with backoff) and permanent (don't)."""

from __future__ import annotations


class Bitrix24Error(Exception):
    transient = False

    def __init__(self, description: str, *, code: str = "", http_status: int | None = None):
        super().__init__(f"{description} ({code})" if code else description)
        self.code = code
        self.description = description
        self.http_status = http_status


class Bitrix24TransientError(Bitrix24Error):
    transient = True


class Bitrix24PermanentError(Bitrix24Error):
    transient = False


class Bitrix24AuthTypeDenied(Bitrix24PermanentError):
    """403 WRONG_AUTH_TYPE: the portal refuses this method for webhook auth (REFERENCE 4.0)."""


class Bitrix24NotConfigured(Bitrix24PermanentError):
    """The tenant has no usable Bitrix24 connection."""
