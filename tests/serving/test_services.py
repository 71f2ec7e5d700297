"""The deploy stage's services: endpoints, the promotion gate (met, unmet, unmeasured, override
recorded), refusals no override lifts, rollback and its history rows, canary rules, serving keys,
the request-log ingest (batches, KeyUsage upsert, privacy) and the retention purge."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.storage import default_storage
from django.http import Http404
from django.utils import timezone

from projects.models import AuditEvent
from projects.services import hash_token
from serving import services
from serving.engine.types import FeedbackRecord
from serving.models import (
    Deployment,
    Endpoint,
    KeyUsage,
    RequestLog,
    ResponseFeedback,
    ServingKey,
)
from tests.api.objects import build
from tests.factories import GoalFactory
from tests.serving.builders import finished_evaluation, request_record, stored_version
from training.models import Stage, StageChange, TrainingJob

pytestmark = pytest.mark.django_db


@pytest.fixture
def manager(world):
    return world.users["manager"]


@pytest.fixture
def endpoint(world, manager) -> Endpoint:
    return services.endpoint_create(actor=manager, project=world.project, name="Support bot")


@pytest.fixture
def version(world, tmp_path):
    return stored_version(world.project, tmp_path)


def _served(endpoint, manager, version, **kwargs):
    services.endpoint_promote(actor=manager, endpoint=endpoint, version=version, **kwargs)
    endpoint.refresh_from_db()
    return endpoint


# --- endpoints --------------------------------------------------------------------------------


def test_create_derives_a_unique_slug_and_audits(world, manager) -> None:
    first = services.endpoint_create(actor=manager, project=world.project, name="Support Bot")
    second = services.endpoint_create(actor=manager, project=world.project, name="Support Bot")
    assert (first.slug, second.slug) == ("support-bot", "support-bot-2")
    assert first.revision == 1 and first.created_by == manager
    assert AuditEvent.objects.filter(verb="endpoint.created", target_id=str(first.pk)).exists()
    with pytest.raises(ValidationError) as caught:
        services.endpoint_create(
            actor=manager, project=world.project, name="Other", slug="support-bot"
        )
    assert "slug" in caught.value.message_dict


def test_roles_outsiders_and_engineers_cannot_write(world, endpoint) -> None:
    with pytest.raises(PermissionDenied, match="is engineer"):
        services.endpoint_create(actor=world.users["engineer"], project=world.project, name="x")
    with pytest.raises(Http404):
        services.endpoint_archive(actor=world.outsider, endpoint=endpoint)
    with pytest.raises(PermissionDenied):
        services.serving_key_create(actor=world.users["viewer"], project=world.project, name="k")


def test_external_engine_needs_a_public_http_upstream_and_a_model(world, manager, settings) -> None:
    with pytest.raises(ValidationError) as caught:
        services.endpoint_create(
            actor=manager, project=world.project, name="vllm", engine="external"
        )
    assert {"upstream_url", "upstream_model"} <= set(caught.value.message_dict)
    with pytest.raises(ValidationError) as caught:
        services.endpoint_create(
            actor=manager,
            project=world.project,
            name="vllm",
            engine="external",
            upstream_url="ftp://10.0.0.1/v1",
            upstream_model="m",
        )
    assert "http" in caught.value.message_dict["upstream_url"][0]
    settings.LLMHUB_ALLOW_PRIVATE_URLS = False
    with pytest.raises(ValidationError, match="private, loopback or link-local"):
        services.endpoint_create(
            actor=manager,
            project=world.project,
            name="vllm",
            engine="external",
            upstream_url="http://127.0.0.1:8000/v1",
            upstream_model="m",
        )
    settings.LLMHUB_ALLOW_PRIVATE_URLS = True
    external = services.endpoint_create(
        actor=manager,
        project=world.project,
        name="vllm",
        engine="external",
        upstream_url="http://127.0.0.1:8000/v1/",
        upstream_model="meta-llama/Llama-3.1-8B-Instruct",
        upstream_api_key="sk-upstream",
    )
    assert external.upstream_url == "http://127.0.0.1:8000/v1"
    [row] = Deployment.objects.filter(endpoint=external)
    assert row.action == "upstream" and row.version is None
    # A local endpoint has no upstream fields.
    with pytest.raises(ValidationError) as caught:
        services.endpoint_create(
            actor=manager, project=world.project, name="l", upstream_url="http://127.0.0.1/v1"
        )
    assert "upstream_url" in caught.value.message_dict


def test_update_bumps_the_revision_only_for_what_is_served(world, manager, endpoint) -> None:
    services.endpoint_update(actor=manager, endpoint=endpoint, name="Renamed")
    endpoint.refresh_from_db()
    assert endpoint.name == "Renamed" and endpoint.revision == 1
    services.endpoint_update(actor=manager, endpoint=endpoint, store_text=False)
    endpoint.refresh_from_db()
    assert endpoint.store_text is False and endpoint.revision == 2
    with pytest.raises(ValidationError, match="cannot be changed: slug"):
        services.endpoint_update(actor=manager, endpoint=endpoint, slug="other")
    with pytest.raises(ValidationError):
        services.endpoint_update(actor=manager, endpoint=endpoint, log_retention_days=0)
    with pytest.raises(ValidationError):
        services.endpoint_update(actor=manager, endpoint=endpoint, upstream_url="http://x.io/v1")


def test_update_never_audits_the_upstream_key(world, manager) -> None:
    external = services.endpoint_create(
        actor=manager,
        project=world.project,
        name="vllm",
        engine="external",
        upstream_url="http://127.0.0.1:8000/v1",
        upstream_model="m",
        upstream_api_key="sk-old",
    )
    services.endpoint_update(actor=manager, endpoint=external, upstream_api_key="sk-new-secret")
    external.refresh_from_db()
    assert external.upstream_api_key == "sk-new-secret" and external.revision == 2
    event = AuditEvent.objects.get(verb="endpoint.updated")
    assert "sk-new-secret" not in str(event.changes) and "sk-old" not in str(event.changes)
    # Another upstream model is a new history row; the first one ends.
    services.endpoint_update(actor=manager, endpoint=external, upstream_model="m2")
    rows = list(Deployment.objects.filter(endpoint=external).order_by("started_at", "id"))
    assert [r.action for r in rows] == ["upstream", "upstream"]
    assert rows[0].ended_at is not None and rows[1].ended_at is None
    assert rows[1].reason == "Upstream m2 at http://127.0.0.1:8000/v1."


def test_archive_stops_serving_and_ends_the_open_rows(world, manager, endpoint, version) -> None:
    _served(endpoint, manager, version)
    services.endpoint_archive(actor=manager, endpoint=endpoint)
    endpoint.refresh_from_db()
    assert endpoint.archived_at is not None and endpoint.revision == 3
    assert not Deployment.objects.filter(endpoint=endpoint, ended_at__isnull=True).exists()
    with pytest.raises(ValidationError, match="archived"):
        services.endpoint_promote(actor=manager, endpoint=endpoint, version=version)


# --- promotion and its gate -------------------------------------------------------------------


def test_promote_without_goals_serves_and_moves_the_registry_stage(
    world, manager, endpoint, version
) -> None:
    deployment = services.endpoint_promote(
        actor=manager, endpoint=endpoint, version=version, reason="first"
    )
    endpoint.refresh_from_db()
    version.refresh_from_db()
    assert endpoint.version == version and endpoint.revision == 2
    assert deployment.role == "primary" and deployment.action == "promote"
    assert deployment.started_by == manager and deployment.ended_at is None
    assert deployment.gate_failures == [] and deployment.reason == "first"
    assert version.stage == Stage.STAGING  # a staging endpoint: candidate -> staging
    event = AuditEvent.objects.get(verb="endpoint.promoted")
    assert event.changes["version"] == [None, str(version)]
    with pytest.raises(ValidationError, match="already serving"):
        services.endpoint_promote(actor=manager, endpoint=endpoint, version=version)


def test_a_production_endpoint_makes_the_version_production_and_never_demotes(
    world, manager, tmp_path
) -> None:
    production = services.endpoint_create(
        actor=manager, project=world.project, name="Prod", stage="production"
    )
    first = stored_version(world.project, tmp_path)
    second = stored_version(world.project, tmp_path)
    _served(production, manager, first)
    _served(production, manager, second)
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.stage, second.stage) == (Stage.ARCHIVED, Stage.PRODUCTION)
    staging = services.endpoint_create(actor=manager, project=world.project, name="Staging")
    _served(staging, manager, second)
    second.refresh_from_db()
    assert second.stage == Stage.PRODUCTION  # not demoted to staging
    assert StageChange.objects.filter(version=second, to_stage=Stage.PRODUCTION).count() == 1
    # An endpoint moved to production takes its version along.
    third = stored_version(world.project, tmp_path)
    _served(staging, manager, third)
    services.endpoint_update(actor=manager, endpoint=staging, stage="production")
    second.refresh_from_db()
    third.refresh_from_db()
    assert (second.stage, third.stage) == (Stage.ARCHIVED, Stage.PRODUCTION)


def test_the_gate_lists_every_unmet_and_unmeasured_goal_at_once(
    world, manager, endpoint, version
) -> None:
    GoalFactory(project=world.project, metric="f1_macro", target=0.70, split="test")
    GoalFactory(project=world.project, metric="accuracy", target=0.9, split="validation")
    finished_evaluation(world, version, metric="f1_macro", value=0.62)
    with pytest.raises(ValidationError) as caught:
        services.endpoint_promote(actor=manager, endpoint=endpoint, version=version)
    reasons = caught.value.message_dict["version"]
    assert reasons == [
        "F1 (macro) on test is 0.62; the goal is >= 0.70.",
        f"No evaluation of {version} measures Accuracy on validation.",
    ]
    endpoint.refresh_from_db()
    assert endpoint.version is None and not Deployment.objects.filter(endpoint=endpoint).exists()
    # A blank override is no override.
    with pytest.raises(ValidationError):
        services.endpoint_promote(
            actor=manager, endpoint=endpoint, version=version, override_reason="   "
        )


def test_a_met_goal_lets_the_promotion_through(world, manager, endpoint, version) -> None:
    GoalFactory(project=world.project, metric="f1_macro", target=0.70, split="test")
    finished_evaluation(world, version, metric="f1_macro", value=0.62)
    finished_evaluation(world, version, metric="f1_macro", value=0.75)  # the latest counts
    deployment = services.endpoint_promote(actor=manager, endpoint=endpoint, version=version)
    assert deployment.gate_failures == []
    assert AuditEvent.objects.filter(verb="endpoint.promoted").exists()


def test_an_override_is_recorded_with_the_reasons_it_went_past(
    world, manager, endpoint, version
) -> None:
    GoalFactory(project=world.project, metric="f1_macro", target=0.70, split="test")
    deployment = services.endpoint_promote(
        actor=manager,
        endpoint=endpoint,
        version=version,
        override_reason="The goal is measured on a stale test set.",
    )
    blocker = f"No evaluation of {version} measures F1 (macro) on test."
    assert deployment.gate_failures == [blocker]
    assert deployment.override_reason == "The goal is measured on a stale test set."
    event = AuditEvent.objects.get(verb="endpoint.promoted_with_override")
    assert event.actor == manager
    assert event.changes["gate_failures"] == [blocker]
    assert event.changes["override_reason"] == "The goal is measured on a stale test set."


def test_training_warnings_block_too(world, manager, endpoint, tmp_path) -> None:
    diverged = stored_version(
        world.project, tmp_path, warnings=[{"code": "diverged", "message": "Training diverged"}]
    )
    with pytest.raises(ValidationError, match="finished training with a warning"):
        services.endpoint_promote(actor=manager, endpoint=endpoint, version=diverged)


def test_refused_outright_whatever_the_override(world, manager, endpoint, tmp_path) -> None:
    override = {"override_reason": "I insist"}
    rival = stored_version(world.other_project, tmp_path)
    with pytest.raises(ValidationError, match="another project"):
        services.endpoint_promote(actor=manager, endpoint=endpoint, version=rival, **override)
    for kind in ("qa", "seq2seq"):
        unservable = stored_version(world.project, tmp_path, kind=kind)
        with pytest.raises(ValidationError, match="does not serve yet"):
            services.endpoint_promote(
                actor=manager, endpoint=endpoint, version=unservable, **override
            )
    failed = stored_version(world.project, tmp_path)
    build(TrainingJob, world, status="failed", model_version=failed)
    with pytest.raises(ValidationError, match=r"made .* failed"):
        services.endpoint_promote(actor=manager, endpoint=endpoint, version=failed, **override)
    gone = stored_version(world.project, tmp_path)
    default_storage.delete(f"{gone.files_prefix}/model.safetensors")
    with pytest.raises(ValidationError, match="missing from storage"):
        services.endpoint_promote(actor=manager, endpoint=endpoint, version=gone, **override)
    assert not Deployment.objects.filter(endpoint=endpoint).exists()


# --- rollback ---------------------------------------------------------------------------------


def test_rollback_restores_the_previous_version_with_history_rows(
    world, manager, endpoint, tmp_path
) -> None:
    with pytest.raises(ValidationError, match="no previous version"):
        services.endpoint_rollback(actor=manager, endpoint=endpoint)
    first = stored_version(world.project, tmp_path)
    second = stored_version(world.project, tmp_path)
    _served(endpoint, manager, first)
    _served(endpoint, manager, second)
    # A goal the first version misses: a rollback is not gated.
    GoalFactory(project=world.project, metric="f1_macro", target=0.99, split="test")
    rolled = services.endpoint_rollback(actor=manager, endpoint=endpoint, reason="errors up")
    endpoint.refresh_from_db()
    assert endpoint.version == first and rolled.action == "rollback"
    assert rolled.reason == "errors up" and rolled.version == first
    rows = list(Deployment.objects.filter(endpoint=endpoint).order_by("started_at", "id"))
    assert [(r.version, r.action) for r in rows] == [
        (first, "promote"),
        (second, "promote"),
        (first, "rollback"),
    ]
    # Each row ends when the next starts; only the current one is open.
    assert rows[0].ended_at is not None and rows[0].ended_at <= rows[1].started_at
    assert rows[1].ended_at is not None and rows[1].ended_at <= rows[2].started_at
    assert rows[2].ended_at is None
    event = AuditEvent.objects.get(verb="endpoint.rolled_back")
    assert event.changes["version"] == [str(second), str(first)]


# --- canary -----------------------------------------------------------------------------------


def test_canary_rules_and_stop(world, manager, endpoint, tmp_path) -> None:
    primary = stored_version(world.project, tmp_path)
    candidate = stored_version(world.project, tmp_path)
    with pytest.raises(ValidationError, match="Promote a primary version first"):
        services.endpoint_set_canary(
            actor=manager, endpoint=endpoint, version=candidate, percent=10
        )
    _served(endpoint, manager, primary)
    for bad in (100, -1, 150):
        with pytest.raises(ValidationError) as caught:
            services.endpoint_set_canary(
                actor=manager, endpoint=endpoint, version=candidate, percent=bad
            )
        assert "percent" in caught.value.message_dict
    with pytest.raises(ValidationError, match="primary version already"):
        services.endpoint_set_canary(actor=manager, endpoint=endpoint, version=primary, percent=5)
    classifier = stored_version(world.project, tmp_path, kind="classification")
    with pytest.raises(ValidationError, match="answers 'classify'"):
        services.endpoint_set_canary(
            actor=manager, endpoint=endpoint, version=classifier, percent=5
        )

    row = services.endpoint_set_canary(
        actor=manager, endpoint=endpoint, version=candidate, percent=10
    )
    endpoint.refresh_from_db()
    assert (endpoint.canary_version, endpoint.canary_percent) == (candidate, 10)
    assert row.role == "canary" and row.traffic_percent == 10
    again = services.endpoint_set_canary(
        actor=manager, endpoint=endpoint, version=candidate, percent=25
    )
    row.refresh_from_db()
    assert row.ended_at is not None and again.ended_at is None and again.traffic_percent == 25
    revision = Endpoint.objects.get(pk=endpoint.pk).revision
    assert services.endpoint_set_canary(actor=manager, endpoint=endpoint, percent=0) is None
    endpoint.refresh_from_db()
    assert endpoint.canary_version is None and endpoint.canary_percent == 0
    assert endpoint.revision == revision + 1
    assert not Deployment.objects.filter(role="canary", ended_at__isnull=True).exists()
    assert AuditEvent.objects.filter(verb="endpoint.canary_changed").count() == 3


def test_canary_is_gated_and_promoting_it_ends_it(world, manager, endpoint, tmp_path) -> None:
    primary = stored_version(world.project, tmp_path)
    candidate = stored_version(world.project, tmp_path)
    _served(endpoint, manager, primary)
    GoalFactory(project=world.project, metric="f1_macro", target=0.7, split="test")
    with pytest.raises(ValidationError, match="No evaluation"):
        services.endpoint_set_canary(
            actor=manager, endpoint=endpoint, version=candidate, percent=10
        )
    row = services.endpoint_set_canary(
        actor=manager, endpoint=endpoint, version=candidate, percent=10, override_reason="trial"
    )
    assert row.gate_failures and row.override_reason == "trial"
    services.endpoint_promote(
        actor=manager, endpoint=endpoint, version=candidate, override_reason="canary went fine"
    )
    endpoint.refresh_from_db()
    row.refresh_from_db()
    assert endpoint.version == candidate and endpoint.canary_version is None
    assert endpoint.canary_percent == 0 and row.ended_at is not None


# --- keys -------------------------------------------------------------------------------------


def test_keys_are_hashed_shown_once_and_bump_the_projects_endpoints(
    world, manager, endpoint
) -> None:
    key, plaintext = services.serving_key_create(
        actor=manager,
        project=world.project,
        name=" app ",
        endpoint=endpoint,
        expires_in_days=30,
        requests_per_minute=60,
        token_budget=10_000,
        budget_period="week",
    )
    assert plaintext.startswith(f"llmhub-sk-{key.prefix}-") and len(plaintext) > 50
    assert key.key_hash == hash_token(plaintext) and plaintext not in str(key.__dict__)
    assert key.name == "app" and key.requests_per_minute == 60
    assert timedelta(days=29) < key.expires_at - timezone.now() <= timedelta(days=30)
    endpoint.refresh_from_db()
    assert endpoint.revision == 2
    assert plaintext not in str(AuditEvent.objects.get(verb="serving_key.created").changes)

    services.serving_key_revoke(actor=manager, key=key)
    key.refresh_from_db()
    endpoint.refresh_from_db()
    assert key.revoked_at is not None and endpoint.revision == 3
    revoked_at = key.revoked_at
    services.serving_key_revoke(actor=manager, key=key)  # idempotent
    key.refresh_from_db()
    assert key.revoked_at == revoked_at


def test_bad_key_requests_are_refused_all_at_once(world, manager) -> None:
    other = services.endpoint_create(actor=world.outsider, project=world.other_project, name="x")
    with pytest.raises(ValidationError) as caught:
        services.serving_key_create(
            actor=manager,
            project=world.project,
            name="k",
            endpoint=other,
            expires_in_days=0,
            requests_per_minute=0,
            tokens_per_minute=-5,
            token_budget=True,
            budget_period="year",
        )
    assert set(caught.value.message_dict) == {
        "endpoint",
        "expires_in_days",
        "requests_per_minute",
        "tokens_per_minute",
        "token_budget",
        "budget_period",
    }
    assert not ServingKey.objects.exists()


# --- the request log, usage, feedback, purge --------------------------------------------------


def test_ingest_writes_logs_usage_and_feedback_in_one_batch(
    world, manager, endpoint, version
) -> None:
    _served(endpoint, manager, version)
    key, _ = services.serving_key_create(actor=manager, project=world.project, name="app")
    now = time.time()
    records = [
        request_record(endpoint, key_id=key.pk, created_at=now - 5),
        request_record(
            endpoint, key_id=key.pk, created_at=now, prompt_text=None, completion_text=None
        ),
        request_record(
            endpoint,
            key_id=key.pk,
            status_code=429,
            prompt_tokens=0,
            completion_tokens=0,
            error_code="rate_limit_exceeded",
        ),
        request_record(endpoint, endpoint_id=999_999),  # endpoint gone: dropped
        request_record(endpoint, version_id=999_999, key_id=999_998),  # kept with nulls
        request_record(endpoint, prompt_text="nul \x00 byte"),
        FeedbackRecord(
            response_id="cmpl-1", endpoint_id=endpoint.pk, key_id=key.pk, score=-1, comment="wrong"
        ),
        FeedbackRecord(response_id="cmpl-2", endpoint_id=999_999, key_id=None, score=1),
    ]
    assert services.request_logs_ingest(records=records) == 5
    logs = RequestLog.objects.filter(endpoint=endpoint)
    assert logs.count() == 5
    private = logs.get(created_at__gte=timezone.now() - timedelta(seconds=60), prompt_text=None)
    assert private.completion_text is None  # text None is kept None, not ""
    orphan = logs.get(version__isnull=True)
    assert orphan.key is None
    assert logs.get(prompt_text__startswith="nul").prompt_text == "nul \ufffd byte"
    [usage] = KeyUsage.objects.filter(key=key)
    assert (usage.requests, usage.prompt_tokens, usage.completion_tokens) == (3, 10, 14)
    # A second batch adds to the same day's row.
    services.request_logs_ingest(records=[request_record(endpoint, key_id=key.pk)])
    usage.refresh_from_db()
    assert (usage.requests, usage.prompt_tokens) == (4, 15)
    key.refresh_from_db()
    assert key.last_used_at is not None
    [thumb] = ResponseFeedback.objects.all()
    assert (thumb.score, thumb.source, thumb.key, thumb.comment) == (-1, "api", key, "wrong")
    assert services.request_logs_ingest(records=[]) == 0


def test_feedback_record_validates_and_a_second_rating_replaces_the_first(world, endpoint) -> None:
    engineer = world.users["engineer"]
    with pytest.raises(ValidationError) as caught:
        services.feedback_record(actor=engineer, endpoint=endpoint, response_id="", score=2)
    assert set(caught.value.message_dict) == {"response_id", "score"}
    with pytest.raises(PermissionDenied):
        services.feedback_record(
            actor=world.users["viewer"], endpoint=endpoint, response_id="r", score=1
        )
    services.feedback_record(actor=engineer, endpoint=endpoint, response_id="chatcmpl-1", score=1)
    services.feedback_record(
        actor=engineer, endpoint=endpoint, response_id="chatcmpl-1", score=-1, comment="meh"
    )
    [feedback] = ResponseFeedback.objects.all()
    assert (feedback.score, feedback.comment, feedback.source) == (-1, "meh", "playground")
    assert AuditEvent.objects.filter(verb="response_feedback.recorded").count() == 2


def test_purge_deletes_by_each_endpoints_retention(world, manager, endpoint) -> None:
    short = services.endpoint_create(
        actor=manager, project=world.project, name="Short", log_retention_days=1
    )
    now = time.time()
    day = 86400
    services.request_logs_ingest(
        records=[
            request_record(endpoint, created_at=now - 2 * day),  # kept: 30 days
            request_record(endpoint, created_at=now - 31 * day),  # gone
            request_record(short, created_at=now - 2 * day),  # gone: 1 day
            request_record(short, created_at=now - 60),  # kept
        ]
    )
    assert services.request_logs_purge() == 2
    assert RequestLog.objects.filter(endpoint=endpoint).count() == 1
    assert RequestLog.objects.filter(endpoint=short).count() == 1
    assert services.request_logs_purge(now=timezone.now() + timedelta(days=40)) == 2
