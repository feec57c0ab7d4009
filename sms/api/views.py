"""POST /api/bridge/v1/sms/: the SMS events of the phone (one, or a batch)."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext
from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from calls.api.serializers import BatchResponseSerializer
from calls.api.views import BridgeView, Conflict, _error, _errors, batch_item_errors
from sms.api.serializers import SmsBatchSerializer, SmsEventSerializer, SmsResourceSerializer
from sms.services import SmsEventConflict, SmsNotFound, sms_event_receive, sms_resource


class SmsEventsView(BridgeView):
    @extend_schema(
        operation_id="sms_events_create",
        summary="Report SMS events: sent, delivered, failed (of a send_sms command), received",
        description=(
            'One event, or `{"events": [...]}` with 1-100. Idempotent by `event_id` like call '
            "events; an event that arrives after a later status (delivered before sent) is "
            "recorded and changes nothing."
        ),
        request=SmsEventSerializer,
        responses={
            200: PolymorphicProxySerializer(
                component_name="SmsOrBatchResult",
                serializers=[SmsResourceSerializer, BatchResponseSerializer],
                resource_type_field_name=None,
            ),
            **_errors(
                400,
                401,
                413,
                415,
                429,
                _404=_error("An sms_id this device was never given."),
                _409=_error("event_id reused with another body."),
            ),
        },
    )
    def post(self, request: Request) -> Response:
        body = request.data
        if isinstance(body, dict) and "events" in body:
            return self._batch(body)
        if not isinstance(body, dict):
            raise ValidationError(
                {"detail": gettext('Expected an event object or {"events": [...]}.')}
            )
        serializer = SmsEventSerializer(data=body)
        serializer.is_valid(raise_exception=True)
        try:
            receipt = sms_event_receive(device=self.device, facts=serializer.facts())
        except SmsEventConflict as exc:
            raise Conflict(str(exc)) from exc
        except SmsNotFound as exc:
            raise NotFound(gettext("This device was never given that sms_id.")) from exc
        return Response(sms_resource(receipt.sms), status=status.HTTP_200_OK)

    def _batch(self, body: dict[str, Any]) -> Response:
        batch = SmsBatchSerializer(data=body)
        batch.is_valid(raise_exception=True)
        results = []
        for item in batch.validated_data["events"]:
            event_id = item.get("event_id") if isinstance(item, dict) else None
            event_id = event_id if isinstance(event_id, str) else None
            serializer, errors = batch_item_errors(item, SmsEventSerializer)
            if serializer is None:
                results.append({"event_id": event_id, "status": "invalid", "errors": errors})
                continue
            try:
                receipt = sms_event_receive(device=self.device, facts=serializer.facts())
            except SmsEventConflict as exc:
                errors = {"event_id": [str(exc)]}
            except SmsNotFound:
                errors = {"sms_id": [gettext("This device was never given that sms_id.")]}
            else:
                results.append({"event_id": event_id, "status": receipt.status})
                continue
            results.append({"event_id": event_id, "status": "invalid", "errors": errors})
        return Response({"results": results}, status=status.HTTP_200_OK)
