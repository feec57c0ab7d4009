"""Bridge API v1 (docs/bridge-api.md): thin views over calls.services."""

from __future__ import annotations

import re
from typing import Any, TypeVar

from django.core.files.uploadedfile import UploadedFile
from django.utils import timezone
from django.utils.translation import gettext, gettext_lazy
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
)
from rest_framework import serializers, status
from rest_framework.exceptions import APIException, NotFound, UnsupportedMediaType, ValidationError
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from calls.api.auth import (
    BridgeClient,
    DeviceRateThrottle,
    DeviceTokenAuthentication,
    IsBridgeDevice,
)
from calls.api.parsers import (
    BoundedJSONParser,
    PayloadTooLarge,
    RawAudioParser,
    declared_length,
    recordings_too_large,
)
from calls.api.serializers import (
    CALL_ID_PATTERN,
    BatchResponseSerializer,
    CallResourceSerializer,
    EventBatchSerializer,
    EventSerializer,
    HeartbeatResponseSerializer,
    HeartbeatSerializer,
    LookupRequestSerializer,
    LookupResponseSerializer,
    NoteResponseSerializer,
    NoteSerializer,
    PingResponseSerializer,
    RecordingResponseSerializer,
    RecordingUploadSerializer,
)
from calls.intake import EventConflict, call_event_receive, call_route_preview
from calls.models import Call, Device
from calls.recordings import (
    NotAudio,
    RecordingTooLarge,
    call_recording_store,
    recording_limit_bytes,
)
from calls.selectors import call_for_device, call_resource, caller_lookup_with_facts
from calls.services import call_note_add, device_mark_seen
from common.phones import InvalidPhoneNumber, phone_to_e164
from tenants.context import tenant_country

_CALL_ID = re.compile(CALL_ID_PATTERN)
CALL_ID_PARAMETER = OpenApiParameter(
    "call_id",
    str,
    OpenApiParameter.PATH,
    description="The bridge's id of the call (1-64 of [A-Za-z0-9._:-]); any other path is 404.",
    pattern=CALL_ID_PATTERN,
)


class Conflict(APIException):
    status_code = 409
    default_detail = gettext_lazy("This event_id was already used for a different event.")
    default_code = "conflict"


def _error(description: str) -> OpenApiResponse:
    return OpenApiResponse(description=description)


ERRORS: dict[int, OpenApiResponse] = {
    400: _error('Invalid input: `{"field": ["message"]}` or `{"detail": "..."}`. Nothing changed.'),
    401: _error("Missing, malformed, revoked, or another tenant's token."),
    413: _error("Body larger than 512 KB (uploads: larger than the tenant's limit)."),
    415: _error("Unsupported Content-Type (uploads: the content is not audio)."),
    429: _error(
        "Too many requests from this device, or too many wrong device tokens from this "
        "address; retry after `Retry-After` seconds."
    ),
}


def _errors(*codes: int, **extra: OpenApiResponse) -> dict[int, OpenApiResponse]:
    return {code: ERRORS[code] for code in codes} | {int(k[1:]): v for k, v in extra.items()}


class BridgeView(APIView):
    authentication_classes = [DeviceTokenAuthentication]
    permission_classes = [IsBridgeDevice]
    throttle_classes = [DeviceRateThrottle]
    parser_classes = [BoundedJSONParser]

    @property
    def device(self) -> Device:
        client = self.request.user
        assert isinstance(client, BridgeClient)
        return client.device

    def device_call(self, call_id: str) -> Call:
        # A path that no call_id can be (NUL, spaces, 65 characters) is no call of this device,
        # and never reaches the database (PostgreSQL refuses NUL in a query: a 500 once).
        if not _CALL_ID.fullmatch(call_id):
            raise NotFound(gettext("This device has no call with that call_id."))
        call = call_for_device(device=self.device, call_id=call_id)
        if call is None:
            raise NotFound(gettext("This device has no call with that call_id."))
        return call


_Serializer = TypeVar("_Serializer", bound=serializers.Serializer)


def batch_item_errors(
    item: Any, serializer_class: type[_Serializer]
) -> tuple[_Serializer | None, dict[str, Any]]:
    """One event of a batch validated on its own: its serializer, or its errors (the batch's
    `invalid` result). Call and SMS events alike."""
    if not isinstance(item, dict):
        return None, {"non_field_errors": [gettext("Expected an event object.")]}
    serializer = serializer_class(data=item)
    if not serializer.is_valid():
        return None, serializer.errors
    return serializer, {}


class EventsView(BridgeView):
    @extend_schema(
        operation_id="events_create",
        summary="Report call events (one, or a batch replayed from the offline queue)",
        description=(
            'One event object, or `{"events": [...]}` with 1-100 events. Idempotent by '
            "`event_id`: a resend answers like the first time; the same `event_id` with another "
            "body is `409` (in a batch: that event is `invalid`). Events of a call may come in "
            "any order and any number of times; the call converges to the same final state. "
            "A lone `call.ended` carrying `direction` and `phone_number` is a whole call. "
            "For `call.started` the answer carries the CRM lookup (`crm`) and the routing "
            "(`route`) within the tenant's lookup budget."
        ),
        request=PolymorphicProxySerializer(
            component_name="EventOrBatch",
            serializers=[EventSerializer, EventBatchSerializer],
            resource_type_field_name=None,
        ),
        responses={
            200: PolymorphicProxySerializer(
                component_name="CallOrBatchResult",
                serializers=[CallResourceSerializer, BatchResponseSerializer],
                resource_type_field_name=None,
            ),
            201: CallResourceSerializer,
            **_errors(400, 401, 413, 415, 429, _409=_error("event_id reused with another body.")),
        },
        examples=[
            OpenApiExample(
                "call.started",
                request_only=True,
                value={
                    "event_id": "6f1c7c3e-8d0c-4a43-9a57-1d9f3f2f0a11",
                    "type": "call.started",
                    "call_id": "c-123",
                    "occurred_at": "2026-11-21T14:32:05+01:00",
                    "direction": "incoming",
                    "phone_number": "+48 600 111 222",
                },
            )
        ],
    )
    def post(self, request: Request) -> Response:
        body = request.data
        if isinstance(body, dict) and "events" in body:
            return self._batch(body)
        if not isinstance(body, dict):
            raise ValidationError(
                {"detail": gettext('Expected an event object or {"events": [...]}.')}
            )
        serializer = EventSerializer(data=body)
        serializer.is_valid(raise_exception=True)
        try:
            receipt = call_event_receive(
                device=self.device,
                event=serializer.facts(),
                call_id=serializer.validated_data["call_id"],
                raw=body,
                lookup=True,
            )
        except EventConflict as exc:
            raise Conflict(str(exc)) from exc
        return Response(receipt.body, status=receipt.http_status)

    def _batch(self, body: dict[str, Any]) -> Response:
        batch = EventBatchSerializer(data=body)
        batch.is_valid(raise_exception=True)
        results = []
        for item in batch.validated_data["events"]:
            # Echoed as sent when it is a string (the schema's type), else null.
            event_id = item.get("event_id") if isinstance(item, dict) else None
            event_id = event_id if isinstance(event_id, str) else None
            serializer, errors = batch_item_errors(item, EventSerializer)
            if serializer is None:
                results.append({"event_id": event_id, "status": "invalid", "errors": errors})
                continue
            try:
                receipt = call_event_receive(
                    device=self.device,
                    event=serializer.facts(),
                    call_id=serializer.validated_data["call_id"],
                    raw=item,
                )
            except EventConflict as exc:
                results.append(
                    {"event_id": event_id, "status": "invalid", "errors": {"event_id": [str(exc)]}}
                )
                continue
            results.append({"event_id": event_id, "status": receipt.status})
        return Response({"results": results}, status=status.HTTP_200_OK)


class LookupView(BridgeView):
    @extend_schema(
        operation_id="lookup",
        summary="Who is this number in the CRM, and who should take the call",
        request=LookupRequestSerializer,
        responses={200: LookupResponseSerializer, **_errors(400, 401, 413, 415, 429)},
    )
    def post(self, request: Request) -> Response:
        serializer = LookupRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            number = phone_to_e164(
                serializer.validated_data["phone_number"], country=tenant_country()
            )
        except InvalidPhoneNumber as exc:
            raise ValidationError({"phone_number": [str(exc)]}) from exc
        crm, facts = caller_lookup_with_facts(phone_number=number, budget_s=None)
        route = call_route_preview(device=self.device, facts=facts, crm=crm)
        return Response({"phone_number": number, "crm": crm, "route": route})


class CallDetailView(BridgeView):
    @extend_schema(
        operation_id="call_retrieve",
        parameters=[CALL_ID_PARAMETER],
        summary="A call of this device, with what SIMtrix did for it in Bitrix24",
        responses={
            200: CallResourceSerializer,
            **_errors(401, 429, _404=_error("No call with that call_id on this device.")),
        },
    )
    def get(self, request: Request, call_id: str) -> Response:
        return Response(call_resource(call=self.device_call(call_id)))


class RecordingView(BridgeView):
    parser_classes = [MultiPartParser, RawAudioParser]

    def upload_limit_bytes(self) -> int:
        return recording_limit_bytes()

    @extend_schema(
        operation_id="call_recording_upload",
        parameters=[CALL_ID_PARAMETER],
        summary="Upload (or replace) the call's recording",
        description=(
            "`multipart/form-data` with the field `file`, or the raw audio as the body with an "
            "`audio/*` Content-Type. m4a/AAC, AMR, 3GP, OGG/Opus, MP3 and WAV are recognised by "
            "content; what is not MP3/WAV is converted to MP3 for Bitrix24. The recording is "
            "attached to the Bitrix24 call once the call is finished there. Re-uploading "
            "replaces it. Size limit: the tenant's setting (default 50 MB)."
        ),
        request={
            "multipart/form-data": RecordingUploadSerializer,
            "audio/*": {"type": "string", "format": "binary"},
        },
        responses={
            201: RecordingResponseSerializer,
            **_errors(
                400, 401, 413, 415, 429, _404=_error("No call with that call_id on this device.")
            ),
        },
    )
    def put(self, request: Request, call_id: str) -> Response:
        call = self.device_call(call_id)
        if request.content_type.startswith("multipart/"):
            # Refuse before Django spools a huge multipart body to disk.
            declared = declared_length(request.META)
            if declared > recording_limit_bytes() + 64 * 1024:
                raise PayloadTooLarge(recordings_too_large(recording_limit_bytes()))
        upload = request.FILES.get("file")
        if upload is None and "file" in request.data:
            # A text field named `file` (a form that sent the file's name, not its content).
            raise ValidationError(
                {"file": [gettext("Send the recording as a file part, not as text.")]}
            )
        if not isinstance(upload, UploadedFile):
            raise ValidationError({"file": [gettext("No file was submitted.")]})
        if not upload.size or upload.file is None:
            raise ValidationError({"file": [gettext("The submitted file is empty.")]})
        try:
            recording = call_recording_store(
                call=call,
                upload=upload.file,
                size=upload.size,
                name=upload.name or "",
                content_type=upload.content_type or request.content_type,
            )
        except RecordingTooLarge as exc:
            raise PayloadTooLarge(str(exc)) from exc
        except NotAudio as exc:
            raise UnsupportedMediaType(request.content_type, detail=str(exc)) from exc
        return Response(
            {
                "call_id": call.call_id,
                "version": recording.version,
                "format": recording.original_format,
                "size": recording.size,
                "uploaded_at": recording.uploaded_at.isoformat(),
            },
            status=status.HTTP_201_CREATED,
        )


class NotesView(BridgeView):
    @extend_schema(
        operation_id="call_note_create",
        parameters=[CALL_ID_PARAMETER],
        summary="Add a note to a call (carried to the CRM by the post-call sync)",
        request=NoteSerializer,
        responses={
            201: NoteResponseSerializer,
            **_errors(400, 401, 413, 415, 429, _404=_error("No call with that call_id.")),
        },
    )
    def post(self, request: Request, call_id: str) -> Response:
        call = self.device_call(call_id)
        serializer = NoteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        note = call_note_add(call=call, text=serializer.validated_data["text"])
        return Response(
            {"id": note.pk, "text": note.text, "created_at": note.created_at.isoformat()},
            status=status.HTTP_201_CREATED,
        )


class HeartbeatView(BridgeView):
    @extend_schema(
        operation_id="heartbeat",
        summary="Sign of life from the device (marks it seen, records the app version)",
        request=HeartbeatSerializer,
        responses={200: HeartbeatResponseSerializer, **_errors(400, 401, 413, 415, 429)},
    )
    def post(self, request: Request) -> Response:
        serializer = HeartbeatSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        now = timezone.now()
        device_mark_seen(
            device_id=self.device.pk,
            app_version=serializer.validated_data["app_version"],
            seen_at=now,
        )
        return Response({"server_time": now.isoformat()})


class PingView(BridgeView):
    @extend_schema(
        operation_id="ping",
        summary="Check the server URL and the token (the app's 'test connection')",
        responses={200: PingResponseSerializer, **_errors(401, 429)},
    )
    def get(self, request: Request) -> Response:
        return Response({"device": self.device.name})
