"""Classification evaluations: the confusion matrix (counts and normalised), per-class precision,
recall, F1 and support, the most confused pairs; checked against scikit-learn, through the API
and on the run page. Runs and their examples are made through the ORM (no worker needed)."""

from __future__ import annotations

import random

import pytest
from django.test import Client
from django.urls import reverse
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

from evaluation.metrics.confusion import NONE, OTHER, confusion
from evaluation.models import EvaluationExample, EvaluationRun
from llmhub.models import JobStatus
from tests.api.objects import build

# 10 cats (8 right, 2 called dogs), 6 dogs (5 right, 1 called a bird), 4 birds (all right).
PAIRS = (
    [("cat", "cat")] * 8
    + [("cat", "dog")] * 2
    + [("dog", "dog")] * 5
    + [("dog", "bird")]
    + [("bird", "bird")] * 4
)


def test_matches_scikit_learn_on_random_labels() -> None:
    rng = random.Random(3)
    labels = ["a", "b", "c", "d", "e"]
    truth = [rng.choice(labels) for _ in range(500)]
    predicted = [t if rng.random() < 0.6 else rng.choice(labels[:4]) for t in truth]
    data = confusion(zip(truth, predicted, strict=True))
    order = data["labels"]
    assert data["matrix"] == confusion_matrix(truth, predicted, labels=order).tolist()
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, predicted, labels=order, zero_division=0
    )
    for i, row in enumerate(data["classes"]):
        assert row["label"] == order[i] and row["support"] == support[i]
        assert row["precision"] == pytest.approx(precision[i])
        assert row["recall"] == pytest.approx(recall[i])
        assert row["f1"] == pytest.approx(f1[i])
    assert data["macro_f1"] == pytest.approx(f1_score(truth, predicted, average="macro"))
    assert data["accuracy"] == pytest.approx(
        sum(t == p for t, p in zip(truth, predicted, strict=True)) / 500
    )
    for row, counts in zip(data["normalized"], data["matrix"], strict=True):
        assert sum(row) == pytest.approx(1.0) and row[0] == pytest.approx(counts[0] / sum(counts))


def test_order_pairs_missing_predictions_and_pooling() -> None:
    data = confusion([*PAIRS, ("bird", None), (None, "cat")])
    assert data["labels"] == ["cat", "dog", "bird", NONE]  # most supported first
    assert data["matrix"][0] == [8, 2, 0, 0] and data["matrix"][2] == [0, 0, 4, 1]
    assert data["skipped"] == 1 and data["n"] == 21
    assert [(p["reference"], p["prediction"], p["count"]) for p in data["pairs"]] == [
        ("cat", "dog", 2),
        ("bird", NONE, 1),
        ("dog", "bird", 1),
    ]
    assert data["pairs"][0]["share"] == pytest.approx(0.2)
    many = confusion([(f"c{i:02d}", f"c{i:02d}") for i in range(40) for _ in range(40 - i)])
    assert len(many["labels"]) == 30 and many["labels"][-1] == OTHER and many["pooled"] == 11
    assert len(many["classes"]) == 40  # every class keeps its own row of figures
    assert sum(map(sum, many["matrix"])) == many["n"] and many["accuracy"] == 1.0


@pytest.fixture
def run(world):
    run = build(
        EvaluationRun,
        world,
        task_type="classification",
        status=JobStatus.SUCCEEDED,
        metrics=["accuracy"],
        results={"accuracy": {"value": 0.85, "ci_low": 0.7, "ci_high": 0.95, "n": 20}},
    )
    EvaluationExample.objects.bulk_create(
        EvaluationExample(
            run=run, index=i, input=f"animal {i}", reference=ref, prediction=pred, score=ref == pred
        )
        for i, (ref, pred) in enumerate(PAIRS)
    )
    return run


def test_confusion_api(world, api, run) -> None:
    client = api(world.users["viewer"])
    body = client.get(f"/api/v1/evaluation-runs/{run.pk}/confusion/").json()
    assert body["run"] == run.pk and body["labels"] == ["cat", "dog", "bird"]
    assert body["matrix"] == [[8, 2, 0], [0, 5, 1], [0, 0, 4]]
    assert body["normalized"][1] == [0, pytest.approx(5 / 6), pytest.approx(1 / 6)]
    cat = body["classes"][0]
    assert (cat["precision"], cat["recall"], cat["support"]) == (1.0, 0.8, 10)
    assert body["pairs"][0] == {"reference": "cat", "prediction": "dog", "count": 2, "share": 0.2}
    assert body["accuracy"] == pytest.approx(17 / 20)
    assert (
        api(world.outsider).get(f"/api/v1/evaluation-runs/{run.pk}/confusion/").status_code == 404
    )
    run.task_type = "summarization"
    run.save(update_fields=["task_type"])
    refused = client.get(f"/api/v1/evaluation-runs/{run.pk}/confusion/")
    assert refused.status_code == 400 and "classification" in refused.json()["error"]["message"]


def test_run_page_shows_the_matrix_per_class_table_and_pairs(world, run) -> None:
    browser = Client()
    browser.force_login(world.users["viewer"])
    html = browser.get(reverse("evaluation-run-page", args=[run.pk])).content.decode()
    assert 'id="confusion"' in html and 'id="confusion-figure"' in html
    assert 'data-count="2" data-share="20%"' in html  # cat -> dog, both views
    assert "<strong>cat</strong> predicted as <strong>dog</strong>: 2 (20% of cat)" in html
    assert '<td>cat</td><td class="num mono">1</td><td class="num mono">0.8</td>' in html
    # Not for a run still going, nor for another task type.
    run.status = JobStatus.RUNNING
    run.save(update_fields=["status"])
    html = browser.get(reverse("evaluation-run-page", args=[run.pk])).content.decode()
    assert 'id="confusion"' not in html
