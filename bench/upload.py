"""Benchmark: upload a large JSONL file through the REST API, watch the web process, and time
the ingest job to the finished version.

Starts the web server (``manage.py runserver --noreload``: one process, so its RSS is the web
process's memory) and one Celery worker (``-Q cpu``, solo pool, as ``bin/dev`` runs it) on a
scratch database, broker and media folder, writes a JSONL file of the given size, streams it to
``POST /api/v1/datasets/{id}/upload/`` in 1 MB pieces, and samples the server's RSS every
20 ms. After the 202 reply it polls ``GET /api/v1/data-jobs/{id}/`` until the ingest job has
finished and reads the new version (its row count must be the file's). A 1 MB upload and its
ingest warm both processes up first. Everything is removed at the end, also on Ctrl-C or
SIGTERM.

Prints MB/s of the upload, the peak RSS of the web process (and its idle baseline), the ingest
time (from the 202 reply to the finished version, and the job's own running time), ingest MB/s
and rows/s, the worker's peak RSS, and end-to-end MB/s (upload plus ingest).

    .venv/bin/python bench/upload.py              # 1 GB
    .venv/bin/python bench/upload.py --size-mb 200
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.helpers import start_web_server, stop_on_sigterm, stop_process  # noqa: E402

PYTHON = sys.executable

SETUP = """
from django.contrib.auth.models import User
from projects.services import team_create, project_create, api_token_create
from datasets_app.services import dataset_create
user = User.objects.create_user("bench", password="bench-password-123")
team = team_create(actor=user, name="Bench")
project = project_create(actor=user, team=team, name="Bench", task_type="generation")
dataset = dataset_create(actor=user, project=project, name="big")
_, token = api_token_create(actor=user, name="bench")
print(dataset.pk, token)
"""


def _write_jsonl(path: Path, size: int) -> int:
    """Write about ``size`` bytes of JSONL; returns the number of rows."""
    rng = random.Random(0)
    words = [
        "data",
        "model",
        "token",
        "train",
        "value",
        "learn",
        "graph",
        "cloud",
        "vector",
        "river",
        "mountain",
    ]
    line_words = [" ".join(rng.choice(words) for _ in range(60)) for _ in range(1000)]
    written = 0
    with open(path, "w") as handle:
        index = 0
        while written < size:
            line = json.dumps({"id": index, "text": line_words[index % 1000]}) + "\n"
            handle.write(line)
            written += len(line)
            index += 1
    return index


class RssSampler(threading.Thread):
    """Peak RSS of a process and its children (a worker's pool, if any), every 20 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                processes = [self.process, *self.process.children(recursive=True)]
                rss = 0
                for process in processes:
                    with contextlib.suppress(psutil.Error):
                        rss += process.memory_info().rss
                self.peak = max(self.peak, rss)
            except psutil.Error:
                return
            time.sleep(0.02)


def _get(port: int, path: str, token: str) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("GET", path, headers={"Authorization": f"Bearer {token}"})
    response = connection.getresponse()
    body = response.read()
    connection.close()
    if response.status != 200:
        raise SystemExit(f"GET {path}: HTTP {response.status}: {body[:300]!r}")
    return json.loads(body)


def _wait_for_job(port: int, job_id: int, token: str, timeout: float) -> tuple[dict, float]:
    """Poll the data job every 0.1 s until it is terminal; the job and the seconds waited."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        job = _get(port, f"/api/v1/data-jobs/{job_id}/", token)
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job, time.perf_counter() - started
        time.sleep(0.1)
    raise SystemExit(f"The ingest job {job_id} did not finish in {timeout:.0f} s.")


def _start_worker(env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as handle:  # the child keeps its own descriptor
        return subprocess.Popen(
            [
                *(
                    PYTHON,
                    "-m",
                    "celery",
                    "-A",
                    "llmhub.celery",
                    "worker",
                    "-Q",
                    "cpu",
                    "--pool",
                    "solo",
                ),
                *("-l", "warning", "--without-gossip", "--without-mingle", "--without-heartbeat"),
            ],
            cwd=REPO,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )


def _seconds_between(start: str | None, end: str | None) -> float | None:
    from datetime import datetime

    if not start or not end:
        return None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def _upload(port: int, dataset_id: int, token: str, path: Path) -> tuple[int, float, str]:
    boundary = "llmhub-bench-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="{path.name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    length = len(head) + path.stat().st_size + len(tail)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    started = time.perf_counter()
    connection.putrequest("POST", f"/api/v1/datasets/{dataset_id}/upload/")
    connection.putheader("Authorization", f"Bearer {token}")
    connection.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
    connection.putheader("Content-Length", str(length))
    connection.endheaders()
    connection.send(head)
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            connection.send(chunk)
    connection.send(tail)
    response = connection.getresponse()
    body = response.read().decode()
    seconds = time.perf_counter() - started
    connection.close()
    return response.status, seconds, body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--ingest-timeout", type=float, default=1800, help="seconds (1800)")
    args = parser.parse_args()
    size = args.size_mb * 1024 * 1024
    stop_on_sigterm()

    scratch = Path(tempfile.mkdtemp(prefix="llmhub-upload-bench-"))
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env |= {
        "LLMHUB_VAR_DIR": str(scratch / "var"),
        "DJANGO_SETTINGS_MODULE": "llmhub.settings",
        "FILE_UPLOAD_TEMP_DIR": str(scratch),
        "LLMHUB_ENV": "development",
        "DEBUG": "false",
        "LLMHUB_MAX_UPLOAD_BYTES": str(size * 2),
    }
    server = worker = None
    try:
        subprocess.run([PYTHON, "manage.py", "migrate", "-v0"], cwd=REPO, env=env, check=True)
        out = subprocess.run(
            [PYTHON, "manage.py", "shell", "-c", SETUP],
            cwd=REPO,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
        dataset_id, token = int(out[-2]), out[-1]
        data = scratch / "big.jsonl"
        rows = _write_jsonl(data, size)
        size = data.stat().st_size

        server, port = start_web_server(env)
        worker = _start_worker(env, scratch / "worker.log")
        # Warm up: one small upload and its ingest, so imports and caches are in place in both
        # processes (and the worker is known to be consuming) before measuring.
        warm = scratch / "warm.jsonl"
        _write_jsonl(warm, 1 << 20)
        status, _seconds, body = _upload(port, dataset_id, token, warm)
        if status != 202:
            raise SystemExit(f"The warm-up upload failed: HTTP {status}: {body[:500]}")
        warm_job, _ = _wait_for_job(port, json.loads(body)["id"], token, timeout=180)
        if warm_job["status"] != "succeeded":
            raise SystemExit(f"The warm-up ingest {warm_job['status']}: {warm_job['error']}")
        baseline = psutil.Process(server.pid).memory_info().rss
        worker_baseline = psutil.Process(worker.pid).memory_info().rss

        sampler = RssSampler(server.pid)
        sampler.start()
        status, seconds, body = _upload(port, dataset_id, token, data)
        sampler.stop.set()
        sampler.join()
        if status != 202:
            raise SystemExit(f"The upload failed: HTTP {status}: {body[:500]}")
        worker_sampler = RssSampler(worker.pid)
        worker_sampler.start()
        job, ingest_seconds = _wait_for_job(
            port, json.loads(body)["id"], token, timeout=args.ingest_timeout
        )
        worker_sampler.stop.set()
        worker_sampler.join()
        if job["status"] != "succeeded":
            raise SystemExit(f"The ingest job {job['status']}: {job['error']}")
        version = _get(port, f"/api/v1/dataset-versions/{job['result_version']}/", token)
    finally:
        stop_process(worker, timeout=20)
        stop_process(server)
        shutil.rmtree(scratch, ignore_errors=True)

    received = json.loads(body)["params"]["size_bytes"]
    if received != size:
        raise SystemExit(f"The server stored {received:,} bytes of {size:,}.")
    if version["row_count"] != rows:
        raise SystemExit(f"The version has {version['row_count']:,} rows of {rows:,}.")
    job_running = _seconds_between(job["started_at"], job["finished_at"])
    mb = size / 2**20
    peak_mb = sampler.peak / 2**20
    print(f"Upload of a {mb:,.0f} MB JSONL file ({rows:,} rows) through the API, then its ingest")
    print(f"{'size MB':>10} {'seconds':>9} {'MB/s':>8} {'web RSS idle':>14} {'web RSS peak':>14}")
    print(
        f"{mb:>10,.0f} {seconds:>9.2f} {mb / seconds:>8.1f} {baseline / 2**20:>12.0f} MB "
        f"{peak_mb:>12.0f} MB"
    )
    print(
        f"{'ingest s':>10} {'job run s':>9} {'MB/s':>8} {'rows/s':>10} {'worker RSS idle':>16} "
        f"{'worker RSS peak':>16} {'end-to-end MB/s':>16}"
    )
    print(
        f"{ingest_seconds:>10.2f} {job_running or 0:>9.2f} {mb / ingest_seconds:>8.1f} "
        f"{rows / ingest_seconds:>10,.0f} {worker_baseline / 2**20:>13.0f} MB "
        f"{worker_sampler.peak / 2**20:>13.0f} MB {mb / (seconds + ingest_seconds):>16.1f}"
    )
    print(
        "(ingest s: from the 202 reply to the job seen finished, polling every 0.1 s; job run "
        "s: the job's own started-to-finished time; the version's row count was checked)"
    )
    print(
        json.dumps(
            {
                "figures": {
                    "upload_mb_per_s": round(mb / seconds, 1),
                    "web_peak_rss_mb": round(peak_mb, 1),
                    "web_idle_rss_mb": round(baseline / 2**20, 1),
                    "ingest_seconds": round(ingest_seconds, 2),
                    "ingest_job_running_seconds": round(job_running or 0, 2),
                    "ingest_mb_per_s": round(mb / ingest_seconds, 1),
                    "ingest_rows_per_s": round(rows / ingest_seconds),
                    "worker_peak_rss_mb": round(worker_sampler.peak / 2**20, 1),
                    "end_to_end_mb_per_s": round(mb / (seconds + ingest_seconds), 1),
                },
                "targets": {"web_peak_rss_mb": {"max": 300}},
            }
        )
    )


if __name__ == "__main__":
    main()
