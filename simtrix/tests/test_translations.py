"""Polish: SIMtrix's catalog complete (no empty or fuzzy entry), its compiled .mo the same as
its .po, the admin in the language the user or the browser asks for, the bridge API's errors
in the request's Accept-Language."""

from __future__ import annotations

import ast
import gettext
import json
import re
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.test import Client

from calls.tests.conftest import Bridge
from tenants.models import Tenant

CATALOG = Path(__file__).resolve().parents[2] / "locale" / "pl" / "LC_MESSAGES"


def _entries() -> list[dict[str, object]]:
    """The .po's entries (msgid, msgid_plural, msgstr forms, flags), header left out."""
    entries = []
    for block in CATALOG.joinpath("django.po").read_text(encoding="utf-8").split("\n\n"):
        entry: dict[str, object] = {"flags": "", "msgstr": {}}
        current = None
        for line in block.strip().splitlines():
            if line.startswith("#,"):
                entry["flags"] = line
                continue
            if line.startswith("#"):
                continue
            match = re.match(r'^(msgid_plural|msgid|msgstr(?:\[(\d)\])?) (".*")$', line)
            if match:
                current = (match.group(1), match.group(2))
                value = ast.literal_eval(match.group(3))
            else:
                value = ast.literal_eval(line)
            assert current is not None, line
            name, index = current
            if name.startswith("msgstr"):
                forms = entry["msgstr"]
                assert isinstance(forms, dict)
                key = int(index) if index is not None else 0
                forms[key] = str(forms.get(key, "")) + value
            else:
                entry[name] = str(entry.get(name, "")) + value
        if entry.get("msgid"):
            entries.append(entry)
    return entries


def test_the_polish_catalog_has_no_empty_or_fuzzy_entry() -> None:
    entries = _entries()
    assert len(entries) > 50
    for entry in entries:
        assert "fuzzy" not in str(entry["flags"]), entry["msgid"]
        forms = entry["msgstr"]
        assert isinstance(forms, dict)
        assert forms, entry["msgid"]
        assert all(str(form).strip() for form in forms.values()), entry["msgid"]
        # Every placeholder of the English is in the Polish.
        wanted = set(re.findall(r"%\(\w+\)s", str(entry["msgid"])))
        for form in forms.values():
            assert wanted <= set(re.findall(r"%\(\w+\)s", str(form))), entry["msgid"]


def test_the_compiled_catalog_is_the_po_as_it_is() -> None:
    with CATALOG.joinpath("django.mo").open("rb") as handle:
        compiled = gettext.GNUTranslations(handle)
    for entry in _entries():
        forms = entry["msgstr"]
        assert isinstance(forms, dict)
        msgid = str(entry["msgid"])
        if "msgid_plural" in entry:
            assert compiled.ngettext(msgid, str(entry["msgid_plural"]), 1) == forms[0], msgid
        else:
            assert compiled.gettext(msgid) == forms[0], (
                f"{msgid!r}: the .mo is older than the .po (make messages)"
            )


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
