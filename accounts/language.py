"""The admin's language, kept per user.

The switcher (templates/admin/base_site.html) posts to `set_language`: Django's view sets the
language cookie for this browser, and the choice is saved on the user, so it follows them to a
new browser or phone after login. `UserLanguageMiddleware` (after authentication) puts the saved
choice ahead of the cookie and the browser's Accept-Language; a user who never chose gets what
Django's LocaleMiddleware picked. The choice travels in the session, read from the database
once per login: an admin page costs no extra query. The bridge API is left alone: it follows
each request's Accept-Language.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.auth.signals import user_logged_in
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django.utils import translation
from django.views.decorators.http import require_POST
from django.views.i18n import set_language as django_set_language

from accounts.models import UserPreference

SESSION_KEY = "simtrix_language"
_CODES = {code for code, _name in settings.LANGUAGES}


def user_language(user: Any) -> str:
    """The language `user` chose ("" when none)."""
    preference = UserPreference.objects.filter(user_id=user.pk).first()
    return preference.language if preference and preference.language in _CODES else ""


def user_language_remember(user: Any, language: str) -> None:
    UserPreference.objects.update_or_create(user_id=user.pk, defaults={"language": language})


@receiver(user_logged_in, dispatch_uid="accounts.language.on_login")
def _on_login(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    if request is not None and hasattr(request, "session"):
        request.session[SESSION_KEY] = user_language(user)


@require_POST
def set_language(request: HttpRequest) -> HttpResponse:
    """Django's set_language, and the choice saved on the user when one is logged in."""
    response = django_set_language(request)
    language = request.POST.get("language", "")
    user = getattr(request, "user", None)
    if language in _CODES and user is not None and user.is_authenticated:
        user_language_remember(user, language)
        request.session[SESSION_KEY] = language
    return response


class UserLanguageMiddleware:
    """After AuthenticationMiddleware: a logged-in user's saved language wins."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        language = self._language(request)
        if language:
            translation.activate(language)
            request.LANGUAGE_CODE = language
        return self.get_response(request)

    @staticmethod
    def _language(request: HttpRequest) -> str:
        if request.path.startswith("/api/") or not hasattr(request, "session"):
            return ""
        session = request.session
        if SESSION_KEY in session:
            value = session[SESSION_KEY]
            return value if value in _CODES else ""
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return ""
        # A session from before this middleware existed: read the choice once.
        value = user_language(user)
        session[SESSION_KEY] = value
        return value
