"""Admin building blocks shared by the apps' admins."""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar

import qrcode
import qrcode.image.svg
from django.contrib import admin
from django.http import HttpRequest, StreamingHttpResponse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _


def qr_svg(data: str) -> str:
    """`data` as a QR code, an inline SVG for an admin page (a device's setup, a TOTP key)."""
    image = qrcode.make(data, image_factory=qrcode.image.svg.SvgPathImage, box_size=8)
    return image.to_string(encoding="unicode")


def external_link(url: str, label: str) -> str | SafeString:
    """`label` linking to `url` in a new tab (a card in Bitrix24), or just `label` without one."""
    if not url:
        return label
    return format_html('<a href="{}" target="_blank" rel="noopener">{}</a>', url, label)


class CrmCardAdmin(admin.ModelAdmin):
    """A row naming a CRM entity (`crm_entity_type`, `crm_entity_id`) shows it as a link to
    its card in Bitrix24: list `crm_card` among the fields. `card_url` gives the card's URL."""

    card_url: ClassVar[Any] = None

    @admin.display(description=_("CRM card"))
    def crm_card(self, obj: Any) -> str:
        if not obj.crm_entity_type or not obj.crm_entity_id:
            return "-"
        label = f"{obj.crm_entity_type} #{obj.crm_entity_id}"
        url = type(self).card_url(entity=(obj.crm_entity_type, obj.crm_entity_id))
        return external_link(url, label)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Audit and mirrored rows: visible, never added, changed or deleted through the admin.

    They change only through SIMtrix itself (the bridge, the outbox, the directory sync).
    """

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ObjectActionsAdmin(admin.ModelAdmin):
    """A change page with some of the list's actions as buttons for this one object
    (`object_actions`: action name, label). Each button posts the list's action for the object:
    the same permission checks, the same code."""

    change_form_template = "admin/simtrix/change_form_actions.html"
    object_actions: ClassVar[list[tuple[str, Any]]] = []

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> Any:
        actions = self.object_actions if self.has_change_permission(request) else []
        extra = {**(extra_context or {}), "object_actions": actions}
        return super().change_view(request, object_id, form_url, extra)


# --- CSV exports ------------------------------------------------------------------------------


class _Echo:
    def write(self, value: str) -> str:
        return value


def csv_cell(value: Any) -> str:
    """A value as a spreadsheet-safe cell: a cell starting with = + - @ is a formula to
    spreadsheets (CSV injection), so it is quoted; an E.164 number is the one harmless "+..."
    value."""
    text = "" if value is None else str(value)
    risky = text[:1] in ("=", "+", "-", "@") and not re.fullmatch(r"\+\d+", text)
    return "'" + text if risky else text


def csv_response(
    *, name: str, header: list[str], rows: Callable[[], Iterable[list[Any]]]
) -> StreamingHttpResponse:
    """A streamed CSV download `<name>-<local time>.csv`: UTF-8 with a byte-order mark, each
    cell made safe (csv_cell). `header` is taken now, in the request's language; `rows()` is
    called while the response streams (after the view has returned: take the time zone and the
    language it needs before)."""
    writer = csv.writer(_Echo())

    def lines() -> Iterator[str]:
        # Excel takes a CSV without a byte-order mark for the system's code page (cp1250 in
        # Polish): "Łódź" would come out garbled.
        yield "\ufeff"
        yield writer.writerow(header)
        for row in rows():
            yield writer.writerow([csv_cell(value) for value in row])

    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    stamp = timezone.localtime().strftime("%Y%m%d-%H%M")
    response["Content-Disposition"] = f'attachment; filename="{name}-{stamp}.csv"'
    return response
