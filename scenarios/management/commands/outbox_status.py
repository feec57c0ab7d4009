from __future__ import annotations

from typing import Any

from scenarios.schedule import outbox_status_all
from tenants.management.jsoncommand import JsonCommand


class Command(JsonCommand):
    help = (
        "Prints, per tenant, the due, late and failed runs of the outbox and the oldest due age, "
        "and when the dispatcher last finished a pass."
    )

    def run(self, **options: Any) -> dict[str, Any]:
        return outbox_status_all()
