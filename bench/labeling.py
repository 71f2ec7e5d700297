"""Benchmark: 20 concurrent raters labeling through the API on PostgreSQL, and the export of a
100,000-judgment campaign.

Needs PostgreSQL (DATABASE_URL's server, default postgres@127.0.0.1:5432): a database of this
run's own, ``llmhub_bench_labeling_<pid>_<random>``, is created and dropped at the end (also on
Ctrl-C or SIGTERM), as is the scratch folder. It makes a pairwise campaign of ``--items``
(10,000) items with overlap 3 and ``--raters`` (20) raters, each with an API token, vacuums and
analyses it (as autovacuum has by the time raters come to a campaign), starts gunicorn as the
README's production command does (``--workers`` 4 sync workers; ``--threads`` above 1 for
threaded ones), warms every worker up, and has every rater, in its own thread with a keep-alive
HTTP connection, do ``--judgments`` rounds of ``POST feedback-labeling/{id}/next/``, reading the
item ``--think`` seconds (1.0: each time 0.5 to 1.5 s, a rater several times faster than anyone
who reads two answers), then ``POST feedback-assignments/{id}/judgment/``; raters arrive spread
over the first item's time. That pass is the targets' p50/p95. A second pass
(``--saturation-judgments``) has the same raters never stop to read: a load test, every core
busy, whose p95 is 20 / throughput plus queueing, reported as the server's capacity. Then it
checks the database: no item held by more raters than the overlap, no item given twice to one
rater. Then it builds a second campaign of 100,000 judgments (``--export-items`` items x 3
raters, bulk-inserted) and times its preference export (the job run in this process, as a
worker runs it: rows read, Parquet written, the dataset version registered).

    .venv/bin/python bench/labeling.py
    .venv/bin/python bench/labeling.py --judgments 20 --export-items 3000   # a quick look
    .venv/bin/python bench/labeling.py --think 0 --saturation-judgments 0  # raters never read

Targets (the issue): p95 <= 100 ms for next and for submit, 0 over-assignments, 0 double
assignments, export <= 60 s. Latencies are closed-loop on a machine others may share: the load
average is printed beside them. The last line is JSON.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import sys
import tempfile
import threading
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

OVERLAP = 3


def populate_campaign(*, n_items: int, n_raters: int, name: str):
    """An active pairwise campaign of ``n_items`` items and ``n_raters`` raters (with tokens)."""
    from django.contrib.auth.models import User
    from django.utils import timezone

    from evaluation.feedback.models import Campaign, CampaignRater, CampaignStatus, Item
    from projects.models import Membership, Project, Role, Team
    from projects.services import api_token_create

    team, _ = Team.objects.get_or_create(name="Bench", slug="bench")
    project, _ = Project.objects.get_or_create(
        team=team, name="Bench", slug="bench", defaults={"task_type": "causal_lm"}
    )
    campaign = Campaign.objects.create(
        project=project,
        name=name,
        task="pairwise",
        overlap=OVERLAP,
        blind=True,
        status=CampaignStatus.ACTIVE,
        source="upload",
        launched_at=timezone.now(),
        instructions="Pick the better answer.",
    )
    items = (
        Item(
            campaign=campaign,
            index=i,
            prompt=f"Question {i}: how do I reset my password on the support portal?",
            responses=[
                {
                    "text": f"Answer {i} by model {m}: open settings, then security." * 3,
                    "model_version_id": None,
                    "label": f"model {m}",
                }
                for m in ("A", "B")
            ],
        )
        for i in range(n_items)
    )
    Item.objects.bulk_create(items, batch_size=5000)
    raters, tokens = [], []
    for r in range(n_raters):
        user, _ = User.objects.get_or_create(username=f"bench-rater-{r}")
        Membership.objects.get_or_create(team=team, user=user, defaults={"role": Role.RATER})
        CampaignRater.objects.create(campaign=campaign, user=user)
        raters.append(user)
        tokens.append(api_token_create(actor=user, name="bench")[1])
    return campaign, raters, tokens


def rater_loop(
    port: int, token: str, campaign_id: int, rounds: int, think: float, seed: int, out: dict
) -> None:
    """One rater: next, read for about ``think`` seconds (0.5x to 1.5x, from ``seed``), judge,
    ``rounds`` times (fewer if the queue runs dry). The next item is asked for as soon as the
    judgment is in, as the rater screen does."""
    pace = random.Random(seed)
    if think:  # raters do not all click at the same instant: each arrives within one item's time
        time.sleep(pace.uniform(0, think))
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def post(path: str, body: dict | None) -> tuple[int, dict, float]:
        started = time.perf_counter()
        connection.request("POST", path, body=json.dumps(body or {}), headers=headers)
        response = connection.getresponse()
        data = response.read()
        return response.status, json.loads(data or b"{}"), time.perf_counter() - started

    try:
        for _ in range(rounds):
            status, body, seconds = post(f"/api/v1/feedback-labeling/{campaign_id}/next/", None)
            if status != 200:
                out["errors"].append(f"next {status}: {str(body)[:200]}")
                return
            out["next"].append(seconds)
            assignment = body["assignment"]
            if assignment is None:
                return
            reading = think * pace.uniform(0.5, 1.5)
            if reading:
                time.sleep(reading)
            status, body, seconds = post(
                f"/api/v1/feedback-assignments/{assignment['id']}/judgment/",
                {"value": {"choice": "a"}, "seconds_spent": round(reading, 3)},
            )
            if status != 201:
                out["errors"].append(f"judgment {status}: {str(body)[:200]}")
                return
            out["submit"].append(seconds)
    finally:
        connection.close()


def run_raters(port: int, tokens: list[str], campaign_id: int, rounds: int, think: float):
    """Every rater in its own thread at once; their latencies, errors and the wall time."""
    results: dict[str, list] = {"next": [], "submit": [], "errors": []}
    threads = [
        threading.Thread(
            target=rater_loop, args=(port, token, campaign_id, rounds, think, seed, results)
        )
        for seed, token in enumerate(tokens)
    ]
    wall = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, time.perf_counter() - wall


def vacuum_analyze() -> None:
    """What autovacuum has done by the time raters open a campaign made a while ago: planner
    statistics for the bulk-inserted rows, and the visibility map, without which every count
    of the queue index reads the table as well."""
    from django.db import connection

    with connection.cursor() as cursor:
        for table in ("evaluation_item", "evaluation_assignment", "evaluation_campaignrater"):
            cursor.execute(f"VACUUM ANALYZE {table}")


def check_assignments(campaign) -> tuple[int, int]:
    """(items held by more raters than the overlap, (item, rater) pairs given twice)."""
    from django.db.models import Count

    from evaluation.feedback.models import Assignment, AssignmentStatus

    rows = Assignment.objects.filter(item__campaign=campaign, rater__isnull=False)
    over = (
        rows.filter(status__in=[AssignmentStatus.ACTIVE, AssignmentStatus.SUBMITTED])
        .values("item_id")
        .annotate(n=Count("id"))
        .filter(n__gt=campaign.overlap)
        .count()
    )
    double = rows.values("item_id", "rater_id").annotate(n=Count("id")).filter(n__gt=1).count()
    return over, double


def build_judged_campaign(n_items: int):
    """A campaign of ``n_items`` items, each judged by 3 raters (bulk rows, as if labeled)."""
    from django.utils import timezone

    from evaluation.feedback.models import Assignment, AssignmentStatus, Item, Judgment

    campaign, raters, _tokens = populate_campaign(n_items=n_items, n_raters=3, name="export")
    now = timezone.now()
    item_ids = list(Item.objects.filter(campaign=campaign).values_list("id", flat=True))
    choices = ("a", "a", "b")
    for start in range(0, len(item_ids), 5000):
        chunk = item_ids[start : start + 5000]
        assignments = [
            Assignment(
                item_id=item_id,
                rater=rater,
                status=AssignmentStatus.SUBMITTED,
                order=[0, 1],
                assigned_at=now,
                expires_at=now,
            )
            for item_id in chunk
            for rater in raters
        ]
        Assignment.objects.bulk_create(assignments)
        Judgment.objects.bulk_create(
            Judgment(
                assignment=a,
                item_id=a.item_id,
                rater=a.rater,
                value={"choice": choices[(a.item_id + i) % 3], "reason": ""},
                seconds_spent=5.0,
                created_at=now,
            )
            for i, a in enumerate(assignments)
        )
        Item.objects.filter(pk__in=chunk).update(taken=3, submitted=3)
    return campaign, Judgment.objects.filter(item__campaign=campaign).count()


def time_export(campaign) -> tuple[float | None, int, str]:
    """Seconds to run the preference export job of ``campaign`` in this process, its rows."""
    try:
        from evaluation.feedback.models import FeedbackExport
        from evaluation.feedback.tasks import run_feedback_export  # noqa: F401 - registers it
        from llmhub.jobs import run_job_inline
    except ImportError as exc:
        return None, 0, f"the export is missing ({exc})"
    from django.contrib.auth.models import User

    export = FeedbackExport.objects.create(
        project=campaign.project,
        created_by=User.objects.first(),
        campaign=campaign,
        format="preference",
    )
    started = time.perf_counter()
    status = run_job_inline(export)
    seconds = time.perf_counter() - started
    export.refresh_from_db()
    return seconds, export.rows, f"{status}: {export.progress_message or export.error_message}"


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000


def latency_rows(results: dict) -> list[str]:
    rows = [f"  {'request':<10} {'n':>6} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}"]
    for key in ("next", "submit"):
        values = results[key]
        rows.append(
            f"  {key:<10} {len(values):>6} {pct(values, 0.5):>8.1f} {pct(values, 0.95):>8.1f} "
            f"{pct(values, 1.0):>8.1f}"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--raters", type=int, default=20)
    parser.add_argument("--judgments", type=int, default=60, help="items per rater, paced")
    parser.add_argument(
        "--think", type=float, default=1.0, help="seconds a rater reads an item (0.5x to 1.5x)"
    )
    parser.add_argument(
        "--saturation-judgments",
        type=int,
        default=20,
        help="items per rater in the second pass, with no reading time (0: no such pass)",
    )
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="1: gunicorn's sync workers")
    parser.add_argument("--export-items", type=int, default=33_334, help="x 3 judgments")
    args = parser.parse_args()
    server_url = postgres_server()
    if server_url is None:
        raise SystemExit("This benchmark needs PostgreSQL (DATABASE_URL or 127.0.0.1:5432).")
    stop_on_sigterm()
    scratch = Path(tempfile.mkdtemp(prefix="llmhub-labeling-bench-"))
    database = unique_name("llmhub_bench_labeling")
    web = None
    configured = False
    warm: dict[str, list] = {"errors": []}
    saturated: dict[str, list] = {"next": [], "submit": [], "errors": []}
    saturated_wall = 0.0
    try:
        configure_django(scratch, server_url, database)
        configured = True
        from django.core.management import call_command
        from django.db import connection

        call_command("migrate", verbosity=0)
        started = time.perf_counter()
        campaign, _raters, tokens = populate_campaign(
            n_items=args.items, n_raters=args.raters, name="labeling"
        )
        vacuum_analyze()
        setup_seconds = time.perf_counter() - started
        connection.close()
        env = dict(os.environ)
        env.pop("REDIS_URL", None)
        web, port = start_web_server(env, gunicorn=True, workers=args.workers, threads=args.threads)
        # Warm-up outside the figures: two items for every rater at once, so that every worker
        # has imported what it serves and opened its database connection.
        warm, _wall = run_raters(port, tokens, campaign.pk, 2, 0.0)
        load_before = os.getloadavg()[0]
        results, wall = run_raters(port, tokens, campaign.pk, args.judgments, args.think)
        load_after = os.getloadavg()[0]
        if args.saturation_judgments:
            saturated, saturated_wall = run_raters(
                port, tokens, campaign.pk, args.saturation_judgments, 0.0
            )
        stop_process(web)
        web = None
        over, double = check_assignments(campaign)
        started = time.perf_counter()
        export_campaign, judgments = build_judged_campaign(args.export_items)
        export_setup = time.perf_counter() - started
        export_seconds, export_rows, export_status = time_export(export_campaign)
    finally:
        stop_process(web)
        if configured:
            from django.db import connections

            connections.close_all()
        drop_database(server_url, database)
        shutil.rmtree(scratch, ignore_errors=True)

    requests = len(results["next"]) + len(results["submit"])
    saturated_requests = len(saturated["next"]) + len(saturated["submit"])
    server = f"gunicorn {args.workers} workers x {args.threads} thread(s)"
    if args.threads == 1:
        server += " (sync)"
    print(
        f"labeling on PostgreSQL: {args.items:,} items, overlap {OVERLAP}, {args.raters} raters "
        f"in threads, {server} (setup {setup_seconds:.1f} s)"
    )
    print(
        f"machine: {os.cpu_count()} cores, load average {load_before:.1f} before the raters, "
        f"{load_after:.1f} after (other processes count: the latencies are closed-loop, so "
        "they grow with whatever else runs)"
    )
    print(
        f"raters reading each item {args.think * 0.5:.1f} to {args.think * 1.5:.1f} s (the "
        f"targets): {requests:,} requests in {wall:.1f} s ({requests / max(wall, 1e-9):.0f}/s)"
    )
    print("\n".join(latency_rows(results)))
    if args.saturation_judgments:
        print(
            f"then raters that never read (the server's capacity, every core busy, so the "
            f"latency is {args.raters} / throughput): {saturated_requests:,} requests in "
            f"{saturated_wall:.1f} s ({saturated_requests / max(saturated_wall, 1e-9):.0f}/s)"
        )
        print("\n".join(latency_rows(saturated)))
    errors = warm["errors"] + results["errors"] + saturated["errors"]
    print(f"errors: {len(errors)} {errors[:3]}")
    print(f"over-assigned items: {over}; items given twice to one rater: {double}")
    if export_seconds is None:
        print(f"export: {export_status}")
    else:
        print(
            f"export of {judgments:,} judgments ({args.export_items:,} items, built in "
            f"{export_setup:.0f} s): {export_seconds:.1f} s, {export_rows:,} rows ({export_status})"
        )
    figures = {
        "p95_next_ms": round(pct(results["next"], 0.95), 1),
        "p95_submit_ms": round(pct(results["submit"], 0.95), 1),
        "p50_next_ms": round(pct(results["next"], 0.5), 1),
        "p50_submit_ms": round(pct(results["submit"], 0.5), 1),
        "requests_per_second": round(requests / max(wall, 1e-9), 1),
        "saturated_p95_next_ms": round(pct(saturated["next"], 0.95), 1),
        "saturated_p95_submit_ms": round(pct(saturated["submit"], 0.95), 1),
        "saturated_requests_per_second": round(saturated_requests / max(saturated_wall, 1e-9), 1),
        "errors": len(errors),
        "over_assignments": over,
        "double_assignments": double,
        "export_judgments": judgments,
        "export_seconds": None if export_seconds is None else round(export_seconds, 1),
        "items": args.items,
        "raters": args.raters,
        "think_seconds": args.think,
        "gunicorn_workers": args.workers,
        "gunicorn_threads": args.threads,
        "cores": os.cpu_count(),
        "load_average": round(load_after, 1),
    }
    targets = {
        "p95_next_ms": {"max": 100},
        "p95_submit_ms": {"max": 100},
        "over_assignments": {"max": 0},
        "double_assignments": {"max": 0},
        "errors": {"max": 0},
        "export_seconds": {"max": 60},
    }
    # The last line: the figures and the targets, as every bench prints them.
    print(json.dumps({"figures": figures, "targets": targets}))


if __name__ == "__main__":
    main()
