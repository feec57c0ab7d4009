from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class CommandsConfig(AppConfig):
    name = "commands"
    verbose_name = _("Click-to-call and phone commands")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The handlers of Bitrix24's events and the dispatcher's visit hook register themselves.
        from commands import dialing, lines  # noqa: F401, PLC0415 — models load after the registry
