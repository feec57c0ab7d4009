from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class CallsConfig(AppConfig):
    name = "calls"
    verbose_name = _("Calls")

    def ready(self) -> None:
        # Registers the outbox handlers of the call lifecycle and the OpenAPI auth scheme.
        from calls import handlers  # noqa: F401, PLC0415 — app loading: imports models
        from calls.api import schema  # noqa: F401, PLC0415 — app loading: imports models
