"""Benchmark: comparing many runs.

Creates 20 evaluation runs with 10,000 per-example rows each and 20 training runs with 100,000
metric points each (on PostgreSQL when one answers at DATABASE_URL or 127.0.0.1:5432, else
SQLite), then times, in the web process (Django's test client: server time, no network):
- the comparison data request (``/api/v1/evaluation-runs/compare/``) for all 20 runs, and the
  comparison page itself;
- the per-example diff between two runs (``/api/v1/evaluation-runs/diff/``);
and counts their SQL queries for 5 and for 20 runs, which must be the same.

    .venv/bin/python bench/compare.py
    .venv/bin/python bench/compare.py --runs 10 --examples 2000 --points 20000
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.helpers import fresh_database, postgres_server, psql  # noqa: E402

SCRATCH = Path(tempfile.mkdtemp(prefix="llmhub-compare-bench-"))
DATABASE = "llmhub_bench_compare"


SERVER = postgres_server()
os.environ.update(
    {
        "DJANGO_SETTINGS_MODULE": "llmhub.settings",
        "LLMHUB_VAR_DIR": str(SCRATCH),
        "DEBUG": "false",
        "LLMHUB_ENV": "development",
    }
)
os.environ.pop("REDIS_URL", None)
if SERVER:
    os.environ["DATABASE_URL"] = fresh_database(SERVER, DATABASE)
else:
    os.environ.pop("DATABASE_URL", None)

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.utils import timezone  # noqa: E402


def populate(runs: int, examples: int, points: int):
    from django.contrib.auth.models import User

    from datasets_app.models import Dataset, DatasetVersion
    from evaluation.models import EvaluationExample, EvaluationRun
    from projects.services import project_create, team_create
    from training.metrics_store import summarize, write_points
    from training.models import ModelVersion, RegisteredModel, TrainingJob

    call_command("migrate", verbosity=0)
    user = User.objects.create_user("bench", password="bench-password-123")
    team = team_create(actor=user, name="Bench")
    project = project_create(actor=user, team=team, name="Bench", task_type="classification")
    dataset = Dataset.objects.create(project=project, name="d")
    version = DatasetVersion.objects.create(
        dataset=dataset,
        number=1,
        file="x.parquet",
        content_sha256="0" * 64,
        row_count=examples,
        size_bytes=1,
        schema=[{"name": "text", "type": "string"}],
    )
    registered = RegisteredModel.objects.create(project=project, name="m")
    labels = ["positive", "negative", "neutral", "mixed"]
    rng = random.Random(0)
    references = [rng.choice(labels) for _ in range(examples)]
    run_ids = []
    for index in range(runs):
        model = ModelVersion.objects.create(
            registered_model=registered,
            number=index + 1,
            task_kind="classification",
            files_prefix="x",
        )
        job = TrainingJob.objects.create(
            project=project,
            name=f"train {index}",
            kind="classification",
            external=True,
            status="succeeded",
            model_version=model,
        )
        write_points(
            job.pk,
            (
                (s, "loss", 2 * math.exp(-s / (10_000 + 500 * index)) + 0.05 * math.sin(s), None)
                for s in range(points)
            ),
        )
        TrainingJob.objects.filter(pk=job.pk).update(curve_summary=summarize(job.pk))
        accuracy = 0.5 + 0.02 * index
        run = EvaluationRun.objects.create(
            project=project,
            model_version=model,
            dataset_version=version,
            split="test",
            task_type="classification",
            metrics=["accuracy", "f1_macro"],
            status="succeeded",
            finished_at=timezone.now(),
            n_examples=examples,
            results={
                m: {
                    "value": accuracy,
                    "ci_low": accuracy - 0.01,
                    "ci_high": accuracy + 0.01,
                    "n": examples,
                }
                for m in ("accuracy", "f1_macro")
            },
        )
        rows = []
        for i, reference in enumerate(references):
            prediction = reference if rng.random() < accuracy else rng.choice(labels)
            correct = float(prediction == reference)
            rows.append(
                EvaluationExample(
                    run=run,
                    index=i,
                    input=f"example text {i} " * 8,
                    reference=reference,
                    prediction=prediction,
                    scores={"correct": correct},
                    score=correct,
                )
            )
        EvaluationExample.objects.bulk_create(rows, batch_size=5000)
        run_ids.append(run.pk)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    return user, project, run_ids


def timed(client: Client, url: str, repeat: int) -> tuple[float, int, int]:
    """Median milliseconds over ``repeat`` requests (after one warm-up), queries, status."""
    client.get(url)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - started) * 1000)
    with CaptureQueriesContext(connection) as queries:
        client.get(url)
    return statistics.median(times), len(queries), response.status_code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--examples", type=int, default=10_000)
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    try:
        started = time.perf_counter()
        user, project, run_ids = populate(args.runs, args.examples, args.points)
        setup_seconds = time.perf_counter() - started
        client = Client()
        client.force_login(user)
        ids = ",".join(map(str, run_ids))
        few = ",".join(map(str, run_ids[:5]))
        api_ms, api_queries, status = timed(
            client, f"/api/v1/evaluation-runs/compare/?runs={ids}", args.repeat
        )
        _, few_queries, _ = timed(client, f"/api/v1/evaluation-runs/compare/?runs={few}", 1)
        runs_query = "&".join(f"runs={i}" for i in run_ids)
        page_ms, page_queries, page_status = timed(
            client, f"/projects/{project.pk}/evaluate/compare/?{runs_query}", args.repeat
        )
        few_page = "&".join(f"runs={i}" for i in run_ids[:5])
        _, few_page_queries, _ = timed(
            client, f"/projects/{project.pk}/evaluate/compare/?{few_page}", 1
        )
        diff_ms, diff_queries, diff_status = timed(
            client, f"/api/v1/evaluation-runs/diff/?a={run_ids[0]}&b={run_ids[-1]}", args.repeat
        )
        assert (status, page_status, diff_status) == (200, 200, 200)
        vendor = connection.vendor
    finally:
        connection.close()
        if SERVER:
            psql(SERVER, f"DROP DATABASE IF EXISTS {DATABASE}")
        shutil.rmtree(SCRATCH, ignore_errors=True)

    print(
        f"{args.runs} evaluation runs x {args.examples:,} examples, {args.runs} training runs "
        f"x {args.points:,} points, on {vendor} (setup {setup_seconds:.0f} s); server time, "
        f"median of {args.repeat}"
    )
    print(f"{'request':<36} {'ms':>8} {'queries (5 runs)':>17} {'queries (all)':>14}")
    print(f"{'compare data (API)':<36} {api_ms:>8.1f} {few_queries:>17} {api_queries:>14}")
    print(
        f"{'compare page (HTML + charts)':<36} {page_ms:>8.1f} {few_page_queries:>17} "
        f"{page_queries:>14}"
    )
    print(
        f"{'per-example diff (2 x ' + format(args.examples, ',') + ' rows)':<36} "
        f"{diff_ms:>8.1f} {'':>17} {diff_queries:>14}"
    )
    print(
        json.dumps(
            {
                "figures": {
                    "compare_data_ms": round(api_ms, 1),
                    "compare_page_ms": round(page_ms, 1),
                    "example_diff_ms": round(diff_ms, 1),
                    "compare_queries_5_runs": few_queries,
                    "compare_queries_all_runs": api_queries,
                    "compare_query_growth": api_queries - few_queries,
                },
                "targets": {
                    "compare_data_ms": {"max": 300},
                    "example_diff_ms": {"max": 300},
                    "compare_query_growth": {"max": 0},
                },
            }
        )
    )


if __name__ == "__main__":
    main()
