"""The web app's GET /metrics (job queue depths and outcomes by kind, counted from the
database), who may scrape it, and the Grafana dashboard in docs/grafana, whose every query
names a metric the web app or the inference process really exports."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from llmhub import metrics
from llmhub.jobs import registered_job_models
from serving.engine.metrics import EngineMetrics
from training.models import TrainingJob

REPO_ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = REPO_ROOT / "docs" / "grafana" / "llmhub.json"


def _samples(body: bytes) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def _job(world, status: str, **fields) -> TrainingJob:
    return TrainingJob.objects.create(
        project=world.project, name=f"j-{status}", kind="classification", status=status, **fields
    )


@pytest.mark.django_db
@override_settings(DEBUG=False, LLMHUB_METRICS_TOKEN="")
def test_queue_depths_and_outcomes_by_kind_in_one_query_per_job_model(world) -> None:
    now = timezone.now()
    _job(world, "queued", created_at=now - timedelta(minutes=10))
    _job(world, "queued", created_at=now - timedelta(minutes=1))
    _job(world, "running")
    for status in ("succeeded", "succeeded", "failed", "cancelled"):
        _job(world, status)

    with CaptureQueriesContext(connection) as queries:
        response = Client().get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    assert len(queries) == len(registered_job_models())

    samples = _samples(response.content)
    kind = (("kind", "training_job"),)

    def value(name: str, **labels) -> float:
        return samples[(name, tuple(sorted({**dict(kind), **labels}.items())))]

    assert value(metrics.QUEUE_DEPTH, status="queued") == 2
    assert value(metrics.QUEUE_DEPTH, status="running") == 1
    assert value(metrics.OUTCOMES, outcome="succeeded") == 2
    assert value(metrics.OUTCOMES, outcome="failed") == 1
    assert value(metrics.OUTCOMES, outcome="cancelled") == 1
    assert 599 <= value(metrics.OLDEST_QUEUED) <= 700
    # Every registered kind is reported, with zeros where it has no job.
    kinds = {dict(labels)["kind"] for (name, labels) in samples if name == metrics.QUEUE_DEPTH}
    assert kinds == {metrics.kind_name(m) for m in registered_job_models()}
    assert "data_job" in kinds
    assert samples[(metrics.OUTCOMES, (("kind", "data_job"), ("outcome", "failed")))] == 0


@pytest.mark.django_db
@override_settings(DEBUG=False, LLMHUB_METRICS_TOKEN="")
def test_without_a_token_only_direct_private_clients_may_scrape() -> None:
    assert Client(REMOTE_ADDR="127.0.0.1").get("/metrics").status_code == 200
    assert Client(REMOTE_ADDR="10.1.2.3").get("/metrics").status_code == 200
    assert Client(REMOTE_ADDR="::ffff:192.168.1.9").get("/metrics").status_code == 200
    public = Client(REMOTE_ADDR="8.8.8.8").get("/metrics")
    assert public.status_code == 403 and b"LLMHUB_METRICS_TOKEN" in public.content
    # Relayed by a proxy, a public client would look local: refused.
    relayed = Client(REMOTE_ADDR="127.0.0.1").get("/metrics", HTTP_X_FORWARDED_FOR="8.8.8.8")
    assert relayed.status_code == 403
    assert Client().post("/metrics").status_code == 405


@pytest.mark.django_db
@override_settings(DEBUG=False, LLMHUB_METRICS_TOKEN="s3cret-token")
def test_with_a_token_every_scraper_must_send_it() -> None:
    client = Client(REMOTE_ADDR="127.0.0.1")
    missing = client.get("/metrics")
    assert missing.status_code == 401 and missing["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    remote = Client(REMOTE_ADDR="8.8.8.8")
    ok = remote.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-token")
    assert ok.status_code == 200 and metrics.QUEUE_DEPTH.encode() in ok.content


@pytest.mark.django_db
@override_settings(DEBUG=True, LLMHUB_METRICS_TOKEN="")
def test_development_answers_anyone() -> None:
    assert Client(REMOTE_ADDR="8.8.8.8").get("/metrics").status_code == 200


def _exported_names() -> set[str]:
    """Sample names the engine and the web app export (counters' _total, histograms' _bucket,
    _sum and _count), read from their own registries after one of everything."""
    engine = EngineMetrics()
    engine.request_done(
        endpoint="e",
        version="1",
        status=200,
        finish_reason="stop",
        prompt_tokens=3,
        completion_tokens=4,
        e2e_seconds=0.2,
        ttft_seconds=0.05,
        inter_token_seconds=[0.01],
        cache_hit=True,
    )
    engine.rate_limited(endpoint="e", version="1", kind="requests")
    engine.set_queue(endpoint="e", version="1", running=1, waiting=2)
    names = {s.name for family in engine.registry.collect() for s in family.samples}
    web = text_string_to_metric_families(metrics.render().decode())
    return names | {s.name for family in web for s in family.samples}


@pytest.mark.django_db
def test_the_grafana_dashboard_queries_only_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exported = _exported_names()
    assert dashboard["title"] and dashboard["uid"] and dashboard["schemaVersion"] >= 30
    panels = dashboard["panels"]
    titles = " / ".join(p["title"] for p in panels).lower()
    for wanted in ("request", "latency p95", "error", "queue depth", "outcome"):
        assert wanted in titles
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            named = set(re.findall(r"llmhub:[A-Za-z0-9_:]+", target["expr"]))
            assert named, (panel["title"], target["expr"])
            assert named <= exported, (panel["title"], named - exported)
    p95 = next(p for p in panels if "latency p95" in p["title"].lower())
    assert "histogram_quantile(0.95" in p95["targets"][0]["expr"]
    assert "llmhub:e2e_request_latency_seconds_bucket" in p95["targets"][0]["expr"]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("definition", "")
        assert set(re.findall(r"llmhub:[A-Za-z0-9_:]+", query)) <= exported
