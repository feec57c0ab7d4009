"""SIMtrix settings: everything that differs between deployments comes from the environment.

The variable names are fixed by the operations contract (shared/contract/operations.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import unquote

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

DEBUG = env.bool("DJANGO_DEBUG", default=False)

SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is not set: set it (or DJANGO_DEBUG=1 for local development)."
        )
    SECRET_KEY = "simtrix-insecure-development-key-do-not-use-in-production"  # noqa: S105

ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=[".localhost", "127.0.0.1", "localhost"])

DATABASE_URL = env.str("DATABASE_URL", default="")
if not DATABASE_URL:
    raise ImproperlyConfigured(
        "DATABASE_URL is not set: point it at PostgreSQL, or use `make run` / `make test`, "
        "which start an embedded PostgreSQL when it is unset."
    )
REDIS_URL = env.str("REDIS_URL", default="")
if not REDIS_URL:
    raise ImproperlyConfigured(
        "REDIS_URL is not set: point it at Redis, or use `make run` / `make test`, "
        "which start an embedded Redis when it is unset."
    )

# --- Multi-tenancy (django-tenants): one PostgreSQL schema per tenant -----------------------

SHARED_APPS = [
    "django_tenants",
    "tenants",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.admin",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI served locally: self-hosted servers may be offline
    # Public only: the schedule is the operators'. Nothing a tenant stores may choose the schema
    # a task runs in (scenarios.schedule).
    "django_celery_beat",
]
TENANT_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.admin",
    "crm",
    "calls",
    "scenarios",
]
INSTALLED_APPS = SHARED_APPS + [app for app in TENANT_APPS if app not in SHARED_APPS]

TENANT_MODEL = "tenants.Tenant"
TENANT_DOMAIN_MODEL = "tenants.Domain"
PUBLIC_SCHEMA_NAME = "public"
# New tenants are cloned from a migrated template schema instead of running every migration.
TENANT_BASE_SCHEMA = "tenant_template"
TENANT_CREATION_FAKES_MIGRATIONS = True
PUBLIC_SCHEMA_URLCONF = "simtrix.urls_public"
ROOT_URLCONF = "simtrix.urls_tenant"
SHOW_PUBLIC_IF_NO_TENANT_FOUND = False
# Issue `SET search_path` once per connection and schema instead of before every query (half the
# round trips of a bridge event). django-tenants forgets the cached path on rollback, savepoint
# rollback and close, where PostgreSQL discards a SET (tenants/tests/test_search_path.py).
TENANT_LIMIT_SET_CALLS = True
# How long a process trusts its host -> tenant mapping; changes in the same process apply at once.
SIMTRIX_TENANT_CACHE_SECONDS = env.int("SIMTRIX_TENANT_CACHE_SECONDS", default=10)

DATABASES = {"default": env.db_url("DATABASE_URL")}
# A Unix-socket directory arrives percent-encoded in the URL's host (the embedded PostgreSQL).
DATABASES["default"]["HOST"] = unquote(DATABASES["default"]["HOST"])
DATABASES["default"]["ENGINE"] = "django_tenants.postgresql_backend"
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# The bridge's hot path (calls/sql.py) runs as server-side prepared statements (Django's own
# queries bind on the client and are never prepared). Off behind a pooler that cannot keep
# prepared statements (PgBouncer in transaction mode before 1.21).
DATABASES["default"]["OPTIONS"] = {
    "prepare_threshold": 0 if env.bool("DATABASE_PREPARED_STATEMENTS", default=True) else None
}
DATABASE_ROUTERS = ["django_tenants.routers.TenantSyncRouter"]

MIDDLEWARE = [
    "tenants.middleware.ActiveTenantMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Serves the admin's static files under gunicorn without a separate web server.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "simtrix.wsgi.application"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"
MEDIA_URL = "media/"
MEDIA_ROOT = Path(env.str("SIMTRIX_MEDIA_ROOT", default=str(BASE_DIR / "var" / "media")))

# Call recordings go through Django's storage API: local files under MEDIA_ROOT by default, or an
# S3-compatible bucket (AWS, MinIO, Ceph...) through django-storages when SIMTRIX_S3_BUCKET is set.
# Credentials come from SIMTRIX_S3_ACCESS_KEY_ID / SIMTRIX_S3_SECRET_ACCESS_KEY (or boto3's usual
# environment); files are private and served to support staff through the admin only.
SIMTRIX_S3_BUCKET = env.str("SIMTRIX_S3_BUCKET", default="")
STORAGES: dict[str, dict[str, Any]] = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
if SIMTRIX_S3_BUCKET:
    STORAGES["default"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": SIMTRIX_S3_BUCKET,
            "endpoint_url": env.str("SIMTRIX_S3_ENDPOINT_URL", default="") or None,
            "region_name": env.str("SIMTRIX_S3_REGION", default="") or None,
            "access_key": env.str("SIMTRIX_S3_ACCESS_KEY_ID", default="") or None,
            "secret_key": env.str("SIMTRIX_S3_SECRET_ACCESS_KEY", default="") or None,
            "location": env.str("SIMTRIX_S3_PREFIX", default="simtrix"),
            "default_acl": None,
            "querystring_auth": True,
            "file_overwrite": False,
        },
    }

# --- Cache and Celery: both on Redis, both tenant-aware -----------------------------------

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        # Prefixes every key with the current schema, so tenants never read each other's entries.
        "KEY_FUNCTION": "django_tenants.cache.make_key",
    },
    # Keys of no tenant, the same whichever schema asks (the dispatcher's heartbeat and lock).
    "shared": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "simtrix-shared",
    },
}

CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_TIMEZONE = "UTC"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = 120
CELERY_TASK_SOFT_TIME_LIMIT = 90
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_DEFAULT_QUEUE = env.str("CELERY_TASK_DEFAULT_QUEUE", default="celery")
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
# The plain database scheduler, in the public schema. Every entry is one task in public that
# decides which tenants have work (scenarios.schedule): beat never sends a task per tenant.
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_BEAT_SCHEDULE: dict[str, dict] = {
    # Visits only the tenants whose outbox has something due (the public OutboxWake index).
    "outbox-dispatch": {"task": "scenarios.dispatch_due", "schedule": 1.0},
    # Belt and braces: every tenant's outbox is looked at once an hour, due or not (a thousand
    # tenants: ~8 CPU-seconds, bench.many_tenants).
    "outbox-sweep": {"task": "scenarios.outbox_sweep", "schedule": 3600.0},
    # Deletes recordings older than each tenant's retention (calls.CallSettings.retention_days).
    "expire-recordings": {"task": "calls.recordings_expire_all", "schedule": 3600.0},
    # Mirrors each tenant's Bitrix24 users, pipelines, stages, lead statuses and sources.
    "crm-directory-sync": {"task": "crm.directory_sync_all", "schedule": 3600.0},
    # Users' Bitrix24 work-day status, for tenants that route by it (TenantSchedule).
    "routing-availability": {"task": "scenarios.availability_refresh_all", "schedule": 60.0},
}
SIMTRIX_RUN_LEASE_SECONDS = env.int("SIMTRIX_RUN_LEASE_SECONDS", default=180)
SIMTRIX_RUN_REDISPATCH_SECONDS = env.int("SIMTRIX_RUN_REDISPATCH_SECONDS", default=30)
# Transient failures of a planned action: exponential backoff with jitter, base/cap in seconds.
SIMTRIX_RUN_BACKOFF_BASE_SECONDS = env.float("SIMTRIX_RUN_BACKOFF_BASE_SECONDS", default=5.0)
SIMTRIX_RUN_BACKOFF_CAP_SECONDS = env.float("SIMTRIX_RUN_BACKOFF_CAP_SECONDS", default=600.0)
SIMTRIX_RUN_MAX_ATTEMPTS = env.int("SIMTRIX_RUN_MAX_ATTEMPTS", default=12)
# /readyz answers 503 when the dispatcher's last pass is older than this.
SIMTRIX_DISPATCHER_STALE_SECONDS = env.int("SIMTRIX_DISPATCHER_STALE_SECONDS", default=30)

# --- API -----------------------------------------------------------------------------------

REST_FRAMEWORK: dict[str, Any] = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "SIMtrix bridge API",
    "DESCRIPTION": "The API the SIMtrix Android bridge app uses to report calls.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env.str("SIMTRIX_LOG_LEVEL", default="INFO")},
}
