"""Benchmark: upload a large JSONL file through the REST API and watch the web process.

Starts the web server (``manage.py runserver --noreload``: one process, so its RSS is the web
process's memory) on a scratch database and media folder, writes a JSONL file of the given size,
streams it to ``POST /api/v1/datasets/{id}/upload/`` in 1 MB pieces, and samples the server's
RSS every 20 ms. Prints MB/s and the peak RSS (and its growth over the idle baseline).

    .venv/bin/python bench/upload.py              # 1 GB
    .venv/bin/python bench/upload.py --size-mb 200
"""

from __future__ import annotations

import argparse
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

from bench.helpers import start_web_server  # noqa: E402

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


def _write_jsonl(path: Path, size: int) -> None:
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


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.02)


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
    args = parser.parse_args()
    size = args.size_mb * 1024 * 1024

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
    server = None
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
        _write_jsonl(data, size)
        size = data.stat().st_size

        server, port = start_web_server(env)
        # Warm up: one small upload, so imports and caches are in place before measuring.
        warm = scratch / "warm.jsonl"
        _write_jsonl(warm, 1 << 20)
        _upload(port, dataset_id, token, warm)
        baseline = psutil.Process(server.pid).memory_info().rss

        sampler = RssSampler(server.pid)
        sampler.start()
        status, seconds, body = _upload(port, dataset_id, token, data)
        sampler.stop.set()
        sampler.join()
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
        shutil.rmtree(scratch, ignore_errors=True)

    if status != 202:
        raise SystemExit(f"The upload failed: HTTP {status}: {body[:500]}")
    received = json.loads(body)["params"]["size_bytes"]
    if received != size:
        raise SystemExit(f"The server stored {received:,} bytes of {size:,}.")
    mb = size / 2**20
    peak_mb = sampler.peak / 2**20
    print(f"Upload of a {mb:,.0f} MB JSONL file through POST /api/v1/datasets/{{id}}/upload/")
    print(f"{'size MB':>10} {'seconds':>9} {'MB/s':>8} {'web RSS idle':>14} {'web RSS peak':>14}")
    print(
        f"{mb:>10,.0f} {seconds:>9.2f} {mb / seconds:>8.1f} {baseline / 2**20:>12.0f} MB "
        f"{peak_mb:>12.0f} MB"
    )
    print(
        json.dumps(
            {
                "figures": {
                    "upload_mb_per_s": round(mb / seconds, 1),
                    "web_peak_rss_mb": round(peak_mb, 1),
                    "web_idle_rss_mb": round(baseline / 2**20, 1),
                },
                "targets": {"web_peak_rss_mb": {"max": 300}},
            }
        )
    )


if __name__ == "__main__":
    main()
