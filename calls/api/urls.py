from __future__ import annotations

from django.urls import path

from calls.api import views
from commands.api import views as commands
from sms.api import views as sms

app_name = "bridge"

urlpatterns = [
    path("events/", views.EventsView.as_view(), name="events"),
    path("lookup/", views.LookupView.as_view(), name="lookup"),
    path("calls/<str:call_id>/", views.CallDetailView.as_view(), name="call"),
    path("calls/<str:call_id>/recording/", views.RecordingView.as_view(), name="recording"),
    path("calls/<str:call_id>/notes/", views.NotesView.as_view(), name="notes"),
    path("heartbeat/", views.HeartbeatView.as_view(), name="heartbeat"),
    path("ping/", views.PingView.as_view(), name="ping"),
    path("commands/", commands.CommandsView.as_view(), name="commands"),
    path("commands/<str:command_id>/ack/", commands.CommandAckView.as_view(), name="command-ack"),
    path("sms/", sms.SmsEventsView.as_view(), name="sms"),
]
