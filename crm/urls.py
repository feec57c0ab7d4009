"""Tenant URLs of the Bitrix24 integration, included under ``bitrix24/``."""

from __future__ import annotations

from django.urls import path

from crm import views

app_name = "crm"

urlpatterns = [
    path("install/", views.install, name="install"),
    path("events/", views.events, name="events"),
    path("sms/", views.sms, name="sms"),
]
