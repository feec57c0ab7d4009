from __future__ import annotations

from django.apps import AppConfig


class ScenariosConfig(AppConfig):
    name = "scenarios"
    verbose_name = "Scenarios"

    def ready(self) -> None:
        # Registers the handlers of the scenario action types with the outbox.
        from scenarios import handlers  # noqa: F401
