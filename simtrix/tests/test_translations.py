"""Polish: SIMtrix's catalog complete (no empty or fuzzy entry), its compiled .mo the same as
its .po, the admin in the language the user or the browser asks for, the bridge API's errors
in the request's Accept-Language."""

from __future__ import annotations

import gettext
import json
import os
import re
import shutil
from pathlib import Path

import polib
import pytest
from django.apps import apps
from django.contrib.auth.models import User
from django.test import Client
from django.utils import translation

from calls.tests.conftest import Bridge
from devtools import translations
from devtools.translations import catalog_problems
from tenants.models import Tenant

CATALOG = Path(__file__).resolve().parents[2] / "locale" / "pl" / "LC_MESSAGES"


def test_the_polish_catalog_has_no_empty_or_fuzzy_entry() -> None:
    po = polib.pofile(str(CATALOG / "django.po"))
    assert len(po) > 500
    assert catalog_problems(po) == []
    for entry in po:
        # Every placeholder of the English is in the Polish.
        forms = entry.msgstr_plural.values() if entry.msgid_plural else [entry.msgstr]
        wanted = set(re.findall(r"%\(\w+\)[sd]", entry.msgid))
        for form in forms:
            assert wanted <= set(re.findall(r"%\(\w+\)[sd]", form)), entry.msgid


def test_the_compiled_catalog_is_the_po_as_it_is() -> None:
    with CATALOG.joinpath("django.mo").open("rb") as handle:
        compiled = gettext.GNUTranslations(handle)
    for entry in polib.pofile(str(CATALOG / "django.po")):
        msgid = f"{entry.msgctxt}\x04{entry.msgid}" if entry.msgctxt else entry.msgid
        if entry.msgid_plural:
            got = compiled.ngettext(msgid, entry.msgid_plural, 1)
            assert got == entry.msgstr_plural[0], f"{msgid!r}: the .mo is older (make messages)"
        else:
            got = compiled.gettext(msgid)
            assert got == entry.msgstr, f"{msgid!r}: the .mo is older than the .po (make messages)"


def test_every_marked_string_is_in_the_catalog(tmp_path: Path) -> None:
    """What `make messages` would collect from the source today is what the catalog holds:
    a string marked since the last `make messages` fails here (it would show in English)."""
    if shutil.which("xgettext") is None:
        if os.environ.get("CI"):
            raise RuntimeError("no GNU gettext: .ci/run installs it (apt-get install gettext)")
        pytest.skip("no GNU gettext on this machine: apt-get install gettext (CI always has it)")
    source = Path(translations.ROOT)
    copy = tmp_path / "src"
    shutil.copytree(
        source,
        copy,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "var", ".devdata", "node_modules", "*.pyc", "__pycache__", "*.mo"
        ),
    )
    translations.collect(copy)
    collected_po = copy / CATALOG.relative_to(source) / "django.po"
    collected = {entry.msgid for entry in polib.pofile(str(collected_po))}
    catalog = {entry.msgid for entry in polib.pofile(str(CATALOG / "django.po"))}
    assert sorted(collected - catalog) == []
    assert sorted(catalog - collected) == []  # nothing obsolete kept


def _model_names() -> dict[str, str]:
    """Every name the admin shows for SIMtrix's models and their fields, in the active
    language ("calls.Call": "call", "calls.Call.phone_number": "phone number", ...)."""
    own = {"accounts", "tenants", "crm", "calls", "scenarios", "commands", "sms", "reports"}
    names = {}
    for model in apps.get_models():
        if model._meta.app_label in own:
            label = model._meta.label
            names[label] = str(model._meta.verbose_name)
            names[f"{label} (plural)"] = str(model._meta.verbose_name_plural)
            for field in model._meta.concrete_fields:
                if field.name != "id":
                    names[f"{label}.{field.name}"] = str(field.verbose_name)
    return names


def test_the_admin_names_every_model_and_field_in_polish() -> None:
    """Model and field names are marked (Django's derived names never are): in Polish, none
    of SIMtrix's models and fields shows its English name."""
    same_in_both = {"status", "token", "portal", "webhook", "lead", "deal", "sms", "t0"}
    with translation.override("en"):
        english = _model_names()
    with translation.override("pl"):
        polish = _model_names()
    assert len(polish) > 300
    left = [
        f"{where}: {name}"
        for where, name in polish.items()
        if name == english[where] and name.lower() not in same_in_both
    ]
    assert left == []


@pytest.fixture
def admin_alpha(alpha: Tenant) -> Client:
    client = Client(HTTP_HOST="alpha.localhost")
    client.force_login(User.objects.create_superuser("boss", password="pw"))
    return client


def test_the_admin_speaks_polish_to_a_polish_browser_and_english_by_default(
    admin_alpha: Client,
) -> None:
    english = admin_alpha.get("/admin/").content.decode()
    assert "Getting started" in english
    assert "Log out" in english
    polish = admin_alpha.get("/admin/", HTTP_ACCEPT_LANGUAGE="pl").content.decode()
    assert "Pierwsze kroki" in polish  # SIMtrix's own
    assert "Połącz z Bitrix24" in polish
    assert "Wyloguj się" in polish  # Django admin's
    assert ">Konfiguracja<" in polish or ">Konfiguracja</a>" in polish


def test_the_switcher_keeps_the_users_choice_whatever_the_browser_says(
    admin_alpha: Client,
) -> None:
    response = admin_alpha.post("/i18n/setlang/", {"language": "pl", "next": "/admin/"})
    assert response.status_code == 302
    page = admin_alpha.get("/admin/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "Pierwsze kroki" in page
    assert '<option value="pl" selected>' in page


def test_the_users_choice_follows_them_to_another_browser_and_is_theirs_alone(
    admin_alpha: Client,
) -> None:
    from accounts.models import UserPreference

    anonymous = Client(HTTP_HOST="alpha.localhost")
    anonymous.post("/i18n/setlang/", {"language": "pl", "next": "/admin/login/"})
    assert not UserPreference.objects.exists()  # a browser's choice, no user's

    admin_alpha.post("/i18n/setlang/", {"language": "pl", "next": "/admin/"})
    assert UserPreference.objects.get(user__username="boss").language == "pl"
    laptop = Client(HTTP_HOST="alpha.localhost")  # no language cookie, an English browser
    laptop.force_login(User.objects.get(username="boss"))
    assert "Pierwsze kroki" in laptop.get("/admin/", HTTP_ACCEPT_LANGUAGE="en").content.decode()

    colleague = Client(HTTP_HOST="alpha.localhost")
    colleague.force_login(User.objects.create_superuser("colleague", password="pw"))
    assert "Getting started" in colleague.get("/admin/", HTTP_ACCEPT_LANGUAGE="en").content.decode()

    # Back to English from the laptop: every browser of the user follows at its next login.
    laptop.post("/i18n/setlang/", {"language": "en", "next": "/admin/"})
    assert "Getting started" in laptop.get("/admin/", HTTP_ACCEPT_LANGUAGE="pl").content.decode()
    phone = Client(HTTP_HOST="alpha.localhost")
    phone.force_login(User.objects.get(username="boss"))
    assert "Getting started" in phone.get("/admin/", HTTP_ACCEPT_LANGUAGE="pl").content.decode()


def test_the_bridge_api_errors_follow_accept_language(alpha: Tenant) -> None:
    from calls.services import device_register

    _, token = device_register(
        name="Phone", phone_number="+48500100200", bitrix24_user_id=5, country="PL"
    )
    bridge = Bridge(token)
    body = {"event_id": "6f1c7c3e-8d0c-4a43-9a57-1d9f3f2f0a11", "type": "call.started"}
    english = bridge.client.post(
        "/api/bridge/v1/events/", json.dumps(body), content_type="application/json"
    )
    assert english.status_code == 400
    assert "This field is required." in json.dumps(english.json())
    polish = bridge.client.post(
        "/api/bridge/v1/events/",
        json.dumps(body),
        content_type="application/json",
        HTTP_ACCEPT_LANGUAGE="pl",
    )
    assert polish.status_code == 400
    assert "To pole jest wymagane." in json.dumps(polish.json(), ensure_ascii=False)
