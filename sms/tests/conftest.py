"""The bridge fixtures of calls' tests (a device of alpha, a client speaking for it)."""

from __future__ import annotations

from calls.tests.conftest import (  # noqa: F401 — fixtures are found by name
    _server_clock_pinned,
    _token_failures_forgotten,
    bridge,
    device,
    device_and_token,
    eager_celery,
)
