"""Recovery drill of the production layout: no job is lost when a worker dies or Redis restarts.

Runs gunicorn (the web process, which sweeps jobs on its own timer) and one Celery worker on a
private Redis (a free port, no persistence) and a scratch SQLite database, then:

A. kills the worker with SIGKILL in the middle of a training job, with no other worker alive:
   the web process's sweep must re-queue the job once its heartbeat is stale; a new worker
   resumes it from its last checkpoint, and its loss curve holds one point per step;
B. with no worker running, launches a job and restarts Redis without persistence (its message
   is gone): a new worker's sweep must send it again, and it finishes;
C. launches a job while Redis is down: 503 with the reason, nothing created.

Short limits make it quick (stale after 15 s, re-send after 20 s, sweep every 5 s); the
figures are seconds from the event to the recovery. Needs ``redis-server`` on the PATH.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.helpers import free_port, start_web_server, stop_on_sigterm, stop_process  # noqa: E402

STALE_AFTER, RESEND_AFTER, SWEEP_EVERY = 15, 20, 5
CORPUS = REPO.parent / "shared" / "datasets" / "corpus_tinyshakespeare.txt"


class Drill:
    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.redis_port = free_port()
        self.env = dict(
            os.environ,
            LLMHUB_VAR_DIR=str(scratch / "var"),
            REDIS_URL=f"redis://127.0.0.1:{self.redis_port}/0",
            LLMHUB_JOB_STALE_AFTER_SECONDS=str(STALE_AFTER),
            LLMHUB_JOB_RESEND_AFTER_SECONDS=str(RESEND_AFTER),
            LLMHUB_JOB_SWEEP_INTERVAL_SECONDS=str(SWEEP_EVERY),
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
        )
        self.env.pop("DATABASE_URL", None)
        self.processes: list[subprocess.Popen] = []
        self.session = requests.Session()
        self.api = ""

    def start(self, command: list[str], log: str) -> subprocess.Popen:
        with open(self.scratch / log, "ab") as handle:
            process = subprocess.Popen(
                command, cwd=REPO, env=self.env, stdout=handle, stderr=subprocess.STDOUT
            )
        self.processes.append(process)
        return process

    def redis(self) -> subprocess.Popen:
        process = self.start(
            [
                *("redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no"),
            ],
            "redis.log",
        )
        self.wait(lambda: self.redis_keys() is not None, 20, "Redis")
        return process

    def redis_keys(self) -> int | None:
        out = subprocess.run(
            ["redis-cli", "-p", str(self.redis_port), "dbsize"], capture_output=True, text=True
        ).stdout.strip()
        return int(out) if out.isdigit() else None

    def worker(self) -> subprocess.Popen:
        return self.start(
            [
                *(sys.executable, "-m", "celery", "-A", "llmhub.celery", "worker"),
                *("-Q", "cpu,gpu", "--pool", "solo", "-n", f"drill{time.time_ns()}@%h"),
            ],
            "worker.log",
        )

    @staticmethod
    def wait(predicate, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if value := predicate():
                    return value
            except requests.ConnectionError:
                pass
            time.sleep(0.5)
        raise SystemExit(f"Timed out after {timeout:.0f}s waiting for {what}.")

    def get(self, path: str) -> dict:
        return self.session.get(self.api + path).json()

    def post(self, path: str, *expect: int, **kwargs) -> dict:
        response = self.session.post(self.api + path, **kwargs)
        if response.status_code not in expect:
            raise SystemExit(f"POST {path}: {response.status_code} {response.text[:300]}")
        return response.json()

    def setup(self) -> int:
        python = [sys.executable, "manage.py"]
        subprocess.run([*python, "migrate", "-v0"], cwd=REPO, env=self.env, check=True)
        script = (
            "from django.contrib.auth import get_user_model\n"
            "from projects.services import api_token_create, project_create, team_create\n"
            "u = get_user_model().objects.create_user('pm', password='drill-password-1')\n"
            "t = team_create(actor=u, name='Drill')\n"
            "p = project_create(actor=u, team=t, name='Bard', task_type='generation')\n"
            "print('DRILL', api_token_create(actor=u, name='drill')[1], p.pk)\n"
        )
        out = subprocess.run(
            [*python, "shell", "-c", script],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        token, project = next(
            line for line in out.splitlines() if line.startswith("DRILL")
        ).split()[1:]
        self.session.headers["Authorization"] = f"Bearer {token}"
        return int(project)


def run(drill: Drill) -> dict[str, float]:
    project = drill.setup()
    redis = drill.redis()
    web, port = start_web_server(drill.env, gunicorn=True)
    drill.processes.append(web)
    drill.api = f"http://127.0.0.1:{port}/api/v1/"
    worker = drill.worker()

    # A training job on a corpus with a tokenizer of its own.
    dataset = drill.post("datasets/", 201, json={"project": project, "name": "bard"})
    drill.post(
        f"datasets/{dataset['id']}/upload/",
        202,
        files={"file": ("bard.txt", CORPUS.read_bytes()[:200_000])},
        data={"txt_mode": "chunks"},
    )
    version = drill.wait(
        lambda: drill.get(f"dataset-versions/?dataset={dataset['id']}")["results"], 180, "ingest"
    )[0]
    drill.post(
        "tokenizers/", 201, 202, json={"version": version["id"], "name": "bpe", "vocab_size": 500}
    )
    tokenizer = drill.wait(
        lambda: drill.get(f"tokenizers/?project={project}")["results"], 180, "the tokenizer"
    )[0]
    job = drill.post(
        "training-jobs/",
        201,
        json={
            "project": project,
            "name": "bard",
            "kind": "pretrain_clm",
            "base_source": "random",
            "model_spec": {"family": "gpt2", "size": "tiny"},
            "tokenizer": tokenizer["id"],
            "train_version": version["id"],
            "hyperparameters": {
                "max_steps": 2000,
                "batch_size": 8,
                "max_seq_length": 32,
                "logging_steps": 1,
                "save_steps": 250,
            },
        },
    )
    path = f"training-jobs/{job['id']}/"

    # A: the worker dies mid-run; only the web process is left to notice.
    drill.wait(lambda: drill.get(path)["global_step"] >= 600, 600, "training past step 600")
    killed_at_step = drill.get(path)["global_step"]
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    killed = time.monotonic()
    drill.wait(lambda: drill.get(path)["status"] == "queued", 120, "the re-queue")
    requeued_s = time.monotonic() - killed
    worker = drill.worker()
    done = drill.wait(
        lambda: (j := drill.get(path))["status"] in ("succeeded", "failed") and j, 900, "resume"
    )
    loss = drill.get(f"{path}curves/?names=loss")["curves"]["loss"]
    print(
        f"A  worker killed at step {killed_at_step}; re-queued by the web process after "
        f"{requeued_s:.0f} s; resumed: {done['status']}, attempts {done['attempts']}, "
        f"{len(loss['steps'])} loss points over {len(set(loss['steps']))} steps"
    )
    stop_process(worker)

    # B: a queued job whose message Redis forgets.
    check = drill.post("health-checks/", 201, json={"project": project})
    redis.send_signal(signal.SIGKILL)
    redis.wait()
    redis = drill.redis()
    keys_after_restart = drill.redis_keys()
    worker = drill.worker()
    started = time.monotonic()
    finished = drill.wait(
        lambda: (
            (j := drill.get(f"health-checks/{check['id']}/"))["status"] in ("succeeded", "failed")
            and j
        ),
        180,
        "the re-sent job",
    )
    resent_s = time.monotonic() - started
    print(
        f"B  Redis restarted with {keys_after_restart} keys; the job {finished['status']} "
        f"{resent_s:.0f} s after a worker started"
    )

    # C: a launch while the broker is down.
    redis.send_signal(signal.SIGKILL)
    redis.wait()
    time.sleep(6)  # past the 5 s for which a successful broker check is trusted
    response = drill.session.post(drill.api + "health-checks/", json={"project": project})
    count = len(drill.get(f"health-checks/?project={project}")["results"])
    print(f"C  launch with Redis down: {response.status_code}; health checks stored: {count}")
    return {
        "killed_worker_requeued_s": round(requeued_s, 1),
        "killed_worker_job_succeeded": float(done["status"] == "succeeded"),
        "duplicate_loss_points": float(len(loss["steps"]) - len(set(loss["steps"]))),
        "lost_message_finished_s": round(resent_s, 1),
        "lost_message_job_succeeded": float(finished["status"] == "succeeded"),
        "broker_down_launch_status": float(response.status_code),
        "broker_down_jobs_created": float(count - 1),
    }


def main() -> None:
    stop_on_sigterm()
    if shutil.which("redis-server") is None:
        raise SystemExit("This drill needs redis-server (apt-get install redis-server).")
    scratch = Path(tempfile.mkdtemp(prefix="llmhub-recovery-"))
    drill = Drill(scratch)
    try:
        figures = run(drill)
    finally:
        for process in drill.processes:
            stop_process(process)
        shutil.rmtree(scratch, ignore_errors=True)
    # A stale heartbeat is noticed by the next sweep; a lost message is re-sent by the first
    # sweep after the re-send limit.
    targets = {
        "killed_worker_requeued_s": {"max": STALE_AFTER + 2 * SWEEP_EVERY},
        "killed_worker_job_succeeded": {"min": 1},
        "duplicate_loss_points": {"max": 0},
        "lost_message_finished_s": {"max": RESEND_AFTER + 3 * SWEEP_EVERY},
        "lost_message_job_succeeded": {"min": 1},
        "broker_down_launch_status": {"min": 503, "max": 503},
        "broker_down_jobs_created": {"max": 0},
    }
    print(f"\n{'figure':<30} {'value':>8}  target")
    for name, value in figures.items():
        print(f"{name:<30} {value:>8}  {targets[name]}")
    print(json.dumps({"figures": figures, "targets": targets}))


if __name__ == "__main__":
    main()
