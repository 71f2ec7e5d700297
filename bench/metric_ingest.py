"""Benchmark: metric points written through the batch metrics API into PostgreSQL, and the
latency of fetching a 100,000-point curve downsampled for a chart.

Starts the web server (gunicorn with one worker, as in production) on a scratch PostgreSQL
database (DATABASE_URL's server, default postgres@127.0.0.1:5432; a database of this run's own,
``llmhub_bench_metrics_<pid>_<random>``, is created and dropped at the end, also on Ctrl-C or
SIGTERM, as is the scratch folder), opens an external run, posts batches of
points with a bearer token over HTTP, then fetches the 100,000-point loss curve (downsampled to
at most 2,000 points keeping each bucket's extremes) repeatedly.

    .venv/bin/python bench/metric_ingest.py
    .venv/bin/python bench/metric_ingest.py --points 50000 --batch 5000
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.helpers import (  # noqa: E402
    drop_database,
    fresh_database,
    postgres_server,
    start_web_server,
    stop_on_sigterm,
    stop_process,
    unique_name,
)

PYTHON = sys.executable

SETUP = """
from django.contrib.auth.models import User
from projects.services import team_create, project_create, api_token_create
user = User.objects.create_user("bench", password="bench-password-123")
team = team_create(actor=user, name="Bench")
project = project_create(actor=user, team=team, name="Bench", task_type="generation")
_, token = api_token_create(actor=user, name="bench")
print(project.pk, token)
"""


def _request(port: int, method: str, path: str, token: str, body: dict | None = None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    payload = json.dumps(body).encode() if body is not None else None
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    started = time.perf_counter()
    connection.request(method, path, body=payload, headers=headers)
    response = connection.getresponse()
    data = response.read()
    elapsed = time.perf_counter() - started
    connection.close()
    if response.status >= 400:
        raise SystemExit(f"{method} {path}: HTTP {response.status}: {data[:300]!r}")
    return json.loads(data) if data else None, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--fetches", type=int, default=15)
    args = parser.parse_args()

    server_url = postgres_server()
    if server_url is None:
        raise SystemExit("This benchmark needs PostgreSQL (DATABASE_URL or 127.0.0.1:5432).")
    stop_on_sigterm()
    database = unique_name("llmhub_bench_metrics")
    scratch = Path(tempfile.mkdtemp(prefix="llmhub-metric-bench-"))
    created = False
    server = None
    try:
        database_url = fresh_database(server_url, database)
        created = True
        env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL",)}
        env |= {
            "DATABASE_URL": database_url,
            "LLMHUB_VAR_DIR": str(scratch),
            "DJANGO_SETTINGS_MODULE": "llmhub.settings",
            "DEBUG": "false",
            "LLMHUB_ENV": "development",
        }
        subprocess.run([PYTHON, "manage.py", "migrate", "-v0"], cwd=REPO, env=env, check=True)
        out = subprocess.run(
            [PYTHON, "manage.py", "shell", "-c", SETUP],
            cwd=REPO,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
        project_id, token = int(out[-2]), out[-1]
        server, port = start_web_server(env, gunicorn=True)
        run, _ = _request(
            port,
            "POST",
            "/api/v1/training-jobs/external/",
            token,
            {"project": project_id, "name": "ingest-bench"},
        )
        job = run["id"]
        warm = [{"step": s, "name": "warmup", "value": 1.0} for s in range(1000)]
        _request(port, "POST", f"/api/v1/training-jobs/{job}/metrics/", token, {"points": warm})

        batch_seconds = []
        for start in range(0, args.points, args.batch):
            points = [
                {
                    "step": s,
                    "name": "loss",
                    "value": 3 * math.exp(-s / 30_000) + 0.1 * math.sin(s / 37),
                }
                for s in range(start, min(start + args.batch, args.points))
            ]
            stored, seconds = _request(
                port, "POST", f"/api/v1/training-jobs/{job}/metrics/", token, {"points": points}
            )
            assert stored["stored"] == len(points)
            batch_seconds.append(seconds)
        ingest_rate = args.points / sum(batch_seconds)

        fetches = []
        for index in range(args.fetches + 2):
            curve, seconds = _request(
                port, "GET", f"/api/v1/training-jobs/{job}/curves/?names=loss", token
            )
            if index >= 2:  # two warm-up fetches
                fetches.append(seconds)
        loss = curve["curves"]["loss"]
    finally:
        stop_process(server)
        if created:
            drop_database(server_url, database)
        shutil.rmtree(scratch, ignore_errors=True)

    fetch_ms = statistics.median(fetches) * 1000
    print(
        f"Batch metrics API into PostgreSQL: {args.points:,} points in batches of "
        f"{args.batch:,}; curve of {loss['total']:,} points fetched {args.fetches} times"
    )
    print(
        f"{'points/s':>12} {'batch p50 ms':>13} {'curve points':>13} {'fetch p50 ms':>13} "
        f"{'fetch max ms':>13}"
    )
    print(
        f"{ingest_rate:>12,.0f} {statistics.median(batch_seconds) * 1000:>13.0f} "
        f"{len(loss['steps']):>13,} {fetch_ms:>13.1f} {max(fetches) * 1000:>13.1f}"
    )
    print(
        "(times are client-side round trips over HTTP on this machine: they include the "
        "server's work and the transfer)"
    )
    print(
        json.dumps(
            {
                "figures": {
                    "ingest_points_per_second": round(ingest_rate),
                    "curve_fetch_ms": round(fetch_ms, 1),
                    "curve_points_returned": len(loss["steps"]),
                },
                "targets": {
                    "ingest_points_per_second": {"min": 50_000},
                    "curve_fetch_ms": {"max": 100},
                },
            }
        )
    )


if __name__ == "__main__":
    main()
