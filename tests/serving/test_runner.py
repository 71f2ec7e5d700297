"""The runner: the snapshot it builds from the database, when it rebuilds, and how it writes the
engine's records (in batches, off the request path, surviving failed writes)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import threading
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from llmhub.jobs import wait_until
from serving import runner as serving_runner
from serving import services
from serving.engine.types import Snapshot
from serving.models import Endpoint, KeyUsage, RequestLog
from serving.runner import RecordQueue, ServingRunner, build_snapshot, fingerprint, internal_token
from tests.serving.builders import request_record

pytestmark = pytest.mark.django_db(transaction=True)


class RecordingState:
    """The engine side as the runner sees it: it only receives snapshots."""

    def __init__(self) -> None:
        self.snapshots: list[Snapshot] = []
        self.lock = threading.Lock()

    def apply(self, snapshot: Snapshot) -> None:
        with self.lock:
            self.snapshots.append(snapshot)

    @property
    def last(self) -> Snapshot:
        with self.lock:
            return self.snapshots[-1]


def _key_spec(snapshot: Snapshot, key_id: int):
    return next(k for k in snapshot.keys if k.key_id == key_id)


def test_the_snapshot_has_versions_with_their_files_upstreams_and_every_key(deployed) -> None:
    world, manager = deployed.world, deployed.manager
    canary = deployed.new_version()
    services.endpoint_set_canary(
        actor=manager, endpoint=deployed.endpoint, version=canary, percent=20
    )
    external = services.endpoint_create(
        actor=manager,
        project=world.project,
        name="Big",
        slug="big",
        engine="external",
        upstream_url="http://127.0.0.1:9/v1",
        upstream_model="llama",
        upstream_api_key="sk-upstream",
        store_text=False,
    )
    archived = services.endpoint_create(actor=manager, project=world.project, name="Old")
    services.endpoint_archive(actor=manager, endpoint=archived)
    budgeted, _ = deployed.new_key(token_budget=1000, budget_period="day", requests_per_minute=7)
    revoked, _ = deployed.new_key(endpoint=deployed.endpoint)
    services.serving_key_revoke(actor=manager, key=revoked)
    # A key of a project with nothing deployed is known too (its calls get 404, not 401).
    theirs, _ = services.serving_key_create(
        actor=world.outsider, project=world.other_project, name="theirs"
    )
    # Today's usage counts toward the day budget; three days ago does not.
    services.request_logs_ingest(
        records=[request_record(deployed.endpoint, key_id=budgeted.pk) for _ in range(3)]
    )
    KeyUsage.objects.create(
        key=budgeted,
        day=timezone.now().date() - dt.timedelta(days=3),
        requests=1,
        prompt_tokens=400,
        completion_tokens=400,
    )

    snapshot = build_snapshot()

    by_slug = {e.slug: e for e in snapshot.endpoints}
    assert set(by_slug) == {"chat", "big"}  # not the archived one
    chat = by_slug["chat"]
    assert chat.project_id == world.project.pk
    assert chat.revision == Endpoint.objects.get(pk=deployed.endpoint.pk).revision
    assert chat.primary.version_id == deployed.version.pk
    assert chat.primary.label == f"bard v{deployed.version.number}"
    assert chat.primary.serve_kind == "generate"
    assert Path(chat.primary.model_dir, "config.json").is_file()
    assert Path(chat.primary.model_dir, "model.safetensors").is_file()
    assert (chat.canary.version_id, chat.canary_percent) == (canary.pk, 20)
    assert chat.store_text is True and chat.upstream is None
    big = by_slug["big"]
    assert big.primary is None and big.store_text is False
    assert (big.upstream.base_url, big.upstream.model, big.upstream.api_key) == (
        "http://127.0.0.1:9/v1",
        "llama",
        "sk-upstream",
    )
    assert big.endpoint_id == external.pk

    keys = {deployed.key.pk, budgeted.pk, revoked.pk, theirs.pk}
    assert {k.key_id for k in snapshot.keys} == keys
    assert _key_spec(snapshot, theirs.pk).project_id == world.other_project.pk
    spec = _key_spec(snapshot, budgeted.pk)
    assert spec.key_hash == budgeted.key_hash and len(spec.key_hash) == 64
    assert (spec.token_budget, spec.budget_used, spec.requests_per_minute) == (1000, 36, 7)
    tomorrow = timezone.now().date() + dt.timedelta(days=1)
    assert (
        spec.budget_resets_at
        == dt.datetime(tomorrow.year, tomorrow.month, tomorrow.day, tzinfo=dt.UTC).timestamp()
    )
    assert spec.revoked is False and spec.endpoint_id is None
    gone = _key_spec(snapshot, revoked.pk)
    assert gone.revoked is True and gone.endpoint_id == deployed.endpoint.pk
    unlimited = _key_spec(snapshot, deployed.key.pk)
    assert unlimited.token_budget is None and unlimited.budget_resets_at is None
    assert snapshot.internal_token_hash == hashlib.sha256(internal_token().encode()).hexdigest()


def test_the_playground_token_is_derived_from_the_secret_key(settings) -> None:
    expected = hmac.new(
        settings.SECRET_KEY.encode(), b"llmhub-serving-playground", hashlib.sha256
    ).hexdigest()
    assert internal_token() == expected
    settings.SECRET_KEY = "another secret"  # another installation, another token
    assert internal_token() != expected


def test_a_version_whose_files_are_gone_still_reaches_the_engine_which_reports_it(
    deployed,
) -> None:
    # The engine answers 503 model_unavailable for it; the snapshot must not fail.
    from llmhub import storage

    for name in deployed.version.files:
        storage.default_storage.delete(f"{deployed.version.files_prefix}/{name}")
    spec = build_snapshot().endpoints[0].primary
    assert spec.version_id == deployed.version.pk
    assert not Path(spec.model_dir, "model.safetensors").exists()


def test_the_fingerprint_moves_on_promote_revoke_and_rollback_and_only_then(deployed) -> None:
    before = fingerprint()
    assert fingerprint() == before
    services.endpoint_promote(
        actor=deployed.manager, endpoint=deployed.endpoint, version=deployed.new_version()
    )
    promoted = fingerprint()
    assert promoted != before
    services.request_logs_ingest(records=[request_record(deployed.endpoint)])
    assert fingerprint() == promoted  # traffic is not a change of what is served
    services.serving_key_revoke(actor=deployed.manager, key=deployed.key)
    revoked = fingerprint()
    assert revoked != promoted
    deployed.endpoint.refresh_from_db()
    services.endpoint_rollback(actor=deployed.manager, endpoint=deployed.endpoint)
    assert fingerprint() != revoked


def test_the_poller_applies_changes_and_survives_a_failed_rebuild(deployed, monkeypatch) -> None:
    state = RecordingState()
    runner = ServingRunner(sync_seconds=0.05, flush_seconds=0.05)
    runner.start(state)
    try:
        assert len(state.snapshots) == 1  # before start() returns: the first requests find it
        assert _key_spec(state.last, deployed.key.pk).revoked is False
        time.sleep(0.3)
        assert len(state.snapshots) == 1  # nothing changed, nothing rebuilt

        real = serving_runner.build_snapshot
        failures = []

        def failing_once(**kw):
            if not failures:
                failures.append(1)
                raise RuntimeError("database away")
            return real(**kw)

        monkeypatch.setattr(serving_runner, "build_snapshot", failing_once)
        services.serving_key_revoke(actor=deployed.manager, key=deployed.key)
        assert wait_until(lambda: _key_spec(state.last, deployed.key.pk).revoked, timeout=10)
        assert runner.sync_errors == 1 and failures == [1]
        assert all(t.is_alive() for t in runner._threads)
    finally:
        runner.stop()


def test_a_periodic_refresh_rebuilds_even_without_a_change(deployed) -> None:
    state = RecordingState()
    runner = ServingRunner(sync_seconds=0.05, refresh_seconds=0.2)
    runner.start(state)
    try:
        assert wait_until(lambda: len(state.snapshots) >= 3, timeout=10)
    finally:
        runner.stop()


def test_the_writer_writes_in_batches_and_stop_flushes_the_rest(deployed, monkeypatch) -> None:
    batches: list[int] = []
    real = services.request_logs_ingest

    def spy(*, records):
        batches.append(len(records))
        return real(records=records)

    monkeypatch.setattr(services, "request_logs_ingest", spy)
    # A timer far away: a full batch is written at once, the rest only by stop().
    runner = ServingRunner(sync_seconds=60, flush_seconds=60, batch_size=500)
    runner.start(RecordingState())
    stopped = False
    try:
        for _ in range(1100):
            runner.sink.put(request_record(deployed.endpoint, key_id=deployed.key.pk))
        assert wait_until(lambda: sum(batches) >= 1000, timeout=30)
        assert all(size <= 500 for size in batches)
        runner.stop()
        stopped = True
    finally:
        if not stopped:
            runner.stop()
    assert sum(batches) == 1100 and max(batches) == 500
    assert RequestLog.objects.count() == 1100 and runner.written == 1100
    usage = KeyUsage.objects.get(key=deployed.key)
    assert (usage.requests, usage.prompt_tokens, usage.completion_tokens) == (1100, 5500, 7700)


def test_stop_writes_what_the_timer_has_not(deployed) -> None:
    runner = ServingRunner(sync_seconds=60, flush_seconds=60)
    runner.start(RecordingState())
    for _ in range(7):
        runner.sink.put(request_record(deployed.endpoint))
    time.sleep(0.2)
    assert RequestLog.objects.count() == 0
    runner.stop()
    assert RequestLog.objects.count() == 7 and len(runner.sink) == 0
    assert not any(t.is_alive() for t in threading.enumerate() if t.name.startswith("llmhub-serv"))


def test_records_wait_for_the_timer_then_are_written(deployed) -> None:
    runner = ServingRunner(sync_seconds=60, flush_seconds=1.0)
    runner.start(RecordingState())
    try:
        queued_at = time.time()
        for _ in range(3):
            runner.sink.put(request_record(deployed.endpoint))
        assert RequestLog.objects.count() == 0  # never on the request path
        assert wait_until(lambda: RequestLog.objects.count() == 3, timeout=10)
        # The next snapshot tells the engine's limiter that this usage is in the database.
        assert wait_until(lambda: runner.flushed_before > queued_at, timeout=10)
        runner.sync(force=True)
        assert runner.state.last.usage_flushed_before > queued_at
    finally:
        runner.stop()


def test_a_failed_write_is_retried_once_then_dropped_and_the_writer_goes_on(
    deployed, monkeypatch
) -> None:
    real = services.request_logs_ingest
    calls: list[int] = []
    fail_calls = {1, 3, 4}  # batch 1: fails, the retry works; batch 2: fails twice (dropped)

    def flaky(*, records):
        calls.append(len(records))
        if len(calls) in fail_calls:
            raise RuntimeError("database is locked")
        return real(records=records)

    monkeypatch.setattr(services, "request_logs_ingest", flaky)
    runner = ServingRunner(sync_seconds=60, flush_seconds=0.05)
    runner.start(RecordingState())
    try:
        runner.sink.put(request_record(deployed.endpoint, response_id="cmpl-first"))
        assert wait_until(lambda: RequestLog.objects.count() == 1, timeout=10)
        runner.sink.put(request_record(deployed.endpoint, response_id="cmpl-lost"))
        assert wait_until(lambda: runner.failed_batches == 1, timeout=10)
        runner.sink.put(request_record(deployed.endpoint, response_id="cmpl-after"))
        assert wait_until(lambda: RequestLog.objects.count() == 2, timeout=10)
        assert all(t.is_alive() for t in runner._threads)
    finally:
        runner.stop()
    assert calls == [1, 1, 1, 1, 1]
    assert set(RequestLog.objects.values_list("response_id", flat=True)) == {
        "cmpl-first",
        "cmpl-after",
    }
    assert (runner.written, runner.lost_records) == (2, 1)


def test_the_queue_never_blocks_and_drops_its_oldest_when_full() -> None:
    queue = RecordQueue(max_records=3, batch_size=2)
    for number in range(5):
        queue.put(number)
    assert queue.dropped == 2 and len(queue) == 3
    assert queue.ready.is_set()  # a full batch wakes the writer
    first, _ = queue.take()
    second, _ = queue.take()
    assert (first, second) == ([2, 3], [4])
    assert queue.take()[0] == []


def test_the_poller_purges_logs_past_their_retention(deployed) -> None:
    old = timezone.now() - dt.timedelta(days=deployed.endpoint.log_retention_days + 1)
    services.request_logs_ingest(
        records=[
            request_record(deployed.endpoint, response_id="cmpl-old", created_at=old.timestamp()),
            request_record(deployed.endpoint, response_id="cmpl-new"),
        ]
    )
    runner = ServingRunner(sync_seconds=0.05, purge_seconds=0.1)
    runner.start(RecordingState())
    try:
        assert wait_until(
            lambda: list(RequestLog.objects.values_list("response_id", flat=True)) == ["cmpl-new"],
            timeout=10,
        )
    finally:
        runner.stop()


def test_the_settings_have_their_documented_defaults() -> None:
    assert settings.LLMHUB_SERVING_URL == "http://127.0.0.1:8001"
    assert ServingRunner().sync_seconds == settings.LLMHUB_SERVING_SYNC_SECONDS == 1.0
    assert ServingRunner().flush_seconds == settings.LLMHUB_SERVING_LOG_FLUSH_SECONDS == 0.5
