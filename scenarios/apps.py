from __future__ import annotations

from django.apps import AppConfig


class ScenariosConfig(AppConfig):
    name = "scenarios"
    verbose_name = "Scenarios"

    def ready(self) -> None:
        # Registers the handlers of the scenario action types with the outbox.
        from crm.signals import directory_synced
        from scenarios import handlers  # noqa: F401
        from scenarios.services import routing_on_directory_synced

        # Rules naming what Bitrix24 no longer has are marked broken after every sync.
        directory_synced.connect(routing_on_directory_synced, dispatch_uid="scenarios-routing")
