"""Evaluation through the API: runs on trained models, per-example outputs, goals that follow
the latest evaluation, comparisons, per-example diffs, bias reports, and bad inputs."""

from __future__ import annotations

import pytest
from django.utils import timezone

from evaluation.models import BiasReport, EvaluationExample, EvaluationRun
from evaluation.services import goals_refresh
from llmhub.jobs import run_job_inline
from llmhub.models import JobStatus
from projects.models import GoalStatus
from projects.services import goal_create
from tests.training.conftest import TINY, prepare
from tests.training.test_training_api import run_training
from training.models import ModelVersion


def run_evaluations() -> list:
    done = []
    for model in (EvaluationRun, BiasReport):
        while job := model.objects.filter(status=JobStatus.QUEUED).order_by("id").first():
            run_job_inline(job)
            job.refresh_from_db()
            done.append(job)
    return done


@pytest.fixture
def trained(world, api):
    """Two tiny poem classifiers (different learning rates) and a tiny causal LM."""
    prepared = prepare(world)
    client = api(world.users["engineer"])
    for name, lr in (("weak", 0.00001), ("strong", 0.003)):
        response = client.post(
            "/api/v1/training-jobs/",
            {
                "project": world.project.pk,
                "name": name,
                "kind": "classification",
                "model_spec": {"family": "bert", "size": "tiny"},
                "tokenizer": prepared.tokenizer.pk,
                "train_version": prepared.poems.pk,
                "train_split": "train",
                "hyperparameters": {**TINY, "learning_rate": lr, "max_steps": 40},
            },
        )
        assert response.status_code == 201, response.content
    client.post(
        "/api/v1/training-jobs/",
        {
            "project": world.project.pk,
            "name": "bard",
            "kind": "pretrain_clm",
            "model_spec": {"family": "gpt2", "size": "tiny"},
            "tokenizer": prepared.tokenizer.pk,
            "train_version": prepared.corpus.pk,
            "hyperparameters": {**TINY, "max_steps": 20},
        },
    )
    jobs = run_training()
    assert all(j.status == JobStatus.SUCCEEDED for j in jobs), [j.error for j in jobs]
    return prepared, {j.name: j.model_version for j in jobs}


def evaluate(client, model, prepared, **overrides):
    body = {
        "model_version": model.pk,
        "dataset_version": prepared.poems.pk,
        "split": "test",
        "settings": {"batch_size": 16},
    }
    return client.post("/api/v1/evaluation-runs/", {**body, **overrides})


def test_evaluate_two_classifiers_goals_compare_and_diff(world, api, trained) -> None:
    prepared, models = trained
    client = api(world.users["manager"])
    goal = goal_create(
        actor=world.users["manager"], project=world.project, metric="accuracy", target=0.99
    )
    weak = evaluate(client, models["weak"], prepared)
    assert weak.status_code == 201, weak.content
    assert weak.json()["metrics"] == ["accuracy", "f1_macro", "precision_macro", "recall_macro"]
    run_evaluations()
    weak_run = EvaluationRun.objects.get(pk=weak.json()["id"])
    assert weak_run.status == JobStatus.SUCCEEDED, weak_run.error
    result = weak_run.results["accuracy"]
    assert 0 <= result["ci_low"] <= result["value"] <= result["ci_high"] <= 1
    assert weak_run.n_examples == 48 == EvaluationExample.objects.filter(run=weak_run).count()
    goal.refresh_from_db()
    assert goal.measured_value == result["value"] and goal.status == GoalStatus.NOT_MET
    assert f"evaluation #{weak_run.pk}" in goal.measured_source

    strong_run_id = evaluate(client, models["strong"], prepared).json()["id"]
    run_evaluations()

    examples = client.get(f"/api/v1/evaluation-runs/{strong_run_id}/examples/?order=score")
    rows = examples.json()["results"]
    assert examples.json()["count"] == 48 and rows[0]["score"] <= rows[-1]["score"]
    assert {"input", "reference", "prediction", "scores"} <= set(rows[0])
    search = client.get(f"/api/v1/evaluation-runs/{strong_run_id}/examples/?search=zzzz")
    assert search.json()["count"] == 0

    comparison = client.get(
        f"/api/v1/evaluation-runs/compare/?runs={weak_run.pk},{strong_run_id}"
    ).json()
    accuracy = next(m for m in comparison["metrics"] if m["metric"] == "accuracy")
    assert accuracy["values"][0]["delta"] == 0 and comparison["baseline"] == weak_run.pk
    assert set(comparison["curves"]) == {str(weak_run.pk), str(strong_run_id)} or set(
        comparison["curves"]
    ) == {weak_run.pk, strong_run_id}
    diff = client.get(f"/api/v1/evaluation-runs/diff/?a={weak_run.pk}&b={strong_run_id}").json()
    assert diff["compared"] == 48
    assert diff["same"] + diff["a_better_count"] + diff["b_better_count"] == 48

    progress = client.get(f"/api/v1/evaluation-runs/goals/?project={world.project.pk}").json()
    assert len(progress[0]["points"]) == 2 and progress[0]["best"] is not None


def test_goal_status_flips_when_a_better_run_arrives(world, api, trained) -> None:
    prepared, models = trained
    goal = goal_create(
        actor=world.users["manager"], project=world.project, metric="f1_macro", target=0.5
    )

    def finished(model, value):
        return EvaluationRun.objects.create(
            project=world.project,
            model_version=model,
            dataset_version=prepared.poems,
            split="test",
            task_type="classification",
            metrics=["f1_macro"],
            status=JobStatus.SUCCEEDED,
            finished_at=timezone.now(),
            results={"f1_macro": {"value": value, "ci_low": value, "ci_high": value, "n": 48}},
        )

    finished(models["weak"], 0.3)
    goals_refresh(project=world.project)
    goal.refresh_from_db()
    assert goal.status == GoalStatus.NOT_MET
    finished(models["strong"], 0.6)  # the latest evaluated model is the chosen one
    goals_refresh(project=world.project)
    goal.refresh_from_db()
    assert goal.status == GoalStatus.MET and goal.measured_value == 0.6
    # Once a version is in production, goals follow it, even if another was evaluated later.
    models["weak"].stage = "production"
    models["weak"].save()
    goals_refresh(project=world.project)
    goal.refresh_from_db()
    assert goal.status == GoalStatus.NOT_MET and goal.measured_value == 0.3


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"metrics": ["bleu"]}, "metrics", "BLEU does not fit a classification task"),
        ({"metrics": ["wow"]}, "metrics", "Unknown metric"),
        ({"split": "holdout"}, "split", "has no 'holdout' split"),
        ({"settings": {"temperature": -1}}, "settings", "temperature must be between"),
        ({"settings": {"beams": 2}}, "settings", "Unknown setting"),
    ],
)
def test_bad_evaluations_are_refused(world, api, trained, overrides, field, message) -> None:
    prepared, models = trained
    response = evaluate(api(world.users["engineer"]), models["strong"], prepared, **overrides)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert field in error["fields"] and message in error["message"], error
    assert not EvaluationRun.objects.exists()


def test_a_split_without_references_is_refused(world, api, trained) -> None:
    prepared, models = trained
    response = evaluate(
        api(world.users["engineer"]),
        models["strong"],
        prepared,
        dataset_version=prepared.corpus.pk,
        split="",
    )
    assert response.status_code == 400
    assert "no references to compare with" in response.json()["error"]["message"]


def test_bias_reports_on_a_tiny_causal_lm(world, api, trained) -> None:
    prepared, models = trained
    client = api(world.users["engineer"])
    bard = models["bard"]
    for kind, params in (
        ("crows_pairs", {"max_pairs": 30}),
        ("bold", {"max_prompts_per_group": 1, "max_new_tokens": 6}),
        ("winobias", {"max_pairs": 20}),
    ):
        response = client.post(
            "/api/v1/bias-reports/", {"kind": kind, "model_version": bard.pk, "params": params}
        )
        assert response.status_code == 201, response.content
    run_evaluations()
    reports = {r.kind: r for r in BiasReport.objects.all()}
    for kind, report in reports.items():
        assert report.status == JobStatus.SUCCEEDED, (kind, report.error)
        assert report.report["explanation"] and report.report["groups"]
    assert 0 <= reports["crows_pairs"].report["summary"]["stereotype_preferred"] <= 1
    assert -1 <= reports["bold"].report["summary"]["mean_compound"] <= 1
    assert 0 <= reports["winobias"].report["summary"]["pro_preferred"] <= 1
    bad = client.post(
        "/api/v1/bias-reports/",
        {"kind": "crows_pairs", "model_version": bard.pk, "probe_version": prepared.poems.pk},
    )
    assert bad.status_code == 400 and "sent_more" in bad.json()["error"]["message"]


def test_slice_report_by_a_column(world, api, trained) -> None:
    prepared, models = trained
    client = api(world.users["engineer"])
    run_id = evaluate(client, models["strong"], prepared).json()["id"]
    run_evaluations()
    response = client.post(
        "/api/v1/bias-reports/",
        {"kind": "slice", "evaluation": run_id, "column": "label", "metric": "accuracy"},
    )
    assert response.status_code == 201, response.content
    run_evaluations()
    report = BiasReport.objects.get(kind="slice")
    assert report.status == JobStatus.SUCCEEDED, report.error
    groups = {g["group"] for g in report.report["groups"]}
    assert {"no_impact", "negative"} <= groups
    assert "largest_disparity" in report.report["summary"]
    # Each example shows what the model read, next to its group and scores.
    examples = report.report["examples"]
    assert examples and all(isinstance(e["input"], str) and e["input"] for e in examples)
    bad = client.post(
        "/api/v1/bias-reports/", {"kind": "slice", "evaluation": run_id, "column": "mood"}
    )
    assert bad.status_code == 400 and "No column named 'mood'" in bad.json()["error"]["message"]


def test_other_teams_cannot_see_evaluations(world, api, trained) -> None:
    prepared, models = trained
    run_id = evaluate(api(world.users["engineer"]), models["strong"], prepared).json()["id"]
    outsider = api(world.outsider)
    for url in (
        f"/api/v1/evaluation-runs/{run_id}/",
        f"/api/v1/evaluation-runs/{run_id}/examples/",
        f"/api/v1/evaluation-runs/goals/?project={world.project.pk}",
    ):
        assert outsider.get(url).status_code == 404, url
    assert outsider.get(f"/api/v1/evaluation-runs/compare/?runs={run_id}").status_code == 400
    assert evaluate(outsider, models["strong"], prepared).status_code == 400
    assert evaluate(api(world.users["viewer"]), models["strong"], prepared).status_code == 403
    assert ModelVersion.objects.count() == 3


def test_a_new_goal_is_measured_by_existing_evaluations(world, api, trained) -> None:
    prepared, models = trained
    client = api(world.users["engineer"])
    evaluate(client, models["strong"], prepared)
    run_evaluations()
    run = EvaluationRun.objects.get()
    goal = goal_create(
        actor=world.users["manager"], project=world.project, metric="accuracy", target=0.1
    )
    assert goal.measured_value == run.value("accuracy") and goal.status == GoalStatus.MET
