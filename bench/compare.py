"""Benchmark: comparing many runs.

Creates 20 evaluation runs with 10,000 per-example rows each and 20 training runs with 100,000
metric points each (on PostgreSQL when one answers at DATABASE_URL or 127.0.0.1:5432, in a
database of this run's own, ``llmhub_bench_compare_<pid>_<random>``, dropped at the end; else
SQLite in a scratch folder, removed at the end; also on Ctrl-C or SIGTERM), then times:
- the comparison data request (``/api/v1/evaluation-runs/compare/``) for all 20 runs, and the
  comparison page itself;
- the per-example diff between two runs (``/api/v1/evaluation-runs/diff/``);
each twice: in the web process (Django's test client: server time, no network), and through
the real server (gunicorn, one sync worker as in production, started by the bench on a free
port of 127.0.0.1; client-side round trips with a bearer token for the API and a session
cookie for the page). It also counts the SQL queries for 5 and for 20 runs, which must be the
same.

    .venv/bin/python bench/compare.py
    .venv/bin/python bench/compare.py --runs 10 --examples 2000 --points 20000
"""

from __future__ import annotations

import argparse
import http.client
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

from bench.helpers import (  # noqa: E402
    configure_django,
    drop_database,
    postgres_server,
    start_web_server,
    stop_on_sigterm,
    stop_process,
    unique_name,
)


def populate(runs: int, examples: int, points: int):
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

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


def timed(client, url: str, repeat: int) -> tuple[float, int, int]:
    """In the web process: median milliseconds over ``repeat`` requests (after one warm-up),
    queries, status."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.get(url)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - started) * 1000)
    with CaptureQueriesContext(connection) as queries:
        client.get(url)
    return statistics.median(times), len(queries), response.status_code


def timed_http(port: int, url: str, headers: dict[str, str], repeat: int) -> tuple[float, int]:
    """Through the real server: median milliseconds of a full round trip (a new connection
    each time, the body read to the end) over ``repeat`` requests after one warm-up, and the
    response size in bytes."""
    times, size = [], 0
    for index in range(repeat + 1):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        started = time.perf_counter()
        connection.request("GET", url, headers=headers)
        response = connection.getresponse()
        body = response.read()
        elapsed = (time.perf_counter() - started) * 1000
        connection.close()
        if response.status != 200:
            raise SystemExit(f"GET {url} through the server: HTTP {response.status}")
        if index:
            times.append(elapsed)
        size = len(body)
    return statistics.median(times), size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--examples", type=int, default=10_000)
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    stop_on_sigterm()
    scratch = Path(tempfile.mkdtemp(prefix="llmhub-compare-bench-"))
    server = postgres_server()
    database = unique_name("llmhub_bench_compare") if server else None
    web = None
    configured = False
    try:
        configure_django(scratch, server, database)
        configured = True
        from django.conf import settings
        from django.db import connection
        from django.test import Client

        from projects.services import api_token_create

        started = time.perf_counter()
        user, project, run_ids = populate(args.runs, args.examples, args.points)
        setup_seconds = time.perf_counter() - started
        client = Client()
        client.force_login(user)
        _, token = api_token_create(actor=user, name="bench")
        ids = ",".join(map(str, run_ids))
        few = ",".join(map(str, run_ids[:5]))
        runs_query = "&".join(f"runs={i}" for i in run_ids)
        few_page = "&".join(f"runs={i}" for i in run_ids[:5])
        urls = {
            "api": f"/api/v1/evaluation-runs/compare/?runs={ids}",
            "page": f"/projects/{project.pk}/evaluate/compare/?{runs_query}",
            "diff": f"/api/v1/evaluation-runs/diff/?a={run_ids[0]}&b={run_ids[-1]}",
        }
        api_ms, api_queries, status = timed(client, urls["api"], args.repeat)
        _, few_queries, _ = timed(client, f"/api/v1/evaluation-runs/compare/?runs={few}", 1)
        page_ms, page_queries, page_status = timed(client, urls["page"], args.repeat)
        _, few_page_queries, _ = timed(
            client, f"/projects/{project.pk}/evaluate/compare/?{few_page}", 1
        )
        diff_ms, diff_queries, diff_status = timed(client, urls["diff"], args.repeat)
        assert (status, page_status, diff_status) == (200, 200, 200)
        vendor = connection.vendor

        # The same requests through gunicorn: the API with a bearer token, the page with the
        # session the test client logged in (sessions live in the shared database).
        session = client.cookies[settings.SESSION_COOKIE_NAME].value
        bearer = {"Authorization": f"Bearer {token}"}
        cookie = {"Cookie": f"{settings.SESSION_COOKIE_NAME}={session}"}
        connection.close()  # the server's process opens its own
        web, port = start_web_server(dict(os.environ), gunicorn=True)
        http_ms, http_bytes = {}, {}
        for name, headers in (("api", bearer), ("page", cookie), ("diff", bearer)):
            http_ms[name], http_bytes[name] = timed_http(port, urls[name], headers, args.repeat)
    finally:
        stop_process(web)
        if configured:
            from django.db import connections

            connections.close_all()
        if database:
            drop_database(server, database)
        shutil.rmtree(scratch, ignore_errors=True)

    print(
        f"{args.runs} evaluation runs x {args.examples:,} examples, {args.runs} training runs "
        f"x {args.points:,} points, on {vendor} (setup {setup_seconds:.0f} s); median of "
        f"{args.repeat}: server time in the web process (test client), and the round trip "
        "through gunicorn on 127.0.0.1"
    )
    print(
        f"{'request':<36} {'in-process ms':>14} {'gunicorn ms':>12} {'bytes':>10} "
        f"{'queries (5 runs)':>17} {'queries (all)':>14}"
    )
    rows = (
        ("compare data (API)", api_ms, "api", few_queries, api_queries),
        ("compare page (HTML + charts)", page_ms, "page", few_page_queries, page_queries),
        (
            f"per-example diff (2 x {args.examples:,} rows)",
            diff_ms,
            "diff",
            "",
            diff_queries,
        ),
    )
    for label, ms, key, few_count, all_count in rows:
        print(
            f"{label:<36} {ms:>14.1f} {http_ms[key]:>12.1f} {http_bytes[key]:>10,} "
            f"{few_count:>17} {all_count:>14}"
        )
    print(
        json.dumps(
            {
                "figures": {
                    "compare_data_ms": round(api_ms, 1),
                    "compare_page_ms": round(page_ms, 1),
                    "example_diff_ms": round(diff_ms, 1),
                    "compare_data_http_ms": round(http_ms["api"], 1),
                    "compare_page_http_ms": round(http_ms["page"], 1),
                    "example_diff_http_ms": round(http_ms["diff"], 1),
                    "compare_data_bytes": http_bytes["api"],
                    "compare_queries_5_runs": few_queries,
                    "compare_queries_all_runs": api_queries,
                    "compare_query_growth": api_queries - few_queries,
                },
                "targets": {
                    "compare_data_ms": {"max": 300},
                    "example_diff_ms": {"max": 300},
                    "compare_data_http_ms": {"max": 300},
                    "example_diff_http_ms": {"max": 300},
                    "compare_query_growth": {"max": 0},
                },
            }
        )
    )


if __name__ == "__main__":
    main()
