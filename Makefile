# The README's two commands. Both work on a fresh clone with only Python 3.11, make and git.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run test lint format messages manage

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

# exec: the demo is make's own child, and stops with make (devtools.run watches its parent), when
# make is stopped by a signal sent to it alone (a script, a supervisor) as by Ctrl-C.
run: $(VENV)/.installed
	DJANGO_DEBUG=$${DJANGO_DEBUG-1} exec $(PY) -m devtools.run

# A management command beside `make run`, on the same databases (its embedded ones when
# DATABASE_URL/REDIS_URL are unset): make manage ARGS="export_config --schema demo"
manage: $(VENV)/.installed
	DJANGO_DEBUG=$${DJANGO_DEBUG-1} SIMTRIX_ALLOW_PRIVATE_ADDRESSES=$${SIMTRIX_ALLOW_PRIVATE_ADDRESSES-1} \
		$(PY) -m devtools.services exec -- $(PY) manage.py $(ARGS)

# The test key is base64("simtrix-test-only-encryption-key"): tests run with DJANGO_DEBUG off.
TEST_ENCRYPTION_KEY := c2ltdHJpeC10ZXN0LW9ubHktZW5jcnlwdGlvbi1rZXk=

test: lint
	DJANGO_SECRET_KEY=$${DJANGO_SECRET_KEY:-test-only-secret} \
		SIMTRIX_ENCRYPTION_KEY=$${SIMTRIX_ENCRYPTION_KEY:-$(TEST_ENCRYPTION_KEY)} \
		$(PY) -m devtools.services exec -- $(PY) -m pytest $(PYTEST_ARGS)

# ruff (PLC0415 included: a function-level import says why), the one-way layers
# (import-linter, pyproject.toml) and the type checker over the whole project.
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache
	@# The django-stubs plugin loads the settings but connects to nothing: placeholders do.
	DJANGO_SECRET_KEY=$${DJANGO_SECRET_KEY:-test-only-secret} \
		SIMTRIX_ENCRYPTION_KEY=$${SIMTRIX_ENCRYPTION_KEY:-$(TEST_ENCRYPTION_KEY)} \
		DATABASE_URL=$${DATABASE_URL:-postgres://typecheck.invalid/simtrix} \
		REDIS_URL=$${REDIS_URL:-redis://typecheck.invalid:6379/0} $(VENV)/bin/mypy .

format:
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# SIMtrix's own strings into locale/pl, translations taken from TRANSLATIONS (JSON files, see
# devtools/translations.py) or typed into the .po, msgmerge's guesses cleared, then the .mo the
# server reads (committed: the build needs no gettext). It lists what is left to translate.
# simtrix/tests/test_translations.py fails on a marked string missing from the catalog, on an
# empty or fuzzy entry and on a .mo older than its .po.
messages: $(VENV)/.installed
	$(PY) -m devtools.translations update $(TRANSLATIONS)
	msgfmt --check -o locale/pl/LC_MESSAGES/django.mo locale/pl/LC_MESSAGES/django.po
