"""The commands channel of the bridge API: a long poll and the acknowledgement."""

from __future__ import annotations

import logging
import time
import uuid

from django.db import OperationalError, connection
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.exceptions import APIException, NotFound
from rest_framework.request import Request
from rest_framework.response import Response

from calls.api.views import BridgeView, _error, _errors
from commands.api.serializers import (
    AckSerializer,
    CommandSerializer,
    PollQuerySerializer,
    PollResponseSerializer,
)
from commands.models import Command
from commands.services import (
    CommandConflict,
    CommandNotFound,
    command_ack,
    command_resource,
    commands_deliver,
)
from commands.wakeup import wake_watch
from tenants.connection import tenant_connection

logger = logging.getLogger(__name__)


class AckConflict(APIException):
    status_code = 409
    default_detail = _("The command was already acknowledged with another status.")
    default_code = "conflict"


def _release_connection() -> None:
    # Not inside a transaction (a test's, or a caller's): closing would abort it.
    if not connection.in_atomic_block:
        connection.close()


def commands_wait(*, device_id: int, wait_s: float) -> list[Command]:
    """The device's commands: at once if there are any, else as soon as one is made, or none
    when `wait_s` runs out. No database connection is held while it waits (commands.wakeup)."""
    commands = commands_deliver(device_id=device_id)
    if commands or wait_s <= 0:
        return commands
    deadline = time.monotonic() + wait_s
    with wake_watch(schema=tenant_connection.schema_name, device_id=device_id) as watch:
        while True:
            # Watching from before this read: a command made after it wakes the watch.
            try:
                commands = commands_deliver(device_id=device_id)
            except OperationalError:
                # No connection now (the server is full, or restarting): a phone that was only
                # waiting gets "nothing yet" rather than a 500, and asks again.
                logger.warning("commands poll of device %s: database unavailable", device_id)
                commands = []
            remaining = deadline - time.monotonic()
            if commands or remaining <= 0:
                return commands
            _release_connection()
            watch.wait(remaining)


class CommandsView(BridgeView):
    @extend_schema(
        operation_id="commands_poll",
        summary="Long poll for work the server gives this phone (dial, send SMS)",
        description=(
            "Answers as soon as there is at least one command for this device, or with "
            "`[]` when `wait` runs out. Oldest first, at most 20. A command is delivered again "
            "on every poll until it is acknowledged or expires. A command made while the poll "
            "waits is delivered within a second."
        ),
        parameters=[
            OpenApiParameter(
                "wait", int, OpenApiParameter.QUERY, description="0-30 seconds (default 0)."
            )
        ],
        responses={
            200: PollResponseSerializer,
            **_errors(401, 429, _400=_error("`wait` is not a whole number of 0-30 seconds.")),
        },
    )
    def get(self, request: Request) -> Response:
        query = PollQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        device_id = self.device.pk
        commands = commands_wait(device_id=device_id, wait_s=query.validated_data["wait"])
        response = Response({"commands": [command_resource(command) for command in commands]})
        _release_connection()  # a thread that waited keeps no connection for the next poll
        return response


class CommandAckView(BridgeView):
    @extend_schema(
        operation_id="commands_ack",
        summary="Acknowledge a command: done, failed or rejected by the agent",
        description=(
            "The first acknowledgement is final: repeating it answers the same; another "
            "status afterwards is `409`. A command that expired unacknowledged is `expired`."
        ),
        request=AckSerializer,
        responses={
            200: CommandSerializer,
            **_errors(
                400,
                401,
                413,
                415,
                429,
                _404=_error("No such command for this device."),
                _409=OpenApiResponse(description="Already closed with another status."),
            ),
        },
    )
    def post(self, request: Request, command_id: str) -> Response:
        try:
            uuid.UUID(command_id)
        except ValueError:
            raise NotFound(gettext("This device has no command with that command_id.")) from None
        serializer = AckSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            command = command_ack(
                device=self.device,
                command_id=command_id,
                status=serializer.validated_data["status"],
                error=serializer.validated_data.get("error", ""),
            )
        except CommandNotFound as exc:
            raise NotFound(gettext("This device has no command with that command_id.")) from exc
        except CommandConflict as exc:
            raise AckConflict(
                gettext("The command is already %(status)s.") % {"status": exc.command.status},
            ) from exc
        return Response(command_resource(command))
