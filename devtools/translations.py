"""The Polish catalog (locale/pl/LC_MESSAGES/django.po) kept complete.

`make messages` runs `update`: `collect` puts every marked string of SIMtrix into the catalog
(Django's makemessages, with msgmerge keeping what is translated), then `fill`:
- takes translations from JSON files given on the command line (`{"English": "Polish"}`;
  plurals as `{"plural": "...", "forms": [four Polish forms]}`; a context as
  "context\\u0004English"), written by whoever added the strings;
- clears msgmerge's guesses: an entry flagged fuzzy that no JSON file translates is emptied,
  so it shows as missing instead of shipping a wrong neighbour's translation;
- drops obsolete entries, compiles the .mo and lists what is still untranslated (exit 1).

    python -m devtools.translations update [translations.json ...]
    python -m devtools.translations fill [translations.json ...]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import polib

ROOT = Path(__file__).resolve().parents[1]
CATALOG = ROOT / "locale" / "pl" / "LC_MESSAGES" / "django.po"
# Not SIMtrix's UI: tests, benchmarks, the Bitrix24 sandbox, these tools, local data.
IGNORED = [".venv", "var", ".devdata", "bench/*", "*/tests/*", "bitrix24_sandbox/*", "devtools/*"]


def collect(root: Path = ROOT) -> None:
    """Django's makemessages over the source tree at `root` (into its locale/pl)."""
    env = {
        "DJANGO_SECRET_KEY": "test-only-secret",
        "SIMTRIX_ENCRYPTION_KEY": "c2ltdHJpeC10ZXN0LW9ubHktZW5jcnlwdGlvbi1rZXk=",
        **os.environ,
    }
    ignores = [f"--ignore={pattern}" for pattern in IGNORED]
    command = [sys.executable, "manage.py", "makemessages", "-l", "pl", "--no-location"]
    subprocess.run([*command, *ignores], cwd=root, env=env, check=True)


def catalog_problems(po: polib.POFile) -> list[str]:
    """Entries that would show English (or a guess) to a Polish user."""
    problems = []
    for entry in po:
        if entry.obsolete:
            continue
        if "fuzzy" in entry.flags:
            problems.append(f"fuzzy: {entry.msgid!r}")
        elif entry.msgid_plural:
            if not all(str(form).strip() for form in entry.msgstr_plural.values()):
                problems.append(f"untranslated plural: {entry.msgid!r}")
        elif not entry.msgstr.strip():
            problems.append(f"untranslated: {entry.msgid!r}")
    return problems


def _key(entry: polib.POEntry) -> str:
    return f"{entry.msgctxt}\x04{entry.msgid}" if entry.msgctxt else entry.msgid


def fill(paths: list[str]) -> int:
    given: dict[str, Any] = {}
    for path in paths:
        given.update(json.loads(Path(path).read_text(encoding="utf-8")))
    po = polib.pofile(str(CATALOG), wrapwidth=100)
    for entry in po.obsolete_entries():
        po.remove(entry)
    for entry in po:
        value = given.get(_key(entry))
        if value is None:
            if "fuzzy" in entry.flags:
                entry.flags.remove("fuzzy")
                entry.previous_msgid = entry.previous_msgid_plural = entry.previous_msgctxt = None
                entry.msgstr = ""
                entry.msgstr_plural = dict.fromkeys(entry.msgstr_plural, "")
            continue
        if isinstance(value, dict):
            entry.msgstr_plural = dict(enumerate(value["forms"]))
        else:
            entry.msgstr = value
        if "fuzzy" in entry.flags:
            entry.flags.remove("fuzzy")
        entry.previous_msgid = entry.previous_msgid_plural = entry.previous_msgctxt = None
    po.save(str(CATALOG))
    po.save_as_mofile(str(CATALOG.with_suffix(".mo")))
    problems = catalog_problems(po)
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"{len(po)} entries, {len(problems)} to translate", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in ("update", "fill"):
        sys.exit(__doc__)
    if sys.argv[1] == "update":
        collect()
    sys.exit(fill(sys.argv[2:]))
