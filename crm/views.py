"""Bitrix24 calling SIMtrix: the local application's install callback (its first tokens), and
the events handler (crm.events)."""

from __future__ import annotations

import logging

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.translation import gettext
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from crm.errors import Bitrix24Error
from crm.events import EventInvalid, EventRefused, event_receive
from crm.messageservice import SEND_EVENT
from crm.services import connection_install_oauth

logger = logging.getLogger(__name__)

# REFERENCE 1.2: auth[access_token], auth[refresh_token], auth[domain], auth[member_id], ...
AUTH_FIELDS = (
    "access_token",
    "refresh_token",
    "domain",
    "member_id",
    "application_token",
    "client_endpoint",
    "server_endpoint",
    "expires_in",
    "scope",
    "status",
)
# The older placement-style install (the app's page opened in Bitrix24's frame) sends these
# instead, in the POST body too: Bitrix24 documents the tokens there only ("Simplified Method
# for Obtaining OAuth 2.0 Tokens": "the application receives the following array of POST
# data"), and its frame's query string carries DOMAIN, PROTOCOL, LANG and APP_SID, no token.
# The query string is never read: tokens there would be in every access log on the way.
LEGACY_FIELDS = {
    "AUTH_ID": "access_token",
    "REFRESH_ID": "refresh_token",
    "AUTH_EXPIRES": "expires_in",
    "DOMAIN": "domain",
    "member_id": "member_id",
    "APP_SID": "application_token",
}


@csrf_exempt
@require_http_methods(["POST"])
def install(request: HttpRequest) -> HttpResponse:
    data = request.POST
    auth = {name: data.get(f"auth[{name}]", "") for name in AUTH_FIELDS}
    if not auth["access_token"]:
        for legacy, name in LEGACY_FIELDS.items():
            auth[name] = auth[name] or data.get(legacy, "")
    try:
        connection = connection_install_oauth(auth=auth)
    except Bitrix24Error as exc:
        logger.warning("Bitrix24 install refused: %s", exc)
        status = 400 if not exc.transient else 502
        # Shown to the person installing the application (their browser's language).
        return HttpResponse(
            gettext("SIMtrix could not install: %(error)s") % {"error": exc.display()},
            status=status,
            content_type="text/plain; charset=utf-8",
        )
    return HttpResponse(
        gettext("SIMtrix is connected to %(portal)s.") % {"portal": connection.portal_domain},
        content_type="text/plain; charset=utf-8",
    )


@csrf_exempt
@require_http_methods(["POST"])
def events(request: HttpRequest) -> HttpResponse:
    """An event as Bitrix24 posts it (form-encoded); verified, stored, answered at once."""
    try:
        event = event_receive(form=((key, request.POST.get(key, "")) for key in request.POST))
    except EventRefused as exc:
        return HttpResponse(str(exc), status=401, content_type="text/plain; charset=utf-8")
    except EventInvalid as exc:
        return HttpResponse(str(exc), status=400, content_type="text/plain; charset=utf-8")
    return JsonResponse({"accepted": event.event})


@csrf_exempt
@require_http_methods(["POST"])
def sms(request: HttpRequest) -> HttpResponse:
    """A message sent through SIMtrix's SMS provider (crm.messageservice), as Bitrix24 posts it
    to the handler: verified like an event, stored, answered at once, sent by a phone later."""
    try:
        event = event_receive(
            form=((key, request.POST.get(key, "")) for key in request.POST), as_event=SEND_EVENT
        )
    except EventRefused as exc:
        return HttpResponse(str(exc), status=401, content_type="text/plain; charset=utf-8")
    except EventInvalid as exc:
        return HttpResponse(str(exc), status=400, content_type="text/plain; charset=utf-8")
    return JsonResponse({"accepted": event.event})
