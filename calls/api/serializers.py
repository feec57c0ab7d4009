"""The bridge contract's request and response bodies (also what the OpenAPI schema shows)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext, gettext_lazy, ngettext
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.utils.serializer_helpers import BindingDict

from calls.lifecycle import ANSWERED, ENDED, EVENT_TYPES, STARTED, EventFacts
from calls.models import Call

CALL_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"
MAX_BATCH = 100
MAX_DURATION_SECONDS = 7 * 24 * 3600
# The window an event's occurred_at must fall in, around the server's clock. An offline phone
# replays its queue days later, not months; 1970 or 9999 is a broken clock, not a call, and would
# go to Bitrix24 as such (a call "ended" in 9999 is never logged). A phone's clock may run a
# little ahead (no network time, set by hand), not by more than an hour.
EVENT_MAX_AGE = timedelta(days=30)
EVENT_MAX_AHEAD = timedelta(hours=1)


def _server_now() -> datetime:
    """The clock the window is measured on (the tests pin it: their dates are fixed)."""
    return timezone.now()


def _spelled(span: timedelta) -> str:
    """In English, for the OpenAPI schema (built at import, before any language is active)."""
    if span % timedelta(days=1) == timedelta(0):
        days = span // timedelta(days=1)
        return f"{days} day" + ("s" if days != 1 else "")
    hours = span // timedelta(hours=1)
    return f"{hours} hour" + ("s" if hours != 1 else "")


def _spelled_translated(span: timedelta) -> str:
    """As _spelled, in the request's language (the error messages the bridge gets)."""
    if span % timedelta(days=1) == timedelta(0):
        days = span // timedelta(days=1)
        return ngettext("%(count)d day", "%(count)d days", days) % {"count": days}
    hours = span // timedelta(hours=1)
    return ngettext("%(count)d hour", "%(count)d hours", hours) % {"count": hours}


class StrictCharField(serializers.CharField):
    """A string field that takes only JSON strings: DRF would read 48600111222 or 1.4 as text,
    and a phone number sent as a JSON number has already lost its + and leading zeros."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictRegexField(StrictCharField, serializers.RegexField):
    pass


class UUIDStringField(serializers.UUIDField):
    """A UUID as a string only: DRF's UUIDField also reads ints and booleans (True is UUID 1)."""

    def to_internal_value(self, data: Any) -> uuid.UUID:
        if not isinstance(data, str):
            self.fail("invalid", value=data)
        return super().to_internal_value(data)


@extend_schema_field(OpenApiTypes.DATETIME)
class OffsetDateTimeField(serializers.Field):
    """ISO 8601 with a UTC offset; a local time without one is ambiguous and refused.

    With `max_age`/`max_ahead`, only moments within that much of the server's clock.
    """

    default_error_messages = {
        "invalid": gettext_lazy("Expected an ISO 8601 timestamp, e.g. 2026-11-21T14:32:05+01:00."),
        "no_offset": gettext_lazy(
            "The timestamp has no UTC offset; send e.g. 2026-11-21T14:32:05+01:00."
        ),
        "out_of_range": gettext_lazy("The timestamp is out of range."),
        # {age}, {ahead}, {now}: DRF's placeholders (Field.fail formats with str.format).
        "too_old": gettext_lazy(
            "The timestamp is more than {age} before the server's time ({now})."
        ),
        "too_new": gettext_lazy(
            "The timestamp is more than {ahead} after the server's time ({now})."
        ),
    }

    def __init__(
        self,
        *,
        max_age: timedelta | None = None,
        max_ahead: timedelta | None = None,
        **kwargs: Any,
    ) -> None:
        self.max_age, self.max_ahead = max_age, max_ahead
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> datetime:
        if not isinstance(data, str):
            self.fail("invalid")
        try:
            value = parse_datetime(data.strip())
        except ValueError:
            value = None
        if value is None:
            self.fail("invalid")
        if value.tzinfo is None or value.utcoffset() is None:
            self.fail("no_offset")
        self._check_window(value)
        return value

    def _check_window(self, value: datetime) -> None:
        try:
            moment = value.astimezone(UTC)
        except OverflowError:
            # 0001-01-01T00:00+01:00 is before datetime.min in UTC, 9999-12-31T23:59-01:00 after.
            self.fail("out_of_range")
        now = _server_now()
        shown = now.replace(microsecond=0).isoformat()
        if self.max_age is not None and moment < now - self.max_age:
            self.fail("too_old", age=_spelled_translated(self.max_age), now=shown)
        if self.max_ahead is not None and moment > now + self.max_ahead:
            self.fail("too_new", ahead=_spelled_translated(self.max_ahead), now=shown)

    def to_representation(self, value: datetime) -> str:
        return value.isoformat()


class EventSerializer(serializers.Serializer):
    _shared_fields: ClassVar[BindingDict]  # set by `fields` when first used

    event_id = UUIDStringField(
        help_text="Idempotency key generated by the bridge per event: a UUID string."
    )
    type = serializers.ChoiceField(choices=EVENT_TYPES, help_text="Lifecycle step.")
    call_id = StrictRegexField(
        CALL_ID_PATTERN,
        max_length=64,
        help_text="The bridge's id of the physical call, unique per device: "
        "1-64 of [A-Za-z0-9._:-].",
        error_messages={
            "invalid": gettext_lazy("call_id must be 1-64 characters of A-Z a-z 0-9 . _ : -")
        },
    )
    occurred_at = OffsetDateTimeField(
        max_age=EVENT_MAX_AGE,
        max_ahead=EVENT_MAX_AHEAD,
        help_text="When it happened on the phone (with offset); at most "
        f"{_spelled(EVENT_MAX_AGE)} before and {_spelled(EVENT_MAX_AHEAD)} after the server's "
        "time.",
    )
    direction = serializers.ChoiceField(
        choices=Call.Direction.values,
        required=False,
        help_text="Required on call.started; optional later.",
    )
    phone_number = StrictCharField(
        max_length=32,
        required=False,
        trim_whitespace=True,
        help_text="The other party as the phone shows it (any format; 'Private number' for a "
        "hidden caller). Required on call.started.",
    )
    outcome = serializers.ChoiceField(
        choices=Call.Outcome.values, required=False, help_text="Required on call.ended."
    )
    duration_seconds = serializers.IntegerField(
        min_value=0,
        max_value=MAX_DURATION_SECONDS,
        required=False,
        help_text="Talk time in seconds (0 unless answered). Required on call.ended.",
    )

    @property
    def fields(self) -> Any:
        """The fields, built once per process and shared by every event's serializer.

        DRF deep-copies and binds a serializer's fields for each instance, which cost more than
        validating an event. These fields keep nothing per request (no instance, no context,
        no partial updates), so sharing them changes no answer."""
        cls = type(self)
        shared = cls.__dict__.get("_shared_fields")
        if shared is None:
            shared = serializers.Serializer.fields.func(cls())  # type: ignore[attr-defined]
            cls._shared_fields = shared
        return shared

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        required = {
            STARTED: ("direction", "phone_number"),
            ANSWERED: (),
            ENDED: ("outcome", "duration_seconds"),
        }[attrs["type"]]
        missing = {
            name: [gettext("This field is required on %(type)s.") % {"type": attrs["type"]}]
            for name in required
            if name not in attrs
        }
        if missing:
            raise serializers.ValidationError(missing)
        return attrs

    def facts(self) -> EventFacts:
        data = self.validated_data
        return EventFacts(
            event_id=str(data["event_id"]),
            type=data["type"],
            occurred_at=data["occurred_at"],
            direction=data.get("direction", ""),
            phone_number=data.get("phone_number", ""),
            outcome=data.get("outcome", ""),
            duration_seconds=data.get("duration_seconds"),
        )


class EventBatchSerializer(serializers.Serializer):
    events = serializers.ListField(
        child=serializers.JSONField(),
        min_length=1,
        max_length=MAX_BATCH,
        help_text=f"1-{MAX_BATCH} event objects (a replay of the bridge's offline queue), "
        "processed in order, each on its own.",
    )


class EntitySerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=["contact", "company", "lead", "deal"])
    id = serializers.IntegerField()
    name = serializers.CharField()
    url = serializers.URLField()


class PersonSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()


class DealSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    title = serializers.CharField()
    pipeline = serializers.CharField()
    stage = serializers.CharField()


class CrmSerializer(serializers.Serializer):
    status = serializers.ChoiceField(
        choices=["found", "not_found", "pending", "unavailable"],
        help_text="pending/unavailable: Bitrix24 did not answer within the lookup budget; the "
        "lookup goes on in the background and the call resource shows the result later.",
    )
    entity = EntitySerializer(required=False, allow_null=True)
    responsible = PersonSerializer(required=False, allow_null=True)
    deals = DealSerializer(many=True, required=False)


class RouteSerializer(serializers.Serializer):
    user = PersonSerializer(help_text="Who should take the call.")
    rule = serializers.CharField(
        allow_null=True,
        help_text="Why: the name of the routing rule that matched, 'Responsible user' (the "
        "caller's responsible, when the tenant routes identified callers to them) or 'Others' "
        "(no rule matched, or the CRM did not answer in time); null for outgoing calls.",
    )


class ActionSerializer(serializers.Serializer):
    type = serializers.CharField(help_text="register_call, log_call, attach_recording, ...")
    status = serializers.ChoiceField(
        choices=["scheduled", "running", "done", "failed", "skipped", "cancelled"]
    )
    due_at = serializers.DateTimeField(allow_null=True)
    done_at = serializers.DateTimeField(allow_null=True)
    result = serializers.DictField(required=False)


class RecordingInfoSerializer(serializers.Serializer):
    uploaded_at = serializers.DateTimeField()
    format = serializers.CharField(help_text="Detected from the content: mp3, wav, m4a, amr, ...")


class CallResourceSerializer(serializers.Serializer):
    call_id = serializers.CharField()
    direction = serializers.ChoiceField(choices=Call.Direction.values, allow_null=True)
    phone_number = serializers.CharField(
        allow_null=True, help_text="E.164 when the number could be read, else as the phone sent it."
    )
    status = serializers.ChoiceField(choices=Call.Status.values)
    outcome = serializers.ChoiceField(choices=Call.Outcome.values, allow_null=True)
    started_at = serializers.DateTimeField(allow_null=True)
    answered_at = serializers.DateTimeField(allow_null=True)
    ended_at = serializers.DateTimeField(allow_null=True)
    duration_seconds = serializers.IntegerField(allow_null=True)
    crm = CrmSerializer()
    route = RouteSerializer(allow_null=True)
    recording = RecordingInfoSerializer(allow_null=True)
    actions = ActionSerializer(many=True)


class BatchResultSerializer(serializers.Serializer):
    event_id = serializers.CharField(allow_null=True)
    status = serializers.ChoiceField(choices=["accepted", "duplicate", "invalid"])
    errors = serializers.DictField(required=False, help_text="Field errors of an invalid event.")  # type: ignore[assignment]  # a field: DRF's metaclass moves it to _declared_fields


class BatchResponseSerializer(serializers.Serializer):
    results = BatchResultSerializer(many=True, help_text="In request order.")


class LookupRequestSerializer(serializers.Serializer):
    phone_number = StrictCharField(max_length=32, help_text="Any format the phone shows.")


class LookupResponseSerializer(serializers.Serializer):
    phone_number = serializers.CharField(help_text="E.164.")
    crm = CrmSerializer()
    route = RouteSerializer()


class NoteSerializer(serializers.Serializer):
    text = StrictCharField(min_length=1, max_length=10_000)


class NoteResponseSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    text = serializers.CharField()
    created_at = serializers.DateTimeField()


class RecordingUploadSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="The audio: m4a/AAC, AMR, 3GP, OGG/Opus, MP3 or WAV.")


class RecordingResponseSerializer(serializers.Serializer):
    call_id = serializers.CharField()
    version = serializers.IntegerField(help_text="1 for the first upload, +1 per replacement.")
    format = serializers.CharField()
    size = serializers.IntegerField()
    uploaded_at = serializers.DateTimeField()


class HeartbeatSerializer(serializers.Serializer):
    app_version = StrictCharField(max_length=32)


class HeartbeatResponseSerializer(serializers.Serializer):
    server_time = serializers.DateTimeField()


class PingResponseSerializer(serializers.Serializer):
    device = serializers.CharField(help_text="The name of the device the token belongs to.")
