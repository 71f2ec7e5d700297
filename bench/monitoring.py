"""Benchmark: the Monitor stage's dashboard over 1,000,000 logged requests, and what writing
the request log and its rollups costs the inference process.

Runs on PostgreSQL when one answers (DATABASE_URL's server, default postgres@127.0.0.1:5432:
a database of this run's own, ``llmhub_bench_monitoring_<pid>_<random>``, dropped at the end),
else on SQLite in the scratch folder; the scratch folder is removed at the end, also on Ctrl-C
or SIGTERM. Three parts:

a) Load ``--requests`` (1,000,000) requests over ``--days`` (30) days ending now, for two
   versions of one endpoint (the second as a 10% canary): request-log rows (binary COPY on
   PostgreSQL, ``bulk_create`` on SQLite) and their rollups made by the real rollup code
   (``rollups.deltas`` and ``rollups.add``, a day at a time), then the rollups purged as the
   hourly purge leaves them (minute rows older than three days go). The load time is reported.
b) The dashboard for 1h, 24h, 7d, 30d and 90d: the server time of
   ``dashboard.endpoint_dashboard`` and of ``GET /api/v1/endpoints/{id}/dashboard/`` through
   Django's test client (no network), medians of ``--repeat`` rounds that take the ranges in
   turn (1h 24h 7d 30d 90d 1h ...) after a warm-up, and the SQL queries of each (the same for
   every range). Target: the slowest range's median <= 300 ms.
c) Logging overhead: the real serving stack (``manage.py serve``: uvicorn, the engine with
   batching, the runner polling the database and writing the log and rollups through
   ``request_logs_ingest``) with the request log on and off (``LLMHUB_SERVING_REQUEST_LOG=off``
   in ``serving/runner.py``, for benchmarks only: records are dropped), on the same database,
   the tiny GPT-2 of ``bench/serving.py``. ``--clients`` (16) clients send non-streamed
   completions back to back for ``--seconds`` per round, rounds interleaved on, off, on, off
   ... (``--rounds`` pairs after a warm-up of each); a pair during which other processes took
   more than 0.15 of a core is done again (at most 3x). The PostgreSQL server's CPU counts as
   the stack's own (the log's writes are what is measured), not as contention. Overhead =
   1 - median(on/off throughput ratio of each pair). Target: <= 5%. Between sides the bench
   waits the log's flush interval (+0.5 s), so the log-on side's last batch never lands in
   the other side's window; that batch falls outside its own window too (the figure is a
   little kind to logging: about flush/seconds of the writes), so the serving process's CPU
   per request, drain included, is printed beside it.
d) Drift: if ``bench/_monitoring_drift.py`` exists (the drift job's benchmark), its
   ``drift_figures()`` rows are printed and its figures and targets merged into the JSON line.

    .venv/bin/python bench/monitoring.py
    .venv/bin/python bench/monitoring.py --requests 200000 --rounds 3   # a quick look
    .venv/bin/python bench/monitoring.py --no-serving                    # parts a and b only

The last line is one JSON object {"figures": {...}, "targets": {...}}.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import math
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from datetime import timedelta
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
from bench.helpers.contention import Round, split_rounds  # noqa: E402

RANGES = ("1h", "24h", "7d", "30d", "90d")
CANARY_SHARE = 0.1
STATUSES = [200] * 93 + [429] * 3 + [400, 401, 500, 503]

# --- a) the load ------------------------------------------------------------------------------


def populate():
    """A user, team and project; two registered versions (rows only: nothing serves them) and
    an endpoint ``dash`` naming the first as main, the second as canary."""
    from django.contrib.auth.models import User
    from django.core.management import call_command

    from projects.services import project_create, team_create
    from serving.models import Endpoint
    from training.models import ModelVersion, RegisteredModel

    call_command("migrate", verbosity=0)
    user = User.objects.create_user("bench", password="bench-password-123")
    team = team_create(actor=user, name="Bench")
    project = project_create(actor=user, team=team, name="Bench", task_type="generation")
    registered = RegisteredModel.objects.create(project=project, name="support bot")
    versions = [
        ModelVersion.objects.create(registered_model=registered, number=n, task_kind="sft_causal")
        for n in (1, 2)
    ]
    endpoint = Endpoint.objects.create(
        project=project,
        name="Dashboard",
        slug="dash",
        version=versions[0],
        canary_version=versions[1],
        canary_percent=int(CANARY_SHARE * 100),
    )
    return user, project, endpoint, versions


def _day_of_requests(endpoint, versions, day_start, day_end, count: int, rng: random.Random):
    from serving.models import RequestLog

    span = (day_end - day_start).total_seconds()
    rows = []
    for i in range(count):
        canary = rng.random() < CANARY_SHARE
        status = rng.choice(STATUSES)
        ok = status < 400
        cache_hit = ok and rng.random() < 0.05
        rows.append(
            RequestLog(
                response_id=f"cmpl-{day_start:%Y%m%d}-{i:07d}",
                created_at=day_start + timedelta(seconds=rng.random() * span),
                endpoint_id=endpoint.pk,
                version_id=versions[canary].pk,
                route="completions",
                source="api",
                status_code=status,
                latency_ms=rng.lognormvariate(5.0 + 0.2 * canary, 0.6) if not cache_hit else 0.4,
                ttft_ms=rng.uniform(5, 80) if i % 2 else None,
                prompt_tokens=rng.randint(5, 400),
                completion_tokens=rng.randint(1, 256) if ok else 0,
                cache_hit=cache_hit,
                stream=bool(i % 2),
                canary=canary,
            )
        )
    return rows


_COPY_COLUMNS = (
    "response_id",
    "created_at",
    "endpoint_id",
    "version_id",
    "source",
    "route",
    "status_code",
    "error_code",
    "latency_ms",
    "ttft_ms",
    "prompt_tokens",
    "completion_tokens",
    "cache_hit",
    "stream",
    "canary",
    "aborted",
    "finish_reason",
)
_COPY_TYPES = (
    "varchar",
    "timestamptz",
    "int8",
    "int8",
    "varchar",
    "varchar",
    "int2",
    "varchar",
    "float8",
    "float8",
    "int4",
    "int4",
    "bool",
    "bool",
    "bool",
    "bool",
    "varchar",
)


def _write_log(rows) -> None:
    from django.db import connection

    from serving.models import RequestLog

    if connection.vendor != "postgresql":
        RequestLog.objects.bulk_create(rows, batch_size=2000)
        return
    table = RequestLog._meta.db_table
    with (
        connection.cursor() as cursor,
        cursor.connection.cursor().copy(
            f"COPY {table} ({', '.join(_COPY_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
        ) as copy,
    ):
        copy.set_types(list(_COPY_TYPES))
        for r in rows:
            copy.write_row(
                (
                    r.response_id,
                    r.created_at,
                    r.endpoint_id,
                    r.version_id,
                    r.source,
                    r.route,
                    r.status_code,
                    r.error_code,
                    r.latency_ms,
                    r.ttft_ms,
                    r.prompt_tokens,
                    r.completion_tokens,
                    r.cache_hit,
                    r.stream,
                    r.canary,
                    r.aborted,
                    r.finish_reason,
                )
            )


def load(endpoint, versions, *, requests: int, days: int, seed: int = 0) -> dict:
    """``requests`` log rows over ``days`` days ending now, written a day at a time with their
    rollups (one transaction per day, as the ingest writes a batch); then the purge."""
    from django.db import connection, transaction
    from django.utils import timezone

    from serving.models import RequestLog, RequestRollup
    from serving.monitoring import rollups

    rng = random.Random(seed)
    now = timezone.now()
    start = now - timedelta(days=days)
    per_day = requests // days
    timings = {"build": 0.0, "log": 0.0, "rollups": 0.0}
    started = time.perf_counter()
    for day in range(days):
        day_start = start + timedelta(days=day)
        day_end = now if day == days - 1 else day_start + timedelta(days=1)
        count = per_day if day < days - 1 else requests - per_day * (days - 1)
        t0 = time.perf_counter()
        rows = _day_of_requests(endpoint, versions, day_start, day_end, count, rng)
        t1 = time.perf_counter()
        with transaction.atomic():
            _write_log(rows)
            t2 = time.perf_counter()
            rollups.add(rollups.deltas(rows))
        t3 = time.perf_counter()
        timings["build"] += t1 - t0
        timings["log"] += t2 - t1
        timings["rollups"] += t3 - t2
    purged = rollups.purge(now=now)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:  # as autovacuum will have by the time anyone looks
            cursor.execute(f"ANALYZE {RequestLog._meta.db_table}")
            cursor.execute(f"ANALYZE {RequestRollup._meta.db_table}")
    return {
        "seconds": time.perf_counter() - started,
        **{f"{name}_seconds": value for name, value in timings.items()},
        "log_rows": RequestLog.objects.count(),
        "rollup_rows": RequestRollup.objects.count(),
        "rollup_rows_purged": purged,
    }


# --- b) the dashboard ------------------------------------------------------------------------


def dashboard_times(user, endpoint, repeat: int) -> dict[str, dict]:
    """Per range: medians of the function's and the REST call's server time, the queries of
    each, the points and the requests counted."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from serving.monitoring import dashboard
    from serving.monitoring.dashboard import endpoints_for_user

    client = Client()
    client.force_login(user)
    endpoint = endpoints_for_user(user).get(pk=endpoint.pk)  # as the API's view fetches it
    url = f"/api/v1/endpoints/{endpoint.pk}/dashboard/"

    def call(name: str) -> tuple[float, int, dict]:
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            data = dashboard.endpoint_dashboard(
                endpoint, time_range=dashboard.resolve_range(range_name=name)
            )
            seconds = time.perf_counter() - started
        return seconds, len(queries), data

    def call_api(name: str) -> tuple[float, int, int]:
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            response = client.get(url, {"range": name})
            seconds = time.perf_counter() - started
        assert response.status_code == 200, response.content[:300]
        return seconds, len(queries), len(response.content)

    for name in RANGES:  # warm-up: the session, the code paths, the database's caches
        call(name)
        call_api(name)
    out = {name: {"fn": [], "api": []} for name in RANGES}
    for _ in range(repeat):
        for name in RANGES:
            seconds, queries, data = call(name)
            out[name]["fn"].append(seconds * 1000)
            out[name]["fn_queries"] = queries
            out[name]["points"] = len(data["series"][0]["points"])
            out[name]["series"] = len(data["series"])
            out[name]["resolution"] = data["range"]["resolution"]
            out[name]["requests"] = data["totals"]["requests"]
            seconds, queries, size = call_api(name)
            out[name]["api"].append(seconds * 1000)
            out[name]["api_queries"] = queries
            out[name]["bytes"] = size
    for row in out.values():
        row["fn_ms"] = statistics.median(row.pop("fn"))
        row["api_ms"] = statistics.median(row.pop("api"))
    return out


# --- c) logging overhead --------------------------------------------------------------------


def serving_setup(scratch: Path, user, project):
    """The tiny GPT-2 of bench/serving.py registered as a version, an endpoint ``bench``
    serving it, a serving key without limits."""
    from bench.serving import build_model
    from serving.services import endpoint_create, endpoint_promote, serving_key_create
    from training.models import TrainingJob
    from training.services import model_version_register

    model_dir = build_model(scratch / "model")
    job = TrainingJob.objects.create(
        project=project, name="tiny-lm", kind="pretrain_clm", created_by=user, status="succeeded"
    )
    version = model_version_register(job=job, model_dir=model_dir, metrics={}, parameters=1)
    endpoint = endpoint_create(actor=user, project=project, name="Bench", slug="bench")
    endpoint_promote(actor=user, endpoint=endpoint, version=version)
    _key, plaintext = serving_key_create(actor=user, project=project, name="bench")
    return endpoint, plaintext


def sustained(clients, url: str, key: str, *, seconds: float, tokens: int, tag: str) -> dict:
    """Every client sends completions back to back for ``seconds``: requests and tokens done
    (each prompt distinct, so the response cache never answers)."""
    from bench.serving import complete_one

    deadline = time.perf_counter() + seconds
    done = [[0, 0, 0] for _ in clients.clients]  # requests, tokens, failures

    def work(index: int) -> None:
        number = 0
        while time.perf_counter() < deadline:
            number += 1
            prompt = f"{tag} client {index} request {number}: ka lo mi ne ru sa"
            result = complete_one(clients.clients[index], url, key, prompt, tokens)
            if result["ok"]:
                done[index][0] += 1
                done[index][1] += result["tokens"]
            else:
                done[index][2] += 1

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(clients.clients))]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    return {
        "seconds": wall,
        "requests": sum(d[0] for d in done),
        "tokens": sum(d[1] for d in done),
        "failures": sum(d[2] for d in done),
    }


def _postgres_seconds() -> float:
    """CPU seconds of the PostgreSQL server's processes (and the backends it has reaped)."""
    import psutil

    total = 0.0
    for process in psutil.process_iter(["name"]):
        if (process.info["name"] or "").startswith("postgres"):
            try:
                t = process.cpu_times()
            except psutil.Error:  # a backend that exited between the calls
                continue
            total += t.user + t.system + t.children_user + t.children_system
    return total


class StackRound(Round):
    """A Round in which the database server's CPU counts as the stack's own: the request
    log's writes are part of what is measured (other runs using the same PostgreSQL go
    unseen, so this under-reports contention a little)."""

    def __init__(self, *, postgres: bool) -> None:
        super().__init__()
        self.postgres = postgres
        self.database_cores = 0.0

    def __enter__(self) -> StackRound:
        self._pg = _postgres_seconds() if self.postgres else 0.0
        return super().__enter__()

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        if not self.postgres:
            return
        database = max(0.0, _postgres_seconds() - self._pg) / max(self.wall, 1e-9)
        self.database_cores = database
        self.other_cores = max(0.0, self.other_cores - database)


def _cpu_seconds(server) -> float:
    """CPU seconds of a ``manage.py serve`` process so far (every thread)."""
    import psutil

    t = psutil.Process(server.process.pid).cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def logging_overhead(scratch: Path, user, project, args) -> dict:
    from django.conf import settings
    from django.db import connection

    from bench.serving import Clients, Server
    from serving.models import RequestLog, RequestRollup

    endpoint, key = serving_setup(scratch, user, project)
    postgres = connection.vendor == "postgresql"
    connection.close()  # the servers open their own
    servers, clients = [], None
    try:
        common = {"max_batch_size": 16, "max_queue_depth": 64}
        on = Server(scratch, "log-on", **common)
        servers.append(on)
        off = Server(scratch, "log-off", request_log="off", **common)
        servers.append(off)
        clients = Clients(args.clients)
        run = {"on": on, "off": off}
        drain = settings.LLMHUB_SERVING_LOG_FLUSH_SECONDS + 0.5
        for name, server in run.items():  # warm-up, not counted
            sustained(clients, server.url, key, seconds=2, tokens=args.tokens, tag=f"warm {name}")
        pairs: list[tuple[dict, Round]] = []
        clean = 0
        while clean < args.rounds and len(pairs) < 3 * args.rounds:
            number = len(pairs)
            done = {}
            with StackRound(postgres=postgres) as meter:
                # Alternate which side goes first, so neither always follows the other's writes.
                order = ("on", "off") if number % 2 == 0 else ("off", "on")
                for name in order:
                    cpu = _cpu_seconds(run[name])
                    done[name] = sustained(
                        clients,
                        run[name].url,
                        key,
                        seconds=args.seconds,
                        tokens=args.tokens,
                        tag=f"round {number} {name}",
                    )
                    # The writer's last batch lands before the other side starts (and in this
                    # side's CPU time, though after its throughput window).
                    time.sleep(drain)
                    done[name]["cpu_seconds"] = _cpu_seconds(run[name]) - cpu
            pairs.append((done, meter))
            clean += not meter.contended
        kept, discarded = split_rounds(pairs, lambda p: [p[1]])
        for server in servers:
            server.stop()  # SIGTERM: the log-on process writes what it still holds
        logged = RequestLog.objects.filter(endpoint=endpoint).count()
        rolled = sum(
            RequestRollup.objects.filter(endpoint=endpoint, resolution="day").values_list(
                "requests", flat=True
            )
        )
    finally:
        if clients is not None:
            clients.close()
        for server in servers:
            server.stop()
    rate = {
        name: [done[name]["requests"] / done[name]["seconds"] for done, _ in kept]
        for name in ("on", "off")
    }
    ratios = [a / b for a, b in zip(rate["on"], rate["off"], strict=True) if b]
    # CPU of the serving process per request, its writer's drain included: on / off.
    cpu_ratios = [
        (done["on"]["cpu_seconds"] / done["on"]["requests"])
        / (done["off"]["cpu_seconds"] / done["off"]["requests"])
        for done, _ in kept
        if done["on"]["requests"] and done["off"]["requests"] and done["off"]["cpu_seconds"]
    ]
    return {
        "on_requests_per_s": statistics.median(rate["on"]),
        "off_requests_per_s": statistics.median(rate["off"]),
        "on_tokens_per_s": statistics.median(
            done["on"]["tokens"] / done["on"]["seconds"] for done, _ in kept
        ),
        "off_tokens_per_s": statistics.median(
            done["off"]["tokens"] / done["off"]["seconds"] for done, _ in kept
        ),
        "overhead_pct": (1 - statistics.median(ratios)) * 100 if ratios else math.nan,
        "ratios": ratios,
        "cpu_overhead_pct": (statistics.median(cpu_ratios) - 1) * 100 if cpu_ratios else math.nan,
        "cpu_ms_per_request_on": statistics.median(
            1000 * done["on"]["cpu_seconds"] / done["on"]["requests"] for done, _ in kept
        ),
        "cpu_ms_per_request_off": statistics.median(
            1000 * done["off"]["cpu_seconds"] / done["off"]["requests"] for done, _ in kept
        ),
        "pairs": len(kept),
        "discarded": discarded,
        "all_contended": all(meter.contended for _, meter in pairs),
        "other_cores": statistics.median(meter.other_cores for _, meter in pairs),
        "database_cores": statistics.median(meter.database_cores for _, meter in pairs),
        "failures": sum(d[n]["failures"] for d, _ in pairs for n in ("on", "off")),
        "logged_rows": logged,
        "rollup_requests": rolled,
    }


# --- d) the drift hook -----------------------------------------------------------------------


def drift_part() -> tuple[list, dict] | None:
    """The drift benchmark's rows and JSON part, when ``bench/_monitoring_drift.py`` exists
    (``drift_figures() -> (rows for the table, {"figures": {...}, "targets": {...}})``)."""
    path = REPO / "bench" / "_monitoring_drift.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("bench._monitoring_drift", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.drift_figures()


# --- main ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=7, help="Dashboard rounds (medians).")
    parser.add_argument("--rounds", type=int, default=8, help="Logging on/off pairs.")
    parser.add_argument("--seconds", type=float, default=6.0, help="Per side of a pair.")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--no-serving", action="store_true", help="Skip part c.")
    parser.add_argument("--no-drift", action="store_true", help="Skip part d.")
    args = parser.parse_args()
    stop_on_sigterm()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise
    scratch = Path(tempfile.mkdtemp(prefix="llmhub-monitoring-bench-"))
    server = postgres_server()
    database = unique_name("llmhub_bench_monitoring") if server else None
    configured = False
    overhead = None
    try:
        configure_django(scratch, server, database)
        configured = True
        from django.db import connection

        vendor = connection.vendor
        user, project, endpoint, versions = populate()
        loaded = load(endpoint, versions, requests=args.requests, days=args.days)
        times = dashboard_times(user, endpoint, args.repeat)
        if not args.no_serving:
            overhead = logging_overhead(scratch, user, project, args)
    finally:
        if configured:
            from django.db import connections

            connections.close_all()
        if database:
            drop_database(server, database)
        shutil.rmtree(scratch, ignore_errors=True)
    drift = None if args.no_drift else drift_part()

    print(
        f"monitoring bench on {vendor}, {os.cpu_count()} cores: {loaded['log_rows']:,} logged"
        f" requests over {args.days} days, two versions (canary {CANARY_SHARE:.0%}) of one"
        f" endpoint, loaded in {loaded['seconds']:.0f} s (rows built {loaded['build_seconds']:.0f}"
        f" s, log written {loaded['log_seconds']:.0f} s, rollups {loaded['rollups_seconds']:.0f}"
        f" s); {loaded['rollup_rows']:,} rollup rows after the purge"
        f" ({loaded['rollup_rows_purged']:,} minute rows past their 3 days purged)"
    )
    print(
        f"dashboard: medians of {args.repeat} rounds (ranges in turn) after a warm-up; server"
        " time in this process (the REST call through Django's test client)"
    )
    print(
        f"{'range':<6} {'resolution':<10} {'points':>6} {'series':>6} {'requests':>10}"
        f" {'function ms':>12} {'REST ms':>8} {'bytes':>10} {'queries fn/REST':>16}"
    )
    for name, row in times.items():
        print(
            f"{name:<6} {row['resolution']:<10} {row['points']:>6} {row['series']:>6}"
            f" {row['requests']:>10,} {row['fn_ms']:>12.1f} {row['api_ms']:>8.1f}"
            f" {row['bytes']:>10,} {row['fn_queries']:>8}/{row['api_queries']}"
        )
    worst = max(max(row["fn_ms"], row["api_ms"]) for row in times.values())
    query_counts = {(row["fn_queries"], row["api_queries"]) for row in times.values()}
    figures = {
        "database": vendor,
        "log_rows": loaded["log_rows"],
        "load_seconds": round(loaded["seconds"], 1),
        "rollup_rows": loaded["rollup_rows"],
        **{f"dashboard_{name}_ms": round(row["fn_ms"], 1) for name, row in times.items()},
        **{f"dashboard_{name}_rest_ms": round(row["api_ms"], 1) for name, row in times.items()},
        "dashboard_p_max_ms": round(worst, 1),
        "dashboard_queries": times["90d"]["fn_queries"],
        "dashboard_rest_queries": times["90d"]["api_queries"],
        "dashboard_query_counts_differ": len(query_counts) - 1,
    }
    targets = {"dashboard_p_max_ms": {"max": 300}, "dashboard_query_counts_differ": {"max": 0}}
    if overhead is not None:
        print(
            f"logging overhead: {args.clients} clients x {args.tokens} new tokens, non-streamed,"
            f" back to back for {args.seconds:g} s per side; {overhead['pairs']} interleaved"
            f" pairs (on/off, order alternating), {overhead['discarded']} contended pairs"
            f" discarded; others took {overhead['other_cores']:.2f} cores (median), the database"
            f" server {overhead['database_cores']:.2f}"
            + (
                " -- EVERY PAIR CONTENDED: these figures are not the product's"
                if overhead["all_contended"]
                else ""
            )
        )
        on_off = overhead["on_requests_per_s"] / overhead["off_requests_per_s"]
        print(f"{'request log':<14} {'req/s':>8} {'tok/s':>8}")
        print(
            f"{'on':<14} {overhead['on_requests_per_s']:>8.1f} {overhead['on_tokens_per_s']:>8.0f}"
        )
        print(
            f"{'off':<14} {overhead['off_requests_per_s']:>8.1f}"
            f" {overhead['off_tokens_per_s']:>8.0f}"
        )
        print(
            "on/off throughput ratio of each pair: "
            + " ".join(f"{r:.2f}" for r in overhead["ratios"])
            + f"; ratio of the medians {on_off:.3f}"
        )
        print(
            f"serving process CPU per request (its writer's drain included): on"
            f" {overhead['cpu_ms_per_request_on']:.2f} ms, off"
            f" {overhead['cpu_ms_per_request_off']:.2f} ms; median pair ratio - 1:"
            f" {overhead['cpu_overhead_pct']:.1f}%"
        )
        print(
            f"overhead (1 - median on/off ratio): {overhead['overhead_pct']:.1f}%; failed"
            f" requests {overhead['failures']}; rows logged by the log-on process"
            f" {overhead['logged_rows']:,} (its rollups count {overhead['rollup_requests']:,})"
        )
        figures.update(
            {
                "logging_on_requests_per_s": round(overhead["on_requests_per_s"], 2),
                "logging_off_requests_per_s": round(overhead["off_requests_per_s"], 2),
                "logging_overhead_pct": round(overhead["overhead_pct"], 2),
                "logging_overhead_of_medians_pct": round((1 - on_off) * 100, 2),
                "logging_cpu_overhead_pct": round(overhead["cpu_overhead_pct"], 2),
                "logging_pairs": overhead["pairs"],
                "logging_pairs_discarded": overhead["discarded"],
                "logging_every_pair_contended": overhead["all_contended"],
                "logging_failed_requests": overhead["failures"],
                "logged_rows_match_rollups": overhead["logged_rows"] == overhead["rollup_requests"],
            }
        )
        targets["logging_overhead_pct"] = {"max": 5}
        targets["logging_failed_requests"] = {"max": 0}
    if drift is not None:
        rows, part = drift
        for row in rows:
            print(row if isinstance(row, str) else "  ".join(str(cell) for cell in row))
        figures.update(part.get("figures", {}))
        targets.update(part.get("targets", {}))
    print(json.dumps({"figures": figures, "targets": targets}))


if __name__ == "__main__":
    main()
