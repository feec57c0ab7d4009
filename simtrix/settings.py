"""SIMtrix settings: everything that differs between deployments comes from the environment.

The variable names are fixed by the operations contract (docs/operations.md).
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import environ
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

from simtrix.logs import logging_config
from simtrix.sentry import sentry_init

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

# --- Secrets at rest (common/crypto.py): Fernet keys for the Bitrix24 credentials ------------
# Comma-separated: the first encrypts, every one decrypts. Rotate by putting a new key first,
# restarting, running `manage.py secrets_rotate`, then dropping the old key. A new key:
#   python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"
# In development (DJANGO_DEBUG=1, no key set) one is derived from the secret key: `make run`
# needs none, and its stored secrets stay readable for as long as DJANGO_SECRET_KEY is unchanged.
SIMTRIX_ENCRYPTION_KEYS = [k.strip() for k in env.list("SIMTRIX_ENCRYPTION_KEY", default=[])]
SIMTRIX_ENCRYPTION_KEYS = [key for key in SIMTRIX_ENCRYPTION_KEYS if key]
if not SIMTRIX_ENCRYPTION_KEYS:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SIMTRIX_ENCRYPTION_KEY is not set: set it to one or more comma-separated Fernet keys "
            '(see README, "Secrets at rest"), or DJANGO_DEBUG=1 for local development.'
        )
    SIMTRIX_ENCRYPTION_KEYS = [
        base64.urlsafe_b64encode(
            hashlib.sha256(f"simtrix-encryption:{SECRET_KEY}".encode()).digest()
        ).decode()
    ]
for _position, _key in enumerate(SIMTRIX_ENCRYPTION_KEYS, start=1):
    try:
        Fernet(_key)
    except ValueError:
        raise ImproperlyConfigured(
            f"SIMTRIX_ENCRYPTION_KEY: key {_position} is not a Fernet key (32 url-safe "
            "base64-encoded bytes; make one as the README says)."
        ) from None

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
    # django.contrib.admin; its admin.site (a tenant's) asks for two factors (tenants.twofactor).
    "tenants.apps.TenantAdminConfig",
    "django.contrib.staticfiles",
    # Login lockout: public only, so every tenant's failures are one table the operators see
    # (a tenant's search_path falls back to public); names are tenant-qualified (tenants.logins).
    "axes",
    # Two-factor devices live next to their users: public for operators, each tenant's schema.
    # accounts.TotpDevice, not django_otp.plugins.otp_totp: its key is encrypted at rest.
    "django_otp",
    "accounts",
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
    "tenants.apps.TenantAdminConfig",
    "django_otp",
    "accounts",
    "crm",
    "calls",
    "scenarios",
    "commands",
    "sms",
    "reports",
    "alerts",
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
    # First: every answer carries its X-Request-ID, even a host no tenant owns (simtrix.logs).
    "simtrix.request_id.RequestIdMiddleware",
    # Security headers (HSTS, nosniff, CSP) on every answer, static files, probes and unknown
    # hosts' 404s included. Neither reads the Host of a probe (SECURE_REDIRECT_EXEMPT), and the
    # SSL redirect of other paths comes before the tenant lookup.
    "django.middleware.security.SecurityMiddleware",
    "simtrix.csp.ContentSecurityPolicyMiddleware",
    # /healthz, /readyz, /metrics by path, before any host check or tenant lookup: a probe's
    # Host is rarely a tenant's, and a fresh install has none (simtrix.probes).
    "simtrix.probes.ProbeMiddleware",
    # Serves the admin's static files under gunicorn without a separate web server.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "tenants.middleware.ActiveTenantMiddleware",
    # The admin on the tenant's clock (its time zone), the bridge API on UTC offsets.
    "tenants.middleware.TenantClockMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # request.user.is_verified(): the session passed the second factor (tenants.twofactor).
    "django_otp.middleware.OTPMiddleware",
    # The admin in the language the user chose, wherever they log in (accounts.language).
    "accounts.language.UserLanguageMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: turns a locked-out login into the lockout page (tenants.logins).
    "axes.middleware.AxesMiddleware",
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
# The admin in English or Polish: the user's choice (the switcher in the header, a cookie),
# else the browser's; the bridge API's errors follow Accept-Language. locale/ holds SIMtrix's
# own Polish (checked complete by simtrix/tests/test_translations.py).
LANGUAGES = [("en", "English"), ("pl", "Polski")]
LOCALE_PATHS = [BASE_DIR / "locale"]
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
    # Hashed, compressed names once collectstatic wrote its manifest (the image); plain names
    # without one (a checkout, `make run`, the tests): simtrix/staticfiles.py.
    "staticfiles": {"BACKEND": "simtrix.staticfiles.ManifestOrPlainStaticFilesStorage"},
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

# --- On the internet: TLS, cookies, headers, the proxy in front (README "Running behind a TLS
# proxy"). Production defaults whenever DJANGO_DEBUG is off; each can be turned off for a
# plain-http install on a LAN. `manage.py check --deploy` is clean with these defaults.
_PRODUCTION = not DEBUG
SESSION_COOKIE_SECURE = env.bool("SIMTRIX_SECURE_COOKIES", default=_PRODUCTION)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_SSL_REDIRECT = env.bool("SIMTRIX_SSL_REDIRECT", default=_PRODUCTION)
# Probes and the metrics scraper may speak plain http from inside the network: a redirect would
# fail them and protect nothing (a request is sent in full before any redirect answers it).
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SECURE_HSTS_SECONDS = env.int("SIMTRIX_HSTS_SECONDS", default=31_536_000 if _PRODUCTION else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True  # tenants are subdomains of the operators' host
# Preloading writes the domain (and every subdomain) into browsers for months: an operator's
# decision, never a default. Django's deploy check asks for it (W021); off, it is silenced.
SECURE_HSTS_PRELOAD = env.bool("SIMTRIX_HSTS_PRELOAD", default=False)
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# The header a TLS-terminating proxy sets, e.g. "X-Forwarded-Proto" (value https) or
# "X-Forwarded-Ssl=on". Only behind a proxy that overwrites it: a client could forge it otherwise.
_proxy_ssl_header, _, _proxy_ssl_value = env.str("SIMTRIX_PROXY_SSL_HEADER", default="").partition(
    "="
)
if _proxy_ssl_header.strip():
    SECURE_PROXY_SSL_HEADER = (
        "HTTP_" + _proxy_ssl_header.strip().upper().replace("-", "_"),
        _proxy_ssl_value.strip() or "https",
    )
# Comma-separated origins whose forms may post here, e.g. https://*.simtrix.example (every tenant).
CSRF_TRUSTED_ORIGINS = env.list("SIMTRIX_CSRF_TRUSTED_ORIGINS", default=[])
# No inline script anywhere (the admin's and Swagger UI's scripts are files); inline styles stay
# allowed, the admin's templates use style attributes. "" turns the header off.
SIMTRIX_CONTENT_SECURITY_POLICY = env.str(
    "SIMTRIX_CONTENT_SECURITY_POLICY",
    default="default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; object-src 'none'; "
    "base-uri 'self'; form-action 'self'; frame-ancestors 'none'",
)

# --- The client's address (common/http.py: failed device tokens, login lockout) -------------
# How many reverse proxies of the operator's own stand in front of the server; the address is
# then the Nth entry from the right of X-Forwarded-For. 0 (no proxy): REMOTE_ADDR, the header
# ignored (a client could write any address into it).
SIMTRIX_TRUSTED_PROXY_COUNT = env.int("SIMTRIX_TRUSTED_PROXY_COUNT", default=0)
# How Bitrix24 reaches a tenant: the events handler SIMtrix binds is
# <scheme>://<tenant's primary domain>[:<port>]/bitrix24/events/ (the demo: http and 8000).
SIMTRIX_PUBLIC_SCHEME = env.str("SIMTRIX_PUBLIC_SCHEME", default="https")
SIMTRIX_PUBLIC_PORT = env.str("SIMTRIX_PUBLIC_PORT", default="")
# The bridge API's address a device's QR code carries, `{host}` standing for the tenant's host
# (e.g. "https://{host}/api/bridge/v1/" behind a TLS proxy); empty: the address the admin was
# opened by.
SIMTRIX_BRIDGE_PUBLIC_URL = env.str("SIMTRIX_BRIDGE_PUBLIC_URL", default="")
# A phone's long poll for commands reads the database this often even when no wake came
# (commands.wakeup). The default, the longest wait, means never within a poll while Redis
# wakes them: 500 phones reading every 10 s cost 13 % of a core in reconnections
# (bench/commands_longpoll.py); a wake lost on its way is delivered by the phone's next poll.
SIMTRIX_COMMANDS_CHECK_SECONDS = env.float("SIMTRIX_COMMANDS_CHECK_SECONDS", default=30.0)

# --- Logins: lockout (django-axes) and two factors (django-otp) on both admins -------------
# tenants/logins.py and tenants/twofactor.py; README "Logins".
AUTHENTICATION_BACKENDS = [
    "tenants.logins.LockoutBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# Locked: the same user from the same address after this many wrong passwords, for the cool-off;
# another address, or the same name at another tenant, still logs in.
AXES_FAILURE_LIMIT = env.int("SIMTRIX_LOGIN_FAILURE_LIMIT", default=5)
_login_cooloff_minutes = env.int("SIMTRIX_LOGIN_COOLOFF_MINUTES", default=15)
# In hours, a float; 0 minutes: locked until an operator lifts it.
AXES_COOLOFF_TIME = _login_cooloff_minutes / 60 if _login_cooloff_minutes > 0 else None
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_USERNAME_CALLABLE = "tenants.logins.axes_username"  # "alpha:admin", "public:operator"
AXES_CLIENT_IP_CALLABLE = "common.http.client_ip"  # honours SIMTRIX_TRUSTED_PROXY_COUNT
AXES_LOCKOUT_CALLABLE = "tenants.logins.lockout_response"
# Shown on the operators' admin only (tenants/admin.py): on a tenant's it would list everyone's.
AXES_ENABLE_ADMIN = False
AXES_ENABLE_ACCESS_FAILURE_LOG = True
# Successful logins are in the session table already; axes' log of them names no tenant.
AXES_DISABLE_ACCESS_LOG = True
AXES_SENSITIVE_PARAMETERS = ["username", "ip_address", "otp_token"]
# No banner at start-up: management commands keep stderr for their one-line error.
AXES_VERBOSE = False
# Operators (public host) must use an authenticator app; a tenant's admins must when the
# operators tick "Require two-factor" on the tenant.
SIMTRIX_REQUIRE_OPERATOR_2FA = env.bool("SIMTRIX_REQUIRE_OPERATOR_2FA", default=False)
# Device keys are never shown back in the admin (accounts.admin); a user enrols on
# "Two-factor authentication". (Also honoured by django-otp's own admins, none installed.)
OTP_ADMIN_HIDE_SENSITIVE_DATA = True

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
# Celery closes the database connection after every task unless told to reuse it: each run
# then connected anew (a PostgreSQL backend forked per task). Reused for this many tasks, and
# closed as a request's is when too old or broken (simtrix.celery).
CELERY_DB_REUSE_MAX = env.int("CELERY_DB_REUSE_MAX", default=500)
CELERY_TASK_TIME_LIMIT = 120
CELERY_TASK_SOFT_TIME_LIMIT = 90
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_DEFAULT_QUEUE = env.str("CELERY_TASK_DEFAULT_QUEUE", default="celery")
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
# Redis serves priority 0 first (kombu's steps: 0, 3, 6, 9): the runs a ringing phone waits for
# are sent with it (scenarios.outbox.LIVE_PRIORITY), a backlog's lane with 3 (LANE_PRIORITY),
# everything else with this one.
CELERY_TASK_DEFAULT_PRIORITY = 6
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
    # Each phone's number as a Bitrix24 external line (a request only when something changed).
    "commands-lines-sync": {"task": "commands.lines_sync_all", "schedule": 3600.0},
    # Users' Bitrix24 work-day status, for tenants that route by it (TenantSchedule).
    "routing-availability": {"task": "scenarios.availability_refresh_all", "schedule": 60.0},
    # Alerts: the tenants with alerts on and someone to tell (TenantSchedule.alerts) checked.
    "alerts-check": {"task": "alerts.check_all", "schedule": 60.0},
}
# A tenant's alerts check holds a lease this long: longer than a task may run, so a worker that
# died mid-check is taken over after it and two checks never overlap.
SIMTRIX_ALERTS_LEASE_SECONDS = env.int("SIMTRIX_ALERTS_LEASE_SECONDS", default=150)
SIMTRIX_RUN_LEASE_SECONDS = env.int("SIMTRIX_RUN_LEASE_SECONDS", default=180)
SIMTRIX_RUN_REDISPATCH_SECONDS = env.int("SIMTRIX_RUN_REDISPATCH_SECONDS", default=30)
# Transient failures of a planned action: exponential backoff with jitter, base/cap in seconds.
SIMTRIX_RUN_BACKOFF_BASE_SECONDS = env.float("SIMTRIX_RUN_BACKOFF_BASE_SECONDS", default=5.0)
SIMTRIX_RUN_BACKOFF_CAP_SECONDS = env.float("SIMTRIX_RUN_BACKOFF_CAP_SECONDS", default=600.0)
SIMTRIX_RUN_MAX_ATTEMPTS = env.int("SIMTRIX_RUN_MAX_ATTEMPTS", default=12)
# A crowded portal's backlog runs together, its requests sharing batches (scenarios.lane,
# crm.coalesce): how many runs at once (each with a database connection); off only to measure.
SIMTRIX_LANE_THREADS = env.int("SIMTRIX_LANE_THREADS", default=24)
SIMTRIX_BITRIX24_COALESCE = env.bool("SIMTRIX_BITRIX24_COALESCE", default=True)
# /readyz answers 503 when the dispatcher's last pass is older than this.
SIMTRIX_DISPATCHER_STALE_SECONDS = env.int("SIMTRIX_DISPATCHER_STALE_SECONDS", default=30)

# --- Outbound addresses (crm/outbound.py): where SIMtrix connects on a tenant's behalf -------
# Portal and OAuth addresses must be public https:// hosts. Private and loopback networks (a
# portal on the LAN, the demo's sandbox on 127.0.0.1) only when the operator allows them;
# link-local (cloud metadata), multicast and reserved addresses never.
SIMTRIX_ALLOW_PRIVATE_ADDRESSES = env.bool("SIMTRIX_ALLOW_PRIVATE_ADDRESSES", default=False)
# Plain http:// portals (on premises without TLS): the webhook secret then travels in clear.
SIMTRIX_ALLOW_HTTP_PORTALS = env.bool("SIMTRIX_ALLOW_HTTP_PORTALS", default=False)

# --- Email (the alerts' optional address) --------------------------------------------------
# A URL as django-environ reads it: smtp+tls://user:password@smtp.example.com:587 (STARTTLS),
# smtp+ssl://...:465, smtp://host:25, consolemail:// (printed by the worker), dummymail://
# (dropped). Unset: the console, so nothing leaves the machine until the operator says where
# mail goes. The password percent-encoded (@ is %40).
try:
    _email = env.email_url_config(
        env.str("SIMTRIX_EMAIL_URL", default="").strip() or "consolemail://"
    )
except ImproperlyConfigured as exc:
    raise ImproperlyConfigured(
        f"SIMTRIX_EMAIL_URL: {exc} (e.g. smtp+tls://user:password@smtp.example.com:587)"
    ) from None
EMAIL_BACKEND = _email["EMAIL_BACKEND"]
EMAIL_HOST = _email.get("EMAIL_HOST") or "localhost"
EMAIL_PORT = _email.get("EMAIL_PORT") or 25
EMAIL_HOST_USER = _email.get("EMAIL_HOST_USER") or ""
EMAIL_HOST_PASSWORD = _email.get("EMAIL_HOST_PASSWORD") or ""
EMAIL_USE_TLS = bool(_email.get("EMAIL_USE_TLS"))
EMAIL_USE_SSL = bool(_email.get("EMAIL_USE_SSL"))
DEFAULT_FROM_EMAIL = env.str("SIMTRIX_EMAIL_FROM", default="SIMtrix <simtrix@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
EMAIL_TIMEOUT = env.int("SIMTRIX_EMAIL_TIMEOUT", default=20)

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

# --- Watching it: logs, metrics, error tracking (simtrix/logs.py, metrics.py, sentry.py) ------

# Time, level, logger, tenant, call and request ids on every line; `json` for a log shipper.
LOGGING = logging_config(
    log_format=env.str("SIMTRIX_LOG_FORMAT", default="text"),
    level=env.str("SIMTRIX_LOG_LEVEL", default="INFO"),
)
# GET /metrics answers only `Authorization: Bearer <this>`; unset, it is a 404.
SIMTRIX_METRICS_TOKEN = env.str("SIMTRIX_METRICS_TOKEN", default="")
SENTRY_DSN = env.str("SENTRY_DSN", default="")
sentry_init(
    dsn=SENTRY_DSN,
    environment=env.str("SENTRY_ENVIRONMENT", default=""),
    release=env.str("SENTRY_RELEASE", default=""),
    traces_sample_rate=env.float("SENTRY_TRACES_SAMPLE_RATE", default=0.0),
)
