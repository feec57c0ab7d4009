"""The commands channel's bodies (contract: "Work the server gives the phone")."""

from __future__ import annotations

from rest_framework import serializers

from calls.api.serializers import StrictCharField
from commands.models import Command

MAX_WAIT_SECONDS = 30


class PollQuerySerializer(serializers.Serializer):
    wait = serializers.IntegerField(
        min_value=0,
        max_value=MAX_WAIT_SECONDS,
        default=0,
        help_text="Seconds to wait for a command (0-30; 0 answers at once).",
    )


class CommandSerializer(serializers.Serializer):
    command_id = serializers.UUIDField()
    type = serializers.ChoiceField(choices=Command.Type.choices)
    status = serializers.ChoiceField(choices=Command.Status.choices)
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField(
        help_text="`dial`: 60 s after it was made; `send_sms`: 24 h. Not delivered after it."
    )
    phone_number = serializers.CharField(help_text="E.164: whom to call or text.")
    call_id = serializers.CharField(
        required=False, help_text="`dial` only: the call_id the events of the placed call carry."
    )
    crm = serializers.DictField(
        required=False, help_text="`dial` only: the lookup object (as in `/lookup/`)."
    )
    sms_id = serializers.CharField(
        required=False, help_text="`send_sms` only: the id the SMS events refer to."
    )
    text = serializers.CharField(required=False, help_text="`send_sms` only: 1-1600 characters.")


class PollResponseSerializer(serializers.Serializer):
    commands = CommandSerializer(many=True)


class AckSerializer(serializers.Serializer):
    status = serializers.ChoiceField(
        choices=[
            (Command.Status.DONE, "done: dialled / handed to the radio"),
            (Command.Status.FAILED, "failed: tried and could not"),
            (Command.Status.REJECTED, "rejected: the agent declined"),
        ]
    )
    error = StrictCharField(max_length=500, required=False, allow_blank=True)
