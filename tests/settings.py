"""Settings for the test suite: the application's settings with per-run folders.

Each test process (and each xdist worker) gets its own folder for media files, the filesystem
broker and the SQLite test database, and its own Redis key prefix, so parallel runs and the real
Celery worker a test starts never see another run's messages. A worker started by a test inherits
the environment, and with it the same folder and ``LLMHUB_TEST_WORKER_DB``.
"""

import os
import tempfile
from pathlib import Path

os.environ.setdefault("LLMHUB_ENV", "test")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault(
    "LLMHUB_TEST_RUN_ROOT", tempfile.mkdtemp(prefix=f"llmhub-test-{os.getpid()}-")
)

from llmhub.settings import *  # noqa: F403 - the test settings extend the real ones
from llmhub.settings import DATABASES

TEST_RUN_DIR = Path(os.environ["LLMHUB_TEST_RUN_ROOT"]) / os.environ.get(
    "PYTEST_XDIST_WORKER", "main"
)
TEST_RUN_DIR.mkdir(parents=True, exist_ok=True)

MEDIA_ROOT = TEST_RUN_DIR / "media"
LLMHUB_CACHE_DIR = TEST_RUN_DIR / "cache"
BROKER_DIR = TEST_RUN_DIR / "broker"
CELERY_BROKER_PREFIX = f"llmhub-test-{TEST_RUN_DIR.parent.name}-{TEST_RUN_DIR.name}:"
VAR_DIR = TEST_RUN_DIR

if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    DATABASES["default"]["TEST"] = {"NAME": str(TEST_RUN_DIR / "test.sqlite3")}
# A worker process started by a test must use the test database, not the development one.
if os.environ.get("LLMHUB_TEST_WORKER_DB"):
    DATABASES["default"]["NAME"] = os.environ["LLMHUB_TEST_WORKER_DB"]

JOB_HEARTBEAT_SECONDS = 1
JOB_STALE_AFTER_SECONDS = 5

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # speed, tests only
DEBUG = False
# The inference processes the serving tests start listen on 127.0.0.1 (external engines too).
LLMHUB_ALLOW_PRIVATE_URLS = True
# WhiteNoise otherwise walks every static file each time a test client loads the middleware
# (once per client); with autorefresh it looks a file up only when a page asks for it.
WHITENOISE_AUTOREFRESH = True
