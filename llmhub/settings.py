"""Django settings, read from the environment.

Nothing set means the embedded development default: SQLite, a filesystem Celery broker and local
media files under ``var/``. ``LLMHUB_ENV=production`` turns on the production posture (DEBUG off,
secure cookies, HSTS, required SECRET_KEY and ALLOWED_HOSTS) so that
``manage.py check --deploy`` is clean. Each ``X`` may also be given as ``X_FILE`` (a path whose
contents are the value), for secrets mounted as files.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env(name: str, default: str | None = None) -> str | None:
    """The value of ``name``, or of the file named by ``name_FILE``, or ``default``."""
    if name in os.environ:
        return os.environ[name]
    file_path = os.environ.get(f"{name}_FILE")
    if file_path:
        try:
            return Path(file_path).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE={file_path!r} cannot be read: {exc}") from exc
    return default


def env_bool(name: str, default: bool) -> bool:
    value = env(name)
    if value is None or value == "":
        return default
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (true/false), not {value!r}")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    value = env(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, not {value!r}") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name} must be >= {minimum}, not {number}")
    return number


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    value = env(name)
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, not {value!r}") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name} must be >= {minimum}, not {number}")
    return number


def env_list(name: str, default: list[str]) -> list[str]:
    value = env(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


LLMHUB_ENV = env("LLMHUB_ENV", "development")
if LLMHUB_ENV not in {"development", "production", "test"}:
    raise ImproperlyConfigured(
        f"LLMHUB_ENV must be development, production or test, not {LLMHUB_ENV!r}"
    )
PRODUCTION = LLMHUB_ENV == "production"

# Everything the embedded default writes (database, broker folders, media) lives here.
VAR_DIR = Path(env("LLMHUB_VAR_DIR", str(BASE_DIR / "var"))).resolve()

if PRODUCTION:
    SECRET_KEY = env("SECRET_KEY")
    if not SECRET_KEY or len(SECRET_KEY) < 50:
        raise ImproperlyConfigured("SECRET_KEY must be set (50+ random characters) in production")
    ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", [])
    if not ALLOWED_HOSTS:
        raise ImproperlyConfigured("ALLOWED_HOSTS must be set in production")
    DEBUG = env_bool("DEBUG", False)
else:
    # A fixed development key: never used in production, where SECRET_KEY is required.
    SECRET_KEY = env("SECRET_KEY", "dev-insecure-" + "x" * 50)
    ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "testserver"])
    DEBUG = env_bool("DEBUG", LLMHUB_ENV == "development")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "llmhub",
    "projects",
    "datasets_app",
    "training",
    "evaluation",
    "serving",
    "frontend",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # NUL bytes in the URL or query string: a 400 before any view (llmhub/api/middleware.py).
    "llmhub.api.middleware.RejectNulMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "llmhub.urls"
WSGI_APPLICATION = "llmhub.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "frontend.context_processors.navigation",
            ],
        },
    },
]

# Database: SQLite by default, PostgreSQL (psycopg 3) when DATABASE_URL is set.
DATABASE_URL = env("DATABASE_URL")
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
else:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": VAR_DIR / "llmhub.sqlite3",
            # Web and worker write to one file: wait for locks instead of failing at once.
            "OPTIONS": {
                "timeout": 30,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
            },
            # A file (not memory) so a real worker process can share the test database.
            "TEST": {"NAME": env("LLMHUB_TEST_SQLITE", str(VAR_DIR / "test-llmhub.sqlite3"))},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"
LLMHUB_ALLOW_SIGNUP = env_bool("LLMHUB_ALLOW_SIGNUP", True)

LANGUAGE_CODE = "en-us"
TIME_ZONE = env("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env("STATIC_ROOT", str(VAR_DIR / "static")))
# Plotly.js is served from the installed plotly package: no CDN, works offline.
STATICFILES_DIRS = [
    ("plotly", Path(importlib.util.find_spec("plotly").origin).parent / "package_data"),
]
if not PRODUCTION:
    # Serve static files straight from the apps and packages (no collectstatic in development).
    WHITENOISE_USE_FINDERS = True
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)
MEDIA_ROOT = Path(env("MEDIA_ROOT", str(VAR_DIR / "media")))
MEDIA_URL = "media/"  # never served directly: downloads go through permission-checked views

STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if PRODUCTION
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}
# S3-compatible storage: set LLMHUB_STORAGE_BACKEND=storages.backends.s3.S3Storage and its
# AWS_* settings (django-storages); workers on other machines then share files through it.
if env("LLMHUB_STORAGE_BACKEND"):
    STORAGES["default"] = {"BACKEND": env("LLMHUB_STORAGE_BACKEND")}
# Workers copy stored files here when the storage is not on the local disk.
LLMHUB_CACHE_DIR = Path(env("LLMHUB_CACHE_DIR", str(VAR_DIR / "cache")))

# Uploads: anything over 2.5 MB is streamed to a temporary file, never held in memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
FILE_UPLOAD_TEMP_DIR = env("FILE_UPLOAD_TEMP_DIR")
LLMHUB_MAX_UPLOAD_BYTES = env_int("LLMHUB_MAX_UPLOAD_BYTES", 2 * 1024**3, minimum=1)
# Ingest: an upload may expand (gunzipped, or a Parquet file decoded) to at most this many
# bytes, and at most this many times its compressed size (real text gzips 3-10x; a bomb
# 1,000x). Leftovers of interrupted uploads and killed data jobs are swept once this old.
LLMHUB_MAX_EXPANDED_BYTES = env_int("LLMHUB_MAX_EXPANDED_BYTES", 2 * 1024**3, minimum=1)
LLMHUB_MAX_EXPANSION_RATIO = env_int("LLMHUB_MAX_EXPANSION_RATIO", 100, minimum=2)
LLMHUB_UPLOAD_LEFTOVER_SECONDS = env_int("LLMHUB_UPLOAD_LEFTOVER_SECONDS", 6 * 3600, minimum=60)
# Base-model archives (a zip or tar of a model directory, uploaded under the upload limit):
# at most this many members, expanding to at most this many bytes.
LLMHUB_MAX_MODEL_ARCHIVE_MEMBERS = env_int("LLMHUB_MAX_MODEL_ARCHIVE_MEMBERS", 1000, minimum=1)
LLMHUB_MAX_MODEL_EXPANDED_BYTES = env_int(
    "LLMHUB_MAX_MODEL_EXPANDED_BYTES", 20 * 1024**3, minimum=1
)

# REST API
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "projects.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # The role table on every route (projects/api/permissions.py; viewsets declare actions).
    "DEFAULT_PERMISSION_CLASSES": [
        "rest_framework.permissions.IsAuthenticated",
        "projects.api.permissions.RoleActionPermission",
    ],
    # JSON with a depth limit, no NaN/Infinity and no NUL in any string (llmhub/api/parsers.py).
    "DEFAULT_PARSER_CLASSES": [
        "llmhub.api.parsers.SafeJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_PAGINATION_CLASS": "llmhub.api.pagination.StandardPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": [
        "llmhub.api.filters.BoundedFilterBackend",  # django-filter, numbers bounded
        "llmhub.api.filters.StrictOrderingFilter",  # unknown ?ordering= fields: a 400
        "rest_framework.filters.SearchFilter",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "llmhub.api.exceptions.exception_handler",
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "LLMHub API",
    "DESCRIPTION": (
        "Manage LLM projects end to end: teams, projects and goals, data, training, evaluation."
        " Authenticate with `Authorization: Bearer <token>` (create a token on your account"
        " page or at /api/v1/tokens/)."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Choice sets shared by several fields get one name each in the schema.
    "ENUM_NAME_OVERRIDES": {
        "JobStatusEnum": "llmhub.models.JobStatus",
        "RoleEnum": "projects.models.Role",
        "TaskTypeEnum": "projects.models.TaskType",
        "DataJobKindEnum": "datasets_app.models.DataJobKind",
        "TrainingKindEnum": "training.models.TrainingKind",
        "TrainingMethodEnum": "training.models.TrainingMethod",
        "BaseSourceEnum": "training.models.BaseSource",
        "StageEnum": "training.models.Stage",
        "BiasKindEnum": "evaluation.models.BiasKind",
        "SweepMethodEnum": [("grid", "Grid"), ("random", "Random")],
        "FinishStatusEnum": ["succeeded", "failed", "cancelled"],
        "EndpointStageEnum": "serving.models.EndpointStage",
        "EngineKindEnum": "serving.models.EngineKind",
        "BudgetPeriodEnum": "serving.models.BudgetPeriod",
        "ItemSourceEnum": "evaluation.feedback.models.ItemSource",
        "FeedbackTaskEnum": "evaluation.feedback.models.FeedbackTask",
        "CampaignStatusEnum": "evaluation.feedback.models.CampaignStatus",
    },
}

# Celery: a filesystem broker by default (one machine, nothing to run), Redis with REDIS_URL.
REDIS_URL = env("REDIS_URL")
CELERY_BROKER_URL = env("CELERY_BROKER_URL") or REDIS_URL or "filesystem://"
BROKER_DIR = Path(env("LLMHUB_BROKER_DIR", str(VAR_DIR / "broker")))
CELERY_BROKER_PREFIX = env("LLMHUB_BROKER_PREFIX", "")

# Training: processes per training job. 1 trains in the worker itself; N > 1 runs the job under
# torchrun with N ranks (set it to the number of GPUs of the worker's machine; gloo on CPU).
LLMHUB_TRAINING_PROCESSES = env_int("LLMHUB_TRAINING_PROCESSES", 1, minimum=1)
# Training: the largest model (parameters, estimated before launch) a job may build or load.
LLMHUB_MAX_MODEL_PARAMETERS = env_int("LLMHUB_MAX_MODEL_PARAMETERS", 20_000_000_000, minimum=1)

# Jobs: a running job whose heartbeat is older than this is considered dead.
JOB_HEARTBEAT_SECONDS = env_int("LLMHUB_JOB_HEARTBEAT_SECONDS", 2, minimum=1)
JOB_STALE_AFTER_SECONDS = env_int("LLMHUB_JOB_STALE_AFTER_SECONDS", 120, minimum=2)
JOB_SWEEP_INTERVAL_SECONDS = env_int("LLMHUB_JOB_SWEEP_INTERVAL_SECONDS", 30, minimum=1)
# A queued job whose message was sent longer ago than this and that no worker has claimed is
# sent again (its message may be lost: a Redis restart without persistence). A duplicate is
# harmless, the claim is a conditional update, so this only bounds how long a loss can last and
# how many duplicates a job waiting behind long work collects (one per interval).
JOB_RESEND_AFTER_SECONDS = env_int("LLMHUB_JOB_RESEND_AFTER_SECONDS", 300, minimum=2)
# A stopping worker (SIGTERM, Ctrl-C) asks its running jobs to stop and hands them back; one
# that has not stopped after this many seconds is handed back anyway and its process exits.
JOB_SHUTDOWN_GRACE_SECONDS = env_int("LLMHUB_JOB_SHUTDOWN_GRACE_SECONDS", 5, minimum=1)
# Every worker and every web process run the sweep on a timer of their own (concurrent sweeps
# are harmless), so recovery does not depend on one process being alive. Off: rely on beat/cron.
JOB_SWEEP_IN_PROCESS = env_bool("LLMHUB_JOB_SWEEP_IN_PROCESS", True)
# A launch first checks that the broker answers within this many seconds (else 503).
BROKER_CHECK_TIMEOUT_SECONDS = env_int("LLMHUB_BROKER_CHECK_TIMEOUT_SECONDS", 2, minimum=1)

# Serving: where the web process reaches the inference process (`manage.py serve`) for the
# playground. The inference process polls the database for endpoint and key changes every
# LLMHUB_SERVING_SYNC_SECONDS and writes its request log in batches every
# LLMHUB_SERVING_LOG_FLUSH_SECONDS; its engine settings (batching, queue, cache) are the
# LLMHUB_SERVING_* names of serving.engine.config.EngineSettings, read by `manage.py serve`.
LLMHUB_SERVING_URL = env("LLMHUB_SERVING_URL", "http://127.0.0.1:8001")
# The base URL applications use (a load balancer's, e.g. https://models.example.com), shown in
# the endpoint page's snippet; empty: LLMHUB_SERVING_URL.
LLMHUB_SERVING_PUBLIC_URL = env("LLMHUB_SERVING_PUBLIC_URL", "")
LLMHUB_SERVING_SYNC_SECONDS = env_float("LLMHUB_SERVING_SYNC_SECONDS", 1.0, minimum=0.05)
LLMHUB_SERVING_LOG_FLUSH_SECONDS = env_float("LLMHUB_SERVING_LOG_FLUSH_SECONDS", 0.5, minimum=0.01)
# URLs the server calls itself (an external engine's upstream; later AI raters and webhooks)
# must resolve to public addresses (llmhub/net.py); allowed in development for a local vLLM.
LLMHUB_ALLOW_PRIVATE_URLS = env_bool("LLMHUB_ALLOW_PRIVATE_URLS", DEBUG)
# GET /metrics (llmhub/metrics.py): with a token, scrapers send it as a bearer token; without
# one, only DEBUG or direct requests from loopback/private addresses are answered.
LLMHUB_METRICS_TOKEN = env("LLMHUB_METRICS_TOKEN", "")

# Security
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # the page scripts read it to send X-CSRFToken on fetch()
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if PRODUCTION:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
