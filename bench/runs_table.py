"""Benchmark: the runs table of a project with 500 training runs.

Creates one project with 500 training jobs (each with a dozen hyperparameters, a few final
metrics and a stored curve summary, as finished jobs have; on PostgreSQL when one answers at
DATABASE_URL or 127.0.0.1:5432, in a database of this run's own,
``llmhub_bench_runs_<pid>_<random>``, dropped at the end; else SQLite in a scratch folder,
removed at the end; also on Ctrl-C or SIGTERM), then times, in the web process, after one
warm-up, the median of ``--repeat`` rounds of:
- the table's data (``frontend.views.runs.runs_table``: the jobs' query, filters, sort, the
  columns), plain, sorted by a hyperparameter, filtered by a hyperparameter value, and grouped
  by a hyperparameter;
- the whole page (Django's test client: server time, HTML included).
It also counts the SQL queries of the page for 20 and for 500 runs, which must be the same.

    .venv/bin/python bench/runs_table.py
    .venv/bin/python bench/runs_table.py --runs 2000 --repeat 5
"""

from __future__ import annotations

import argparse
import json
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
    stop_on_sigterm,
    unique_name,
)


def populate(runs: int):
    """A user, a project and ``runs`` finished training jobs of a sweep-like grid."""
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

    from projects.services import project_create, team_create
    from training.models import TrainingJob

    call_command("migrate", verbosity=0)
    user = User.objects.create_user("bench", password="bench-password-123")
    team = team_create(actor=user, name="Bench")
    project = project_create(actor=user, team=team, name="Bench", task_type="classification")
    rng = random.Random(0)
    now = timezone.now()
    curve = {"loss": {"steps": list(range(0, 500, 5)), "values": [2 - i / 100 for i in range(100)]}}
    jobs = []
    for index in range(runs):
        lr = rng.choice([1e-4, 3e-4, 1e-3, 3e-3])
        loss = rng.uniform(0.3, 1.5)
        started = now - timezone.timedelta(minutes=rng.randint(5, 600))
        jobs.append(
            TrainingJob(
                project=project,
                name=f"run {index}",
                kind=rng.choice(["classification", "pretrain_clm"]),
                status=rng.choice(["succeeded"] * 8 + ["failed", "cancelled"]),
                hyperparameters={
                    "learning_rate": lr,
                    "batch_size": rng.choice([8, 16, 32]),
                    "max_steps": 500,
                    "epochs": 1,
                    "warmup_steps": rng.choice([0, 50]),
                    "weight_decay": rng.choice([0.0, 0.01]),
                    "lr_scheduler": rng.choice(["linear", "cosine"]),
                    "max_seq_length": 128,
                    "seed": index % 5,
                    "precision": "fp32",
                    "logging_steps": 10,
                    "eval_steps": 50,
                },
                final_metrics={
                    "train_loss": loss + 0.1,
                    "eval_loss": loss,
                    "eval_accuracy": 1 - loss / 2,
                    "train_runtime": rng.uniform(10, 600),
                },
                curve_summary=curve,
                log="step ...\n" * 200,
                started_at=started,
                finished_at=started + timezone.timedelta(seconds=rng.randint(10, 600)),
                created_at=started,
            )
        )
    TrainingJob.objects.bulk_create(jobs, batch_size=500)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    return user, project


def median_ms(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def page_queries(client, url: str) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200, response.status_code
    return len(queries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    stop_on_sigterm()
    scratch = Path(tempfile.mkdtemp(prefix="llmhub-runs-bench-"))
    server = postgres_server()
    database = unique_name("llmhub_bench_runs") if server else None
    configured = False
    try:
        configure_django(scratch, server, database)
        configured = True
        from django.db import connection
        from django.http import QueryDict
        from django.test import Client

        from frontend.views.runs import RunsQuery, runs_table
        from training.models import TrainingJob

        started = time.perf_counter()
        user, project = populate(args.runs)
        setup_seconds = time.perf_counter() - started
        client = Client()
        client.force_login(user)
        url = f"/projects/{project.pk}/train/runs/"
        cases = {
            "plain": "",
            "sorted by a hyperparameter": "sort=-hp:learning_rate",
            "filtered by a hyperparameter": "param=batch_size&value=16&status=succeeded",
            "grouped by a hyperparameter": "group=learning_rate&metric=eval_loss",
        }
        data_ms, page_ms = {}, {}
        for label, params in cases.items():
            query = RunsQuery.from_params(QueryDict(params))
            data_ms[label] = median_ms(lambda q=query: runs_table(user, project, q), args.repeat)
            page_ms[label] = median_ms(lambda p=params: client.get(f"{url}?{p}"), args.repeat)
        queries_all = page_queries(client, f"{url}?group=learning_rate")
        # The same page with 20 runs: delete all but 20 (the query count must not change).
        keep = list(TrainingJob.objects.order_by("id").values_list("id", flat=True)[:20])
        TrainingJob.objects.exclude(id__in=keep).delete()
        queries_20 = page_queries(client, f"{url}?group=learning_rate")
        vendor = connection.vendor
    finally:
        if configured:
            from django.db import connections

            connections.close_all()
        if database:
            drop_database(server, database)
        shutil.rmtree(scratch, ignore_errors=True)

    print(
        f"runs table of {args.runs} training runs on {vendor} (setup {setup_seconds:.0f} s); "
        f"median of {args.repeat} after a warm-up, in the web process"
    )
    print(f"{'request':<32} {'data ms':>9} {'page ms':>9}")
    for label in cases:
        print(f"{label:<32} {data_ms[label]:>9.1f} {page_ms[label]:>9.1f}")
    print(f"queries of the page: {queries_20} with 20 runs, {queries_all} with {args.runs}")
    worst_data = max(data_ms.values())
    print(
        json.dumps(
            {
                "figures": {
                    "runs_table_500_ms": round(worst_data, 1),
                    "runs_table_plain_ms": round(data_ms["plain"], 1),
                    "runs_table_grouped_ms": round(data_ms["grouped by a hyperparameter"], 1),
                    "runs_page_500_ms": round(max(page_ms.values()), 1),
                    "runs_page_queries_20_runs": queries_20,
                    "runs_page_queries_all_runs": queries_all,
                    "runs_page_query_growth": queries_all - queries_20,
                },
                "targets": {
                    "runs_table_500_ms": {"max": 300},
                    "runs_page_query_growth": {"max": 0},
                },
            }
        )
    )


if __name__ == "__main__":
    main()
