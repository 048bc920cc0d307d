"""Settings, all from the environment (12-factor). Every variable is documented in docs/configuration.md.

The embedded default (no variable set) is a quick start: SQLite under var/, tasks run eagerly
in-process, local-memory cache, files under var/hub-data. Production sets DATABASE_URL to
PostgreSQL, CELERY_BROKER_URL and REDIS_URL to Redis, and DJANGO_DEBUG=0 with a secret key.
"""

import json
import os
from datetime import timedelta
from importlib.util import find_spec
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if not value:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


DEBUG = env_bool("DJANGO_DEBUG", True)
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off")
    SECRET_KEY = "insecure-development-key-only-used-with-DJANGO_DEBUG-on"

ALLOWED_HOSTS = env_list(
    "DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"] if DEBUG else []
)
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

# HTTPS hardening (docs/operations.md): on by default when DEBUG is off; `check --deploy` is clean.
# Behind a TLS-terminating proxy that sets X-Forwarded-Proto (the compose nginx does), trust it.
if env_bool("DJANGO_BEHIND_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]  # probes speak plain HTTP inside the network
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", not DEBUG)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = os.environ.get("DJANGO_REFERRER_POLICY", "same-origin")
X_FRAME_OPTIONS = "DENY"
# hub_server/security.py: scripts, styles, images and requests of this host only; nothing inline
# (Swagger UI's data: images aside); never framed. Permissions-Policy: no powerful feature.
HUB_CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'self'; "
    "form-action 'self'; frame-ancestors 'none'"
)
HUB_PERMISSIONS_POLICY = (
    "camera=(), microphone=(), geolocation=(), payment=(), usb=(), magnetometer=(), "
    "gyroscope=(), accelerometer=()"
)

VAR_DIR = Path(os.environ.get("HUB_VAR_DIR", BASE_DIR / "var"))
HUB_DATA_DIR = Path(os.environ.get("HUB_DATA_DIR", VAR_DIR / "hub-data"))
HUB_REPO_URL = os.environ.get("HUB_REPO_URL", "https://github.com/adapter-hub/Hub.git")
HUB_REPO_BRANCH = os.environ.get("HUB_REPO_BRANCH", "master")
# A sync's clone or fetch is killed past this many seconds (docs/catalog-sync.md).
HUB_SYNC_FETCH_TIMEOUT_SECONDS = env_int("HUB_SYNC_FETCH_TIMEOUT_SECONDS", 120)
# A running sync whose process cannot be checked (another host, no PostgreSQL) counts as dead
# after this many seconds.
HUB_SYNC_STALE_SECONDS = env_int("HUB_SYNC_STALE_SECONDS", 7200)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "hub_server.catalog",
    "hub_server.uploads",
    "hub_server.accounts",
    "frontend",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "hub_server.security.SecurityHeadersMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last: turns a sign-in refused for a lockout into hub_server.security.lockout_response.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "hub_server.urls"
WSGI_APPLICATION = "hub_server.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "frontend" / "templates"],
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

DATABASE_URL = os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'db.sqlite3'}"
# Persistent connections: opening a PostgreSQL connection per request costs more than the query.
DATABASES = {
    "default": dj_database_url.parse(
        DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 600), conn_health_checks=True
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 30
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CACHES = {
        "default": {
            # Django's backend, reusing its redis client (see hub_server/cache_backends.py).
            "BACKEND": "hub_server.cache_backends.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": os.environ.get("CACHE_KEY_PREFIX", "hub"),
            # An unreachable or hung Redis costs a read this long at most, then the database
            # answers (hub_server/catalog/cache.py); throttles fail open.
            "OPTIONS": {
                "socket_connect_timeout": env_float("HUB_CACHE_SOCKET_TIMEOUT", 0.5),
                "socket_timeout": env_float("HUB_CACHE_SOCKET_TIMEOUT", 0.5),
            },
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "OPTIONS": {"MAX_ENTRIES": 20000},
        }
    }
# PREPARE hot catalogue reads once per PostgreSQL session (0 behind a transaction-mode pooler).
HUB_DB_SERVER_PREPARE = env_int("HUB_DB_SERVER_PREPARE", 1) != 0
# The rendered responses each web process keeps in memory, in MB of body + headers + key (0 turns
# it off). Without Redis it is the only response store.
HUB_RESPONSE_MEMO_MB = env_int("HUB_RESPONSE_MEMO_MB", 64)
# Staleness bounds of every cached read (docs/architecture.md): a catalogue change made by any
# process is served within HUB_CATALOG_RECHECK_SECONDS (each process re-reads the generation from
# the database at most that often); a cached response, and the list index, is at most
# HUB_RESPONSE_MAX_AGE seconds old whatever the catalogue does (download counts).
HUB_CATALOG_RECHECK_SECONDS = env_float("HUB_CATALOG_RECHECK_SECONDS", 2.0)
HUB_RESPONSE_MAX_AGE = env_float("HUB_RESPONSE_MAX_AGE", 300.0)
# The list index's own age bound (its download counts and -downloads ranks); a rebuild of 100,000
# cards costs ~4.5 s of a core, so a large hub may want it longer than responses'.
HUB_SEARCH_INDEX_MAX_AGE = env_float("HUB_SEARCH_INDEX_MAX_AGE", HUB_RESPONSE_MAX_AGE)
# After a failed call, the shared cache (Redis) is left out of reads for this many seconds.
HUB_CACHE_RETRY_SECONDS = env_float("HUB_CACHE_RETRY_SECONDS", 5.0)
# Searches (`?q=`) answered from an index in each web process's memory (hub_server/api/
# search_index.py), rebuilt when the catalogue changes: in the request up to this many adapters,
# in a background thread above it (the SQL search answers meanwhile).
HUB_SEARCH_INDEX = env_bool("HUB_SEARCH_INDEX", True)
HUB_SEARCH_INDEX_INLINE_MAX = env_int("HUB_SEARCH_INDEX_INLINE_MAX", 20_000)

CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "")
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
# The queue tasks are sent to (and workers consume by default).
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("CELERY_TASK_DEFAULT_QUEUE") or "celery"
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND") or None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A worker child whose resident memory passed this after a task is replaced by a fresh one (the
# base models it loaded go with it); 0 turns it off. Applies to the prefork pool (compose's).
HUB_WORKER_MAX_MEMORY_MB = env_int("HUB_WORKER_MAX_MEMORY_MB", 1280)
CELERY_WORKER_MAX_MEMORY_PER_CHILD = HUB_WORKER_MAX_MEMORY_MB * 1024 or None  # KiB
# A message a dead worker never acknowledged goes back to the queue after this many seconds (Redis);
# longer than the longest task, or a running task would be delivered twice.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env_int(
        "HUB_BROKER_VISIBILITY_TIMEOUT", env_int("HUB_VALIDATION_TIME_LIMIT", 600) + 300
    ),
    # A broker that does not answer makes a send fail in seconds, not hang the request.
    "socket_connect_timeout": 3,
}
CELERY_BEAT_SCHEDULE = {
    "sync-hub": {
        "task": "hub_server.catalog.tasks.sync_hub_task",
        "schedule": float(env_int("HUB_SYNC_INTERVAL_SECONDS", 3600)),
    },
    # Uploads whose task never reached the broker (it was down), whose claim expired (the worker
    # died) or whose message was lost: queued again (docs/uploads.md, "Never stuck").
    "requeue-stuck-uploads": {
        "task": "hub_server.uploads.tasks.requeue_stuck_uploads_task",
        "schedule": float(env_int("HUB_UPLOAD_SWEEP_SECONDS", 30)),
    },
    "purge-rejected-uploads": {
        "task": "hub_server.uploads.tasks.purge_rejected_uploads_task",
        "schedule": 3600.0,
    },
}
# Mirroring of linked adapter files; scheduled once its module exists, so beat never sends a task
# that no worker knows.
if find_spec("hub_server.catalog.mirror_tasks") is not None:
    CELERY_BEAT_SCHEDULE["mirror-files"] = {
        "task": "hub_server.catalog.mirror_tasks.mirror_files_task",
        "schedule": float(env_int("HUB_MIRROR_INTERVAL_SECONDS", 21600)),
    }

# The pages' sign-in (frontend/urls.py, Django's auth views).
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "my-adapters"
LOGOUT_REDIRECT_URL = "home"

# Password guessing (django-axes, docs/configuration.md): every path that checks a password (the
# sign-in form, the admin, HTTP Basic on the API) goes through authenticate(), where Axes counts
# failures per account and per client address, separately; at HUB_LOGIN_FAILURE_LIMIT failures
# within HUB_LOGIN_LOCKOUT_MINUTES that account or address is refused (429, even with the right
# password) until HUB_LOGIN_LOCKOUT_MINUTES after its last counted failure.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_ENABLED = env_bool("HUB_LOGIN_LOCKOUT", True)
AXES_FAILURE_LIMIT = env_int("HUB_LOGIN_FAILURE_LIMIT", 10)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("HUB_LOGIN_LOCKOUT_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False  # a lock ends when it says it will
AXES_RESET_ON_SUCCESS = False  # signing in to one's own account must not reset an address's count
AXES_DISABLE_ACCESS_LOG = True  # no row per successful sign-in (Basic auth signs in per request)
AXES_CLIENT_IP_CALLABLE = "hub_server.security.client_ip"
AXES_LOCKOUT_CALLABLE = "hub_server.security.lockout_response"
AXES_HTTP_RESPONSE_CODE = 429
AXES_VERBOSE = False
# How many proxies in front append to X-Forwarded-For (the compose nginx: 1; a load balancer in
# front of it: 2). Client addresses for lockouts and API throttles are read that many entries
# from the right; 0 ignores the header (the client could write anything into it).
HUB_TRUSTED_PROXIES = env_int("HUB_TRUSTED_PROXIES", 0)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns on every request otherwise
WHITENOISE_USE_FINDERS = DEBUG
STATICFILES_DIRS = [p for p in [BASE_DIR / "frontend" / "static"] if p.exists()]

# Adapter files: content-addressed, through Django's storage API. HUB_STORAGE=s3 switches to
# S3-compatible object storage (django-storages) configured by the AWS_* variables.
HUB_STORAGE = os.environ.get("HUB_STORAGE", "local")
HUB_FILES_DIR = Path(os.environ.get("HUB_FILES_DIR", HUB_DATA_DIR / "files"))
if HUB_STORAGE == "s3":
    _adapter_files = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": os.environ.get("AWS_STORAGE_BUCKET_NAME", "adapterhub"),
            "endpoint_url": os.environ.get("AWS_S3_ENDPOINT_URL") or None,
            "access_key": os.environ.get("AWS_ACCESS_KEY_ID"),
            "secret_key": os.environ.get("AWS_SECRET_ACCESS_KEY"),
            "region_name": os.environ.get("AWS_S3_REGION_NAME") or None,
            "default_acl": None,
            "file_overwrite": False,
            "querystring_auth": True,
        },
    }
else:
    _adapter_files = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(HUB_FILES_DIR)},
    }
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "adapter_files": _adapter_files,
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"}
    if not DEBUG
    else {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# With S3, downloads answer with a redirect to a presigned URL of the object, valid this many
# seconds (the client downloads from S3, not through gunicorn); signed for the public endpoint when
# the one the hub uses is internal (compose's MinIO). Off: the hub streams the bytes itself.
HUB_S3_DOWNLOAD_REDIRECT = env_bool("HUB_S3_DOWNLOAD_REDIRECT", True)
HUB_S3_URL_EXPIRY_SECONDS = env_int("HUB_S3_URL_EXPIRY_SECONDS", 300)
HUB_S3_PUBLIC_ENDPOINT_URL = os.environ.get("HUB_S3_PUBLIC_ENDPOINT_URL", "")
# With nginx in front, downloads are handed off with X-Accel-Redirect to this internal prefix.
HUB_ACCEL_REDIRECT_PREFIX = os.environ.get("HUB_ACCEL_REDIRECT_PREFIX", "")
# Largest external file the mirror downloads (bytes).
HUB_MIRROR_MAX_BYTES = env_int("HUB_MIRROR_MAX_BYTES", 1024**3)
# Public base URL of this hub (for absolute links in the legacy index and /hf/ when behind a proxy).
HUB_PUBLIC_URL = os.environ.get("HUB_PUBLIC_URL", "").rstrip("/")

REST_FRAMEWORK = {
    # Throttles key anonymous clients on the address HUB_TRUSTED_PROXIES proxies report (DRF's
    # default, None, would take X-Forwarded-For as the client wrote it).
    "NUM_PROXIES": HUB_TRUSTED_PROXIES,
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "hub_server.accounts.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    # DRF's throttles, failing open when their cache (Redis) is unreachable.
    "DEFAULT_THROTTLE_CLASSES": [
        "hub_server.api.throttling.AnonRateThrottle",
        "hub_server.api.throttling.UserRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": os.environ.get("API_THROTTLE_ANON", "600/min"),
        "user": os.environ.get("API_THROTTLE_USER", "3000/min"),
    },
}
SPECTACULAR_SETTINGS = {
    "TITLE": "AdapterHub API",
    "DESCRIPTION": "Browse, download and publish adapters for Hugging Face transformers.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI assets served from this host (drf-spectacular-sidecar), never from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

HUB_BASE_MODELS = json.loads(os.environ.get("HUB_BASE_MODELS") or "{}")
# Base models validators fetch on first use (hub_server/uploads/basemodel_cache.py): from this
# Hugging-Face-compatible endpoint ("" = never fetch), only ids matching the allow-list (fnmatch;
# empty = the catalogue's base models), into a cache bounded by bytes (least recently used out).
HUB_BASE_MODEL_ENDPOINT = os.environ.get("HUB_BASE_MODEL_ENDPOINT", "https://huggingface.co")
HUB_BASE_MODEL_ALLOW = env_list("HUB_BASE_MODEL_ALLOW", [])
# Empty: $HUB_DATA_DIR/base-models.
HUB_BASE_MODEL_CACHE_DIR = os.environ.get("HUB_BASE_MODEL_CACHE_DIR", "")
HUB_BASE_MODEL_CACHE_MAX_BYTES = env_int("HUB_BASE_MODEL_CACHE_MAX_BYTES", 20 * 1024**3)
# The files of one base model together (a larger model is refused, not fetched).
HUB_BASE_MODEL_MAX_BYTES = env_int("HUB_BASE_MODEL_MAX_BYTES", 5 * 1024**3)

# Contributor uploads (docs/uploads.md): caps on what a request stores and a worker validates.
HUB_UPLOAD_MAX_BYTES = env_int("HUB_UPLOAD_MAX_BYTES", 512 * 1024**2)
HUB_UPLOAD_MAX_FILES = env_int("HUB_UPLOAD_MAX_FILES", 16)
HUB_UPLOAD_MAX_UNCOMPRESSED_BYTES = env_int("HUB_UPLOAD_MAX_UNCOMPRESSED_BYTES", 2 * 1024**3)
HUB_UPLOAD_MAX_RATIO = float(os.environ.get("HUB_UPLOAD_MAX_RATIO") or 100)
HUB_VALIDATION_TIME_LIMIT = env_int("HUB_VALIDATION_TIME_LIMIT", 600)
# Each JSON file of an upload (adapter_config.json, head_config.json, ...) is at most this long.
HUB_UPLOAD_MAX_JSON_BYTES = env_int("HUB_UPLOAD_MAX_JSON_BYTES", 1024**2)
# YAML written by users (upload cards, every file of the Hub repository): bytes per blob, and per
# string in it (catalog/safe_yaml.py; aliases and anchors are always refused).
HUB_YAML_MAX_BYTES = env_int("HUB_YAML_MAX_BYTES", 256 * 1024)
HUB_CARD_FIELD_MAX_BYTES = env_int("HUB_CARD_FIELD_MAX_BYTES", 16 * 1024)
# A worker validating an upload holds a claim on it for this many seconds, renewed every third of
# it while the validation runs; a claim that expired (its worker died) may be taken again.
HUB_VALIDATION_LEASE_SECONDS = env_int("HUB_VALIDATION_LEASE_SECONDS", 60)
# How often beat sweeps for uploads to queue again (broker was down, claim expired, message lost).
HUB_UPLOAD_SWEEP_SECONDS = env_int("HUB_UPLOAD_SWEEP_SECONDS", 30)
# Per-user upload quotas over a sliding window (0 turns one off; staff are exempt): 429 past them.
HUB_UPLOAD_QUOTA_COUNT = env_int("HUB_UPLOAD_QUOTA_COUNT", 100)
HUB_UPLOAD_QUOTA_BYTES = env_int("HUB_UPLOAD_QUOTA_BYTES", 10 * 1024**3)
HUB_UPLOAD_QUOTA_WINDOW_HOURS = env_int("HUB_UPLOAD_QUOTA_WINDOW_HOURS", 24)
# Archives of rejected uploads are deleted this many days after the rejection (0: kept forever);
# the upload's row and report stay.
HUB_REJECTED_RETENTION_DAYS = env_int("HUB_REJECTED_RETENTION_DAYS", 30)
# How long a Hugging Face Hub commit (/hf/api/models/.../commit/main) waits for its validation
# before answering that it is still running (the upload goes on; its status URL says when it ends).
HUB_HF_COMMIT_WAIT = float(os.environ.get("HUB_HF_COMMIT_WAIT") or 300)
# Where published cards are committed: a local git work tree (default: the demo repository).
HUB_PUBLISH_REPO = os.environ.get("HUB_PUBLISH_REPO", "")
# Empty: one branch per upload (upload/<id>); a name: commit there (the demo commits to main).
HUB_PUBLISH_BRANCH = os.environ.get("HUB_PUBLISH_BRANCH", "")
HUB_PUBLISH_REMOTE = os.environ.get("HUB_PUBLISH_REMOTE", "")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
