"""The Django side of the inference process: what the engine serves, and where its records go.

The engine (``serving.engine``) knows nothing of Django. This module reads the database for it
and writes what it reports, always off the request path, in two daemon threads:

- the **poller** asks one cheap question every ``LLMHUB_SERVING_SYNC_SECONDS`` (has any endpoint
  or key changed? :func:`fingerprint`) and, when the answer moved, builds a fresh
  :class:`~serving.engine.types.Snapshot` (:func:`build_snapshot`: endpoints, the local
  directories of their versions, every serving key) and hands it to
  ``EngineState.apply``. It also rebuilds every ``refresh_seconds`` (30) whatever the
  fingerprint says, so key budgets used by other processes are seen, and purges request logs
  past their endpoint's retention once an hour (every inference process does, as every worker
  sweeps jobs: a purge is idempotent, and none depends on a beat process being alive).
- the **writer** takes the engine's records from :class:`RecordQueue` (``put`` never blocks; a
  full queue drops its oldest record and counts it) and writes them through
  ``serving.services.request_logs_ingest`` every ``LLMHUB_SERVING_LOG_FLUSH_SECONDS`` or every
  500 records. A failed write is retried once, then logged and dropped: the log is monitoring,
  and the inference process must keep answering when the database is away.

The copying of model files from remote storage (``llmhub.storage.local_directory``) happens in
the poller, before the snapshot reaches the engine, never on a request.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import hashlib
import hmac
import logging
import os
import threading
import time
from pathlib import Path

from django.conf import settings
from django.db import close_old_connections, connections
from django.db.models import Count, Max, Q, Sum
from django.utils import timezone

from serving.engine.types import (
    EndpointSpec,
    FeedbackRecord,
    KeySpec,
    RequestRecord,
    Snapshot,
    UpstreamSpec,
    VersionSpec,
)
from serving.models import Endpoint, EngineKind, ServingKey

logger = logging.getLogger(__name__)

_PLAYGROUND_MESSAGE = b"llmhub-serving-playground"
# For benchmarks only (bench/monitoring.py measures what the log costs): "off" drops every
# record the engine hands over, so nothing is written, not the log, its rollups, key usage
# or API feedback. Production never sets it.
REQUEST_LOG_SWITCH = "LLMHUB_SERVING_REQUEST_LOG"


def internal_token() -> str:
    """The bearer the web process sends for the playground (any endpoint of the project named
    in ``X-LLMHub-Project``, no limits). Derived from SECRET_KEY, which both processes share,
    so nothing has to be stored or handed over; the engine only ever sees its sha256."""
    return hmac.new(settings.SECRET_KEY.encode(), _PLAYGROUND_MESSAGE, hashlib.sha256).hexdigest()


def _epoch(value: dt.datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def fingerprint() -> tuple:
    """What decides whether the snapshot must be rebuilt: the services bump an endpoint's
    ``revision`` and ``updated_at`` on every change the engine must see (keys of its project
    included); the key counts and times catch a key made or revoked in a project whose
    endpoints were not touched, and counts catch deletions. Two aggregate queries, no rows."""
    endpoints = Endpoint.objects.aggregate(
        count=Count("id"), updated=Max("updated_at"), revisions=Sum("revision")
    )
    keys = ServingKey.objects.aggregate(
        count=Count("id"),
        created=Max("created_at"),
        revoked=Max("revoked_at"),
        revoked_count=Count("id", filter=Q(revoked_at__isnull=False)),
    )
    return (
        endpoints["count"],
        endpoints["updated"],
        endpoints["revisions"],
        keys["count"],
        keys["created"],
        keys["revoked"],
        keys["revoked_count"],
    )


class _VersionDirectories:
    """Local directories of model versions, resolved once per version: a version's files never
    change, and on remote storage resolving one downloads them."""

    def __init__(self) -> None:
        self._known: dict[int, str] = {}

    def get(self, version) -> str:
        from llmhub.storage import local_directory

        known = self._known.get(version.pk)
        if known is not None:
            return known
        try:
            path = str(local_directory(version.files_prefix, version.files))
        except Exception as exc:  # storage away, a file gone: the engine reports it unavailable
            logger.warning("The files of %s cannot be fetched: %s", version, exc)
            return str(Path(settings.LLMHUB_CACHE_DIR) / version.files_prefix)
        self._known[version.pk] = path
        return path


_directories = _VersionDirectories()


def _version_spec(version, directories: _VersionDirectories) -> VersionSpec | None:
    from serving.selectors import serve_kind_for

    if version is None:
        return None
    kind = serve_kind_for(version)
    return VersionSpec(
        version_id=version.pk,
        label=f"{version.registered_model.name} v{version.number}",
        model_dir=directories.get(version),
        # A kind the engine cannot serve is refused at promotion; should one be here anyway,
        # "generate" makes the engine's loader say what is wrong with the directory.
        serve_kind=kind or "generate",
    )


def _endpoint_spec(endpoint: Endpoint, directories: _VersionDirectories) -> EndpointSpec:
    if endpoint.engine == EngineKind.EXTERNAL:
        return EndpointSpec(
            endpoint_id=endpoint.pk,
            project_id=endpoint.project_id,
            slug=endpoint.slug,
            revision=endpoint.revision,
            upstream=UpstreamSpec(
                base_url=endpoint.upstream_url,
                model=endpoint.upstream_model,
                api_key=endpoint.upstream_api_key,
            ),
            store_text=endpoint.store_text,
        )
    canary = None
    if endpoint.canary_version_id and endpoint.canary_percent > 0:
        canary = _version_spec(endpoint.canary_version, directories)
    return EndpointSpec(
        endpoint_id=endpoint.pk,
        project_id=endpoint.project_id,
        slug=endpoint.slug,
        revision=endpoint.revision,
        primary=_version_spec(endpoint.version, directories),
        canary=canary,
        canary_percent=endpoint.canary_percent if canary is not None else 0,
        store_text=endpoint.store_text,
    )


def _key_specs(*, today: dt.date) -> tuple[KeySpec, ...]:
    from serving.selectors import annotate_key_usage, budget_resets_at

    # Every key, also of projects with nothing deployed yet: their applications then get
    # "no such model" (404), not "incorrect API key" (401). The tokens of each key's current
    # budget period are summed in the same query as the keys.
    keys = annotate_key_usage(ServingKey.objects.order_by("id"), today=today)
    return tuple(
        KeySpec(
            key_id=key.pk,
            key_hash=key.key_hash,
            project_id=key.project_id,
            endpoint_id=key.endpoint_id,
            expires_at=_epoch(key.expires_at),
            revoked=key.revoked_at is not None,
            requests_per_minute=key.requests_per_minute,
            tokens_per_minute=key.tokens_per_minute,
            token_budget=key.token_budget,
            budget_used=int(key.period_tokens or 0),
            budget_resets_at=(
                budget_resets_at(key.budget_period, today=today).timestamp()
                if key.token_budget is not None
                else None
            ),
        )
        for key in keys
    )


def build_snapshot(*, directories: _VersionDirectories | None = None) -> Snapshot:
    """What the engine must serve now: every active endpoint (local versions with their local
    directories, or the external upstream), every serving key (revoked and expired ones too, so
    the engine can say why it refuses them) with its budget used this period, and the
    playground token's hash."""
    from serving.selectors import active_endpoints_for_serving

    directories = directories or _directories
    today = timezone.now().astimezone(dt.UTC).date()
    endpoints = list(active_endpoints_for_serving())
    return Snapshot(
        endpoints=tuple(_endpoint_spec(endpoint, directories) for endpoint in endpoints),
        keys=_key_specs(today=today),
        internal_token_hash=hashlib.sha256(internal_token().encode()).hexdigest(),
    )


class RecordQueue:
    """The engine's RecordSink: ``put`` never blocks and never fails. Bounded: when full, the
    oldest record is dropped (and counted in ``dropped``) so a database outage cannot grow the
    process without end."""

    def __init__(
        self, *, max_records: int = 100_000, batch_size: int = 500, enabled: bool = True
    ) -> None:
        self._records: collections.deque = collections.deque()
        self._lock = threading.Lock()
        self.max_records = max_records
        self.batch_size = batch_size
        self.enabled = enabled
        self.dropped = 0
        # Set when a batch is ready (or on stop) so the writer does not wait for its timer.
        self.ready = threading.Event()

    def put(self, record: RequestRecord | FeedbackRecord) -> None:
        if not self.enabled:
            return  # the request log is off (benchmarks only: REQUEST_LOG_SWITCH)
        with self._lock:
            if len(self._records) >= self.max_records:
                self._records.popleft()
                self.dropped += 1
            self._records.append(record)
            full = len(self._records) >= self.batch_size
        if full:
            self.ready.set()

    def take(self) -> tuple[list, float]:
        """Up to ``batch_size`` records, oldest first, and the time of taking them (every
        record put before that time is in this batch or an earlier one)."""
        with self._lock:
            count = min(self.batch_size, len(self._records))
            return [self._records.popleft() for _ in range(count)], time.time()

    def __len__(self) -> int:
        return len(self._records)


class ServingRunner:
    """Keeps an EngineState in step with the database and writes its records (see the module
    docstring). ``sink`` is what the EngineState must be built with."""

    def __init__(
        self,
        *,
        sync_seconds: float | None = None,
        flush_seconds: float | None = None,
        refresh_seconds: float = 30.0,
        purge_seconds: float = 3600.0,
        batch_size: int = 500,
        max_records: int = 100_000,
    ) -> None:
        self.sync_seconds = float(sync_seconds or settings.LLMHUB_SERVING_SYNC_SECONDS)
        self.flush_seconds = float(flush_seconds or settings.LLMHUB_SERVING_LOG_FLUSH_SECONDS)
        self.refresh_seconds = refresh_seconds
        self.purge_seconds = purge_seconds
        self.sink = RecordQueue(
            max_records=max_records,
            batch_size=batch_size,
            enabled=os.environ.get(REQUEST_LOG_SWITCH, "on") != "off",
        )
        self.state = None
        self._directories = _VersionDirectories()
        self._fingerprint: tuple | None = None
        self._built_at = 0.0
        self._next_purge = 0.0
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []
        self._write_lock = threading.Lock()  # one batch in flight (writer thread or stop())
        self._sync_lock = threading.Lock()
        # Every record queued before this time has been written (or given up on): the next
        # snapshot's budget_used includes it (Snapshot.usage_flushed_before).
        self.flushed_before = time.time()
        # What happened, for logs, /health-style checks and tests.
        self.syncs = 0
        self.sync_errors = 0
        self.written = 0
        self.failed_batches = 0
        self.lost_records = 0

    # --- the poller ------------------------------------------------------------------------

    def sync(self, *, force: bool = False) -> bool:
        """Rebuild and apply the snapshot if the fingerprint moved (or ``force``, or the
        periodic refresh is due). Returns whether a snapshot was applied. Raises what the
        database or the engine raised (the poller logs it and goes on)."""
        with self._sync_lock:  # the poller, start() and tests may all ask
            return self._sync(force=force)

    def _sync(self, *, force: bool) -> bool:
        current = fingerprint()
        due = time.monotonic() - self._built_at >= self.refresh_seconds
        if not force and not due and current == self._fingerprint:
            return False
        flushed_before = self.flushed_before  # read before the database is
        # Autocommit reads: no transaction stays open while apply() loads models (slow).
        snapshot = build_snapshot(directories=self._directories)
        snapshot = dataclasses.replace(snapshot, usage_flushed_before=flushed_before)
        self.state.apply(snapshot)
        self._fingerprint = current
        self._built_at = time.monotonic()
        self.syncs += 1
        return True

    def _poll(self) -> None:
        while not self._stopped.is_set():
            close_old_connections()
            try:
                self.sync()
            except Exception:  # the database away, a bad row: log, keep serving the last one
                self.sync_errors += 1
                logger.exception("Serving: the endpoint snapshot could not be refreshed")
            try:
                self._purge_if_due()
            except Exception:
                logger.exception("Serving: the request log purge failed")
            finally:
                close_old_connections()
            self._stopped.wait(self.sync_seconds)
        connections.close_all()  # this thread's own connections, so none outlives the runner

    def _purge_if_due(self) -> None:
        if time.monotonic() < self._next_purge:
            return
        from serving.services import request_logs_purge

        self._next_purge = time.monotonic() + self.purge_seconds
        deleted = request_logs_purge()
        if deleted:
            logger.info("Serving: purged %s request log rows past their retention", deleted)

    # --- the writer ------------------------------------------------------------------------

    def flush(self) -> int:
        """Write everything queued now (in batches); returns the records written."""
        written = 0
        while True:
            with self._write_lock:
                batch, taken_at = self.sink.take()
                if not batch:
                    self.flushed_before = taken_at
                    return written
                written += self._write(batch)

    def _write(self, batch: list) -> int:
        from serving.services import request_logs_ingest

        for attempt in (1, 2):
            try:
                request_logs_ingest(records=batch)
            except Exception:
                if attempt == 1:
                    # A dropped connection or a locked SQLite file: a fresh connection, once.
                    close_old_connections()
                    time.sleep(min(0.2, self.flush_seconds))
                    continue
                self.failed_batches += 1
                self.lost_records += len(batch)
                logger.exception(
                    "Serving: %s request log records could not be written (dropped)", len(batch)
                )
                return 0
            else:
                self.written += len(batch)
                return len(batch)
        return 0  # not reached

    def _write_loop(self) -> None:
        while not self._stopped.is_set():
            self.sink.ready.wait(self.flush_seconds)
            self.sink.ready.clear()
            close_old_connections()
            try:
                self.flush()
            except Exception:  # never let the writer die
                logger.exception("Serving: the request log writer failed")
            finally:
                close_old_connections()
        connections.close_all()

    # --- life --------------------------------------------------------------------------------

    def start(self, state) -> None:
        """Apply the first snapshot now (so the engine serves before the first request), then
        start the poller and the writer threads."""
        self.state = state
        self.sync(force=True)
        self._next_purge = time.monotonic() + min(60.0, self.purge_seconds)
        for name, target in (("poller", self._poll), ("writer", self._write_loop)):
            thread = threading.Thread(target=target, name=f"llmhub-serving-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop both threads and write what is left in the queue."""
        self._stopped.set()
        self.sink.ready.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()
        self.flush()
        if self.sink.dropped or self.lost_records:
            logger.warning(
                "Serving: %s request log records dropped (queue full), %s lost (failed writes)",
                self.sink.dropped,
                self.lost_records,
            )
