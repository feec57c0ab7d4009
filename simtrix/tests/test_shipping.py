"""Shipping it: the image, the compose file, static files, the licence.

Docker cannot run here (no daemon, no registry), so the Dockerfile and the compose file are
checked by reading them: the stages, the user, the health checks, what reaches the image. The
static files storage is exercised for real, with and without a manifest.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.contrib.staticfiles.storage import staticfiles_storage
from django.templatetags.static import static

REPO = Path(__file__).resolve().parents[2]


def _instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", dockerfile)
    rows = []
    for line in joined.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            rows.append((keyword.upper(), rest.strip()))
    return rows


@pytest.fixture(scope="module")
def stages() -> dict[str, list[tuple[str, str]]]:
    """The Dockerfile's stages by name, each its instructions."""
    named: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for keyword, rest in _instructions((REPO / "Dockerfile").read_text()):
        if keyword == "FROM":
            name = rest.split(" AS ")[1].strip() if " AS " in rest else rest
            current = named.setdefault(name, [])
        elif current is not None:
            current.append((keyword, rest))
    return named


def test_the_image_is_built_in_two_stages_and_runs_as_a_user(
    stages: dict[str, list[tuple[str, str]]],
) -> None:
    assert list(stages) == ["builder", "runtime"]
    builder, runtime = stages["builder"], stages["runtime"]
    builder_runs = " ".join(rest for keyword, rest in builder if keyword == "RUN")
    assert "pip install --requirement /tmp/requirements.txt" in builder_runs
    assert "manage.py collectstatic --noinput" in builder_runs
    assert "staticfiles.json" in builder_runs  # the build fails without the manifest
    # The runtime takes the virtualenv and the code from the builder, nothing from pip.
    copies = [rest for keyword, rest in runtime if keyword == "COPY"]
    assert copies == ["--from=builder /opt/venv /opt/venv", "--from=builder /app /app"]
    assert not any("pip install" in rest for keyword, rest in runtime if keyword == "RUN")
    users = [rest for keyword, rest in runtime if keyword == "USER"]
    assert users
    assert users[-1].split(":")[0] not in ("root", "0")
    (healthcheck,) = [rest for keyword, rest in runtime if keyword == "HEALTHCHECK"]
    assert "/healthz" in healthcheck
    (cmd,) = [json.loads(rest) for keyword, rest in runtime if keyword == "CMD"]
    assert cmd == ["gunicorn", "--config", "gunicorn.conf.py", "simtrix.wsgi:application"]


def test_local_state_and_secrets_stay_out_of_the_image() -> None:
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".venv", ".devdata", ".git", "var", "**/__pycache__", ".env"} <= ignored


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_compose_builds_the_dockerfile_and_checks_every_process(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "redis", "migrate", "web", "worker", "beat"}
    for name in ("migrate", "web", "worker", "beat"):
        assert services[name]["build"] == "."  # the Dockerfile, no inline copy of it
    tests = {
        name: " ".join(services[name]["healthcheck"]["test"])
        for name in ("postgres", "redis", "web", "worker", "beat")
    }
    # A one-shot job has no health: the image's check (the web's /healthz) is off for it.
    assert services["migrate"]["healthcheck"] == {"disable": True}
    assert "/readyz" in tests["web"]
    assert "inspect ping --destination worker@$$HOSTNAME" in tests["worker"]
    assert "worker@%h" in services["worker"]["command"]
    assert "manage.py dispatcher_alive" in tests["beat"]
    assert services["migrate"]["restart"] == "no"
    for name in ("web", "worker", "beat"):
        depends = services[name]["depends_on"]
        assert depends["migrate"] == {"condition": "service_completed_successfully"}
    assert "gunicorn.conf.py" in services["web"]["command"]


def test_compose_requires_the_secrets_and_shares_the_metrics_directory_in_memory(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    for name in ("migrate", "web", "worker", "beat"):
        environment = services[name]["environment"]
        assert environment["SIMTRIX_ENCRYPTION_KEY"].startswith("${SIMTRIX_ENCRYPTION_KEY:?")
        assert environment["DJANGO_SECRET_KEY"].startswith("${DJANGO_SECRET_KEY:?")
        assert environment["DJANGO_DEBUG"] == "0"
    directories = {
        services[name]["environment"]["PROMETHEUS_MULTIPROC_DIR"] for name in ("web", "worker")
    }
    assert len(directories) == 1
    (directory,) = directories
    for name in ("web", "worker"):
        assert f"metrics:{directory}" in services[name]["volumes"]
    assert compose["volumes"]["metrics"]["driver_opts"]["type"] == "tmpfs"
    # A process that is not web or worker writes no metric files (beat, the migrations).
    assert "PROMETHEUS_MULTIPROC_DIR" not in services["beat"]["environment"]


def test_gunicorn_accepts_its_configuration() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", "--print-config",
         "simtrix.wsgi:application"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    printed = {
        key.strip(): value.strip()
        for key, _, value in (line.partition("=") for line in done.stdout.splitlines())
        if value
    }
    assert printed["worker_class"] == "gthread"
    assert printed["threads"] == "150"  # every phone keeps a long poll open
    assert printed["workers"] == "4"


# --- Static files ----------------------------------------------------------------------------


def test_without_a_manifest_static_names_stay_plain(settings: Any, tmp_path: Path) -> None:
    settings.STATIC_ROOT = tmp_path  # a checkout or the tests: collectstatic never ran
    assert static("admin/css/base.css") == "/static/admin/css/base.css"


def test_with_the_manifest_collectstatic_writes_names_are_hashed_and_strict(
    settings: Any, tmp_path: Path
) -> None:
    (tmp_path / "staticfiles.json").write_text(
        json.dumps(
            {
                "version": "1.1",
                "hash": "0",
                "paths": {"admin/css/base.css": "admin/css/base.96c479cedf7a.css"},
            }
        )
    )
    settings.STATIC_ROOT = tmp_path  # the image: collectstatic ran at build
    assert static("admin/css/base.css") == "/static/admin/css/base.96c479cedf7a.css"
    # A file the build did not collect is an error, as with whitenoise's own storage.
    with pytest.raises(ValueError, match="Missing staticfiles manifest entry"):
        staticfiles_storage.url("admin/css/not-collected.css")


# --- Licence ---------------------------------------------------------------------------------


def test_the_licence_is_apache_2_and_the_readme_says_so() -> None:
    licence = (REPO / "LICENSE").read_text()
    assert licence.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in licence
    assert "END OF TERMS AND CONDITIONS" in licence
    assert "APPENDIX: How to apply the Apache License to your work." in licence
    readme = (REPO / "README.md").read_text()
    assert "Apache-2.0" in readme
    assert "[LICENSE](LICENSE)" in readme


_GUNICORN_LOGS = textwrap.dedent(
    """
    import datetime, runpy, types
    from gunicorn.config import Config
    from gunicorn.glogging import Logger

    cfg = Config()
    for name, value in runpy.run_path("gunicorn.conf.py").items():
        if name in cfg.settings:
            cfg.set(name, value)
    log = Logger(cfg)
    log.info("Booting worker with pid: %s", 42)
    environ = {"REQUEST_METHOD": "GET", "RAW_URI": "/api/bridge/v1/lookup/?token=sekrit-42",
               "PATH_INFO": "/api/bridge/v1/lookup/", "QUERY_STRING": "token=sekrit-42",
               "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "10.0.0.9"}
    resp = types.SimpleNamespace(status="200 OK", sent=17, headers=[("X-Request-ID", "rq-1")])
    log.access(resp, types.SimpleNamespace(headers=[]), environ, datetime.timedelta(0, 0, 5000))
    """
)


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_gunicorns_own_and_access_lines_use_the_projects_format_without_the_query(
    log_format: str,
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _GUNICORN_LOGS],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=True,
        env={**os.environ, "SIMTRIX_LOG_FORMAT": log_format},
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert "sekrit-42" not in output
    lines = [line for line in output.splitlines() if line.strip()]
    if log_format == "json":
        parsed = {line["logger"]: line for line in map(json.loads, lines)}
        assert parsed["gunicorn.error"]["message"] == "Booting worker with pid: 42"
        access = parsed["gunicorn.access"]
        assert access["level"] == "INFO"
        assert "time" in access
        assert access["message"].startswith('10.0.0.9 "GET /api/bridge/v1/lookup/" 200 17 5ms')
        assert "request=rq-1" in access["message"]
    else:
        assert any(" INFO gunicorn.error" in line and "pid: 42" in line for line in lines)
        assert any(' INFO gunicorn.access' in line and '"GET /api/bridge/v1/lookup/"' in line
                   for line in lines)  # fmt: skip


def test_every_variable_gunicorn_reads_is_in_the_readmes_configuration_table() -> None:
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("## Configuration") : readme.index("## Operating it")]
    config = (REPO / "gunicorn.conf.py").read_text()
    read = set(re.findall(r"environ\.get\(\"([A-Z0-9_]+)\"", config))
    assert {"GUNICORN_BIND", "GUNICORN_WORKERS", "GUNICORN_ACCESSLOG"} <= read
    for name in read - {"SIMTRIX_LOG_FORMAT", "SIMTRIX_LOG_LEVEL"}:  # (Watching it section)
        assert f"`{name}`" in table, name
    # Names are written in full, so that searching the README for one finds it.
    assert not re.findall(r"`_[A-Z]", table)
    for name in ["SIMTRIX_RUN_BACKOFF_CAP_SECONDS", "SIMTRIX_S3_ENDPOINT_URL",
                 "SIMTRIX_S3_SECRET_ACCESS_KEY", "SIMTRIX_S3_PREFIX"]:  # fmt: skip
        assert f"`{name}`" in table, name


def test_the_compose_files_comment_names_the_real_variables() -> None:
    header = (REPO / "docker-compose.yml").read_text().split("\nx-app:", 1)[0]
    assert "SIMTRIX_CSRF_TRUSTED_ORIGINS" in header
    assert not re.search(r"(?<![A-Z_])CSRF_TRUSTED_ORIGINS", header)
