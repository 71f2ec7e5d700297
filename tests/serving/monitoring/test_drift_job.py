"""The drift job end to end on a real database: request-log rows written by the log's ingest,
the reference read from a stored dataset version (the serving version's training data), the
version's real (tiny, byte-level) tokenizer loaded from its stored files, the runner function
run in this process; then the scheduler and its once-per-period claim."""

from __future__ import annotations

import time
from datetime import timedelta

import pyarrow as pa
import pytest
from django.test import override_settings
from django.utils import timezone

from llmhub.jobs import run_job_inline
from llmhub.models import JobStatus
from projects.models import AuditEvent
from serving.monitoring import selectors, services
from serving.monitoring.models import Alert, DriftJob, DriftStatistic, MonitorSettings
from serving.services import endpoint_archive, endpoint_update
from tests.datasets_app.tables import make_version
from tests.serving.monitoring.drift_world import log_requests, monitored_endpoint, texts

SEEDS = range(3)
WINDOW = 300


@pytest.fixture
def tiny_lm(tmp_path_factory):
    from tests.serving.engine.models import tiny_causal_lm_dir

    return tiny_causal_lm_dir(tmp_path_factory.mktemp("drift-model"))


def run_drift(m, **kw) -> DriftJob:
    """Start a drift job as the manager and run its runner here; the job, re-read."""
    job = services.drift_job_create(actor=m.manager, endpoint=m.endpoint, **kw)
    status = run_job_inline(job)
    job.refresh_from_db()
    assert status == JobStatus.SUCCEEDED, (job.error, job.traceback)
    return job


def _stats(job: DriftJob) -> dict[str, DriftStatistic]:
    return {s.name: s for s in job.statistics.all()}


@override_settings(LLMHUB_DRIFT_EMBEDDINGS=False)  # the encoder has its own test below
@pytest.mark.parametrize("seed", SEEDS)
def test_a_planted_topic_shift_is_flagged_and_the_same_topic_is_not(world, tiny_lm, seed) -> None:
    m = monitored_endpoint(world, tiny_lm, seed=seed)
    services.monitor_settings_update(actor=m.manager, endpoint=m.endpoint, window_requests=WINDOW)

    log_requests(m.endpoint, texts("banking", WINDOW, seed))
    stable = run_drift(m)
    assert stable.result == "stable", stable.report["message"]
    assert stable.window_rows == WINDOW and stable.reference_rows == 400
    assert stable.reference_version == m.reference  # the training data, by default
    assert stable.report["message"].startswith(f"No drift in {WINDOW} requests")
    tokens = next(c for c in stable.report["checks"] if c["name"] == "tokens")
    assert tokens["status"] == "computed"
    # Counted with the version's own tokenizer, not in words.
    length = next(c for c in stable.report["checks"] if c["name"] == "prompt_length")
    assert length["statistics"][0]["details"]["unit"] == "tokens"
    assert not Alert.objects.filter(endpoint=m.endpoint).exists()
    assert not any(s.drifted for s in stable.statistics.all())

    # Newer requests about another topic: the window (the last WINDOW requests) is all of them.
    log_requests(m.endpoint, texts("cooking", WINDOW, seed))
    shifted = run_drift(m)
    assert shifted.result == "drifted", __import__("json").dumps(shifted.report)[:4000]
    stats = _stats(shifted)
    assert stats["classifier_auc"].drifted and stats["classifier_auc"].value > 0.9
    assert stats["token_js_distance"].drifted
    alert = Alert.objects.get(endpoint=m.endpoint, statistic="classifier_auc")
    assert alert.kind == "drift" and alert.drift_job == shifted and alert.version == m.version
    assert "classifier_auc" in alert.message and f"{alert.threshold:g}" in alert.message


def test_a_window_without_requests_is_no_data_and_no_alert(world, tiny_lm) -> None:
    m = monitored_endpoint(world, tiny_lm)
    old = time.time() - 3 * 86400  # outside the 24 h window
    log_requests(m.endpoint, texts("cooking", 50, 0), at=old)
    job = run_drift(m)
    assert job.result == "no_data" and job.status == JobStatus.SUCCEEDED
    assert "No answered requests" in job.report["message"]
    assert job.progress_message == job.report["message"][:255]
    assert job.window_rows == 0 and not job.statistics.exists()
    assert not Alert.objects.exists()
    # Errors and the canary's answers are not the main version's window either.
    log_requests(m.endpoint, texts("cooking", 50, 1), status_code=500)
    log_requests(m.endpoint, texts("cooking", 50, 2), canary=True)
    assert run_drift(m).result == "no_data"


def test_a_log_without_text_is_no_data_saying_so(world, tiny_lm) -> None:
    m = monitored_endpoint(world, tiny_lm)
    endpoint_update(actor=m.manager, endpoint=m.endpoint, store_text=False)
    log_requests(m.endpoint, [None] * 120, completion=None)
    job = run_drift(m)
    assert job.result == "no_data"
    assert "store_text is off" in job.report["message"]


def test_a_second_drifted_job_repeats_the_open_alert(world, tiny_lm) -> None:
    m = monitored_endpoint(world, tiny_lm)
    log_requests(m.endpoint, texts("cooking", 200, 0))
    with override_settings(LLMHUB_DRIFT_EMBEDDINGS=False):
        first = run_drift(m)
        second = run_drift(m)
    assert first.result == second.result == "drifted"
    alert = Alert.objects.get(endpoint=m.endpoint, statistic="classifier_auc")
    assert alert.times_seen == 2 and alert.drift_job == second
    drifted = {s.name for s in second.statistics.all() if s.drifted}
    assert Alert.objects.filter(endpoint=m.endpoint).count() == len(drifted)
    assert AuditEvent.objects.filter(verb="alert.opened").count() == len(drifted)
    history = selectors.drift_history(m.endpoint, since=timezone.now() - timedelta(days=1))
    assert [p["job_id"] for p in history["classifier_auc"]] == [first.pk, second.pk]
    assert selectors.latest_drift_job(m.endpoint) == second


def test_the_embedding_check_runs_with_the_offline_encoder(world, tiny_lm) -> None:
    from serving.monitoring.runtime.embeddings import default_encoder_dir

    try:
        default_encoder_dir()
    except Exception as exc:  # the package is part of the dev install; say so when missing
        pytest.skip(f"The offline MiniLM is not installed: {exc}")
    m = monitored_endpoint(world, tiny_lm)
    log_requests(m.endpoint, texts("cooking", 150, 0))
    job = run_drift(m)
    check = next(c for c in job.report["checks"] if c["name"] == "embedding_centroid")
    assert check["status"] == "computed"
    assert _stats(job)["centroid_cosine_distance"].drifted


def test_without_the_encoder_the_embedding_check_is_skipped_with_the_reason(world, tiny_lm) -> None:
    m = monitored_endpoint(world, tiny_lm)
    log_requests(m.endpoint, texts("banking", 150, 0))
    with override_settings(LLMHUB_DRIFT_EMBEDDINGS=False):
        job = run_drift(m)
    check = next(c for c in job.report["checks"] if c["name"] == "embedding_centroid")
    assert check["status"] == "skipped" and "LLMHUB_DRIFT_EMBEDDINGS" in check["reason"]
    assert job.result == "stable"


def test_a_reference_without_text_finishes_no_data_and_the_form_refuses_it(world, tiny_lm) -> None:
    m = monitored_endpoint(world, tiny_lm)
    numbers = make_version(
        world, pa.table({"n": [1, 2, 3]}), name="numbers", column_roles={"x": "n"}
    )
    # The training data itself has no text: the default reference cannot serve.
    from training.models import TrainingJob

    TrainingJob.objects.filter(model_version=m.version).update(
        train_version=numbers, column_roles={}
    )
    log_requests(m.endpoint, texts("banking", 120, 0))
    with override_settings(LLMHUB_DRIFT_EMBEDDINGS=False):
        job = run_drift(m)
    assert job.status == JobStatus.SUCCEEDED and job.result == "no_data"
    assert "has no text column" in job.report["message"]
    assert not Alert.objects.exists()
    assert selectors.reference_for(m.endpoint)[0] == numbers
    assert "has no text column" in selectors.reference_for(m.endpoint)[1]


def test_an_archived_endpoint_gets_no_drift_job(world, tiny_lm) -> None:
    from django.core.exceptions import ValidationError

    m = monitored_endpoint(world, tiny_lm)
    endpoint_archive(actor=m.manager, endpoint=m.endpoint)
    m.endpoint.refresh_from_db()
    with pytest.raises(ValidationError) as caught:
        services.drift_job_create(actor=m.manager, endpoint=m.endpoint)
    assert "archived" in str(caught.value)
    assert not DriftJob.objects.exists()


def test_a_viewer_may_not_start_a_drift_job(world, tiny_lm) -> None:
    from django.core.exceptions import PermissionDenied

    m = monitored_endpoint(world, tiny_lm)
    with pytest.raises(PermissionDenied):
        services.drift_job_create(actor=world.users["viewer"], endpoint=m.endpoint)
    assert not DriftJob.objects.exists()


# --- the scheduler -----------------------------------------------------------------------------


def test_the_scheduler_enqueues_once_per_period(
    world, tiny_lm, django_capture_on_commit_callbacks
) -> None:
    m = monitored_endpoint(world, tiny_lm)
    with django_capture_on_commit_callbacks() as sent:
        assert services.drift_schedule_due() == 1
        assert services.drift_schedule_due() == 0  # the period is claimed
    assert len(sent) == 1
    job = DriftJob.objects.get()
    assert job.scheduled and job.created_by is None and job.endpoint == m.endpoint
    assert job.reference_version == m.reference
    assert job.config["embedding_max_rows"] == services.JOB_CONFIG_DEFAULTS["embedding_max_rows"]
    settings = MonitorSettings.objects.get(endpoint=m.endpoint)
    claimed = settings.drift_claimed_at
    assert claimed is not None

    # The next period comes drift_every_minutes later, not before.
    soon = claimed + timedelta(minutes=settings.drift_every_minutes - 1)
    assert services.drift_schedule_due(now=soon) == 0
    later = claimed + timedelta(minutes=settings.drift_every_minutes)
    assert services.drift_schedule_due(now=later) == 1
    assert services.drift_schedule_due(now=later) == 0
    assert DriftJob.objects.filter(scheduled=True).count() == 2

    # The endpoint's own thresholds go over the job's defaults.
    services.monitor_settings_update(
        actor=m.manager, endpoint=m.endpoint, thresholds={"embedding_max_rows": 800}
    )
    manual = services.drift_job_create(actor=m.manager, endpoint=m.endpoint)
    assert manual.config["embedding_max_rows"] == 800 and not manual.scheduled

    # Turned off: nothing more.
    services.monitor_settings_update(actor=m.manager, endpoint=m.endpoint, drift_enabled=False)
    assert services.drift_schedule_due(now=later + timedelta(days=1)) == 0


def test_the_scheduler_leaves_archived_and_idle_endpoints_alone(world, tiny_lm) -> None:
    from serving.services import endpoint_create

    m = monitored_endpoint(world, tiny_lm)
    endpoint_create(actor=m.manager, project=world.project, name="Empty", slug="empty")
    endpoint_archive(actor=m.manager, endpoint=m.endpoint)
    assert services.drift_schedule_due() == 0
    assert not DriftJob.objects.exists()


def test_a_broker_down_undoes_the_claim(world, tiny_lm, broker_down) -> None:
    m = monitored_endpoint(world, tiny_lm)
    assert services.drift_schedule_due() == 0
    assert not DriftJob.objects.exists()
    assert MonitorSettings.objects.get(endpoint=m.endpoint).drift_claimed_at is None


# --- a classifier's predicted labels ------------------------------------------------------------


@override_settings(LLMHUB_DRIFT_EMBEDDINGS=False)
def test_a_classifiers_predicted_labels_are_compared_with_its_training_labels(
    world, tmp_path_factory
) -> None:
    import random

    from serving.services import endpoint_create, endpoint_promote
    from tests.serving.conftest import register_version
    from tests.serving.engine.models import tiny_classifier_dir
    from training.models import TrainingJob

    manager = world.users["manager"]
    rng = random.Random(0)
    prompts = texts("banking", 300, 0)
    # Trained on three balanced classes (integer ids, as a dataset stores them).
    reference = make_version(
        world,
        pa.table({"text": prompts, "label": [rng.randrange(3) for _ in prompts]}),
        name="intents",
        column_roles={"text": "text", "label": "label"},
    )
    version = register_version(
        world.project,
        tiny_classifier_dir(tmp_path_factory.mktemp("cls")),
        actor=manager,
        kind="classification",
    )
    TrainingJob.objects.filter(model_version=version).update(
        train_version=reference, column_roles={"text": "text", "label": "label"}
    )
    endpoint = endpoint_create(actor=manager, project=world.project, name="Intent", slug="intent")
    endpoint_promote(actor=manager, endpoint=endpoint, version=version)
    endpoint.refresh_from_db()
    window = texts("banking", 200, 1)
    # Two inputs a request: the log joins them (and their labels) with newlines.
    log_requests(
        endpoint,
        ["\n".join(window[i : i + 2]) for i in range(0, 200, 2)],
        completion="positive\npositive",
        route="predict",
    )
    job = services.drift_job_create(actor=manager, endpoint=endpoint)
    assert run_job_inline(job) == JobStatus.SUCCEEDED
    job.refresh_from_db()
    labels = next(c for c in job.report["checks"] if c["name"] == "predicted_labels")
    assert labels["status"] == "computed" and labels["sizes"] == {"reference": 300, "current": 200}
    # The ids were read as the version's label names: "positive" is one of three, not a fourth.
    assert {row["label"] for row in labels["top"]} == {"negative", "neutral", "positive"}
    stats = _stats(job)
    assert stats["label_psi"].drifted and stats["label_chi2_p_value"].drifted
    assert not stats["classifier_auc"].drifted  # the inputs did not move
    assert job.window_rows == 200 and job.result == "drifted"
