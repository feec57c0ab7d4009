from __future__ import annotations

from typing import Any

from scenarios.schedule import dispatcher_heartbeat
from tenants.management.jsoncommand import JsonCommand


class Command(JsonCommand):
    help = (
        "Exits 0 when the outbox dispatcher finished a pass within "
        "SIMTRIX_DISPATCHER_STALE_SECONDS (beat sent it and a worker ran it), 1 otherwise: "
        "beat's health check in docker-compose.yml. One Redis read, no database query."
    )
    # A health check every 30 s: no system checks, just the one read.
    requires_system_checks: list[str] = []

    def run(self, **options: Any) -> dict[str, Any]:
        heartbeat = dispatcher_heartbeat()
        if heartbeat["stale"]:
            age = heartbeat["age_seconds"]
            raise self.fail(
                "the dispatcher has never finished a pass"
                if age is None
                else f"the dispatcher's last pass was {age:.0f}s ago"
            )
        return heartbeat
