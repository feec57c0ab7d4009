"""External lines (telephony.externalLine.*): each phone's number as a line users can pick.

The caller says which lines should exist (number -> name); this makes the portal agree, touching
only the lines SIMtrix registered itself (`Bitrix24Connection.lines`), never another
integration's. A sync that has nothing to change makes no request.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.utils import timezone

from crm import client as b24
from crm.client import Bitrix24Client
from crm.errors import Bitrix24Error, Bitrix24NotConfigured, Bitrix24PermanentError
from crm.models import Bitrix24Connection


@dataclass
class LinesSynced:
    added: list[str] = field(default_factory=list)
    renamed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: bool = False


def lines_sync(*, wanted: dict[str, str], force: bool = False) -> LinesSynced:
    """Registers, renames and removes SIMtrix's external lines so the portal has `wanted`."""
    conn = Bitrix24Connection.objects.filter(singleton=1).first()
    if conn is None or not conn.portal_domain:
        raise Bitrix24NotConfigured()
    ours: dict[str, str] = dict(conn.lines or {})
    if not force and ours == wanted and conn.lines_synced_at and not conn.lines_sync_error:
        return LinesSynced(unchanged=True)
    result = LinesSynced()
    client = Bitrix24Client()
    try:
        existing = {
            str(row.get("NUMBER") or ""): str(row.get("NAME") or "")
            for row in client.run(b24.externalline_get())
        }
        for number in [n for n in ours if n not in wanted]:
            if number in existing:
                client.run(b24.externalline_delete(number))
            result.removed.append(number)
            ours.pop(number, None)
        for number, name in wanted.items():
            if number not in existing:
                try:
                    client.run(b24.externalline_add(number, name))
                except Bitrix24PermanentError as exc:
                    if "already exists" not in exc.display().lower():
                        raise
                    client.run(b24.externalline_update(number, name))
                result.added.append(number)
            elif existing[number] != name:
                client.run(b24.externalline_update(number, name))
                result.renamed.append(number)
            ours[number] = name
    except Bitrix24Error as exc:
        Bitrix24Connection.objects.filter(pk=conn.pk).update(
            lines=ours, lines_sync_error=exc.display()[:1000]
        )
        raise
    Bitrix24Connection.objects.filter(pk=conn.pk).update(
        lines=ours, lines_synced_at=timezone.now(), lines_sync_error=""
    )
    return result
