"""Benchmark: what an LLMHub training job costs over a bare PyTorch loop.

The same GPT-2 style model (the ``small`` preset: 4 layers, width 256, ~3.5M parameters with
this tokenizer), the same packed Shakespeare blocks and batch, trained for a fixed number of
steps: once by ``training/runtime/bare_loop.py`` in this process, once as an LLMHub job through
a real Celery worker (every step's metrics logged and flushed to the database, a checkpoint
uploaded at the end, the model registered). Rounds alternate bare / job after a warm-up; the
ratio reported is the median of the per-round ratios of training tokens per second.

Each side of each round measures contention (``bench/helpers/contention.py``): the CPU time other
processes took during it, in cores. A round where others took more than 15% of a core on
either side is discarded; the medians are of the clean rounds (of all rounds, flagged, when
none was clean). The scratch folder and the worker are removed at the end, also on Ctrl-C or
SIGTERM.

    .venv/bin/python bench/training_overhead.py           # 3 rounds of 60 steps
    .venv/bin/python bench/training_overhead.py --rounds 1 --steps 30
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRATCH = Path(tempfile.mkdtemp(prefix="llmhub-overhead-bench-"))
os.environ.update(
    {
        "DJANGO_SETTINGS_MODULE": "llmhub.settings",
        "LLMHUB_VAR_DIR": str(SCRATCH / "var"),
        "LLMHUB_ENV": "development",
        "DEBUG": "false",
        "TOKENIZERS_PARALLELISM": "false",
    }
)
for name in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL"):
    os.environ.pop(name, None)
sys.path.insert(0, str(REPO))

from bench.helpers import stop_on_sigterm, stop_process  # noqa: E402
from bench.helpers.contention import Round, cores, split_rounds  # noqa: E402

CORPUS = REPO.parent / "shared" / "datasets" / "corpus_tinyshakespeare.txt"
if not CORPUS.exists():
    CORPUS = REPO / "tests" / "fixtures" / "data" / "tinyshakespeare_sample.txt"
BATCH, SEQ, LR = 8, 128, 1e-3


def setup():
    from django.contrib.auth.models import User
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.core.management import call_command

    from datasets_app import services as data
    from datasets_app.models import DataJob, DatasetVersion, Tokenizer
    from llmhub.jobs import run_job_inline
    from projects.services import project_create, team_create

    call_command("migrate", verbosity=0)
    user = User.objects.create_user("bench", password="bench-password-123")
    team = team_create(actor=user, name="Bench")
    project = project_create(actor=user, team=team, name="Bench", task_type="generation")
    dataset = data.dataset_create(actor=user, project=project, name="shakespeare")
    data.upload_start(
        actor=user,
        dataset=dataset,
        txt_mode="chunks",
        chunk_chars=2000,
        uploaded_file=SimpleUploadedFile("corpus.txt", CORPUS.read_bytes()),
    )
    while job := DataJob.objects.filter(status="queued").first():
        run_job_inline(job)
    version = DatasetVersion.objects.get(dataset=dataset)
    data.tokenizer_launch(actor=user, version=version, name="bpe", vocab_size=2000)
    while job := DataJob.objects.filter(status="queued").first():
        run_job_inline(job)
    return user, project, version, Tokenizer.objects.get(name="bpe")


def start_worker() -> subprocess.Popen:
    log = open(SCRATCH / "worker.log", "wb")  # noqa: SIM115 - closed with the process
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "llmhub.celery",
            "worker",
            "-Q",
            "gpu,cpu",
            "--pool",
            "solo",
            "-l",
            "warning",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        cwd=REPO,
        env=os.environ.copy(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    time.sleep(6)
    return worker


def run_job(user, project, version, tokenizer, steps: int) -> dict:
    from llmhub.jobs import wait_until
    from training.models import TrainingJob
    from training.services import training_job_launch

    job = training_job_launch(
        actor=user,
        project=project,
        name="overhead",
        kind="pretrain_clm",
        model_spec={"family": "gpt2", "size": "small"},
        tokenizer=tokenizer,
        train_version=version,
        hyperparameters={
            "max_steps": steps,
            "batch_size": BATCH,
            "max_seq_length": SEQ,
            "learning_rate": LR,
            "logging_steps": 1,
            "save_steps": steps,
        },
    )
    started = time.perf_counter()
    if not wait_until(
        lambda: TrainingJob.objects.get(pk=job.pk).is_terminal, timeout=900, interval=0.5
    ):
        raise SystemExit("The job did not finish in time.")
    wall = time.perf_counter() - started
    job.refresh_from_db()
    if job.status != "succeeded":
        raise SystemExit(f"The job {job.status}: {job.error}\n{job.traceback}")
    points = job.metric_points.filter(name="loss").count()
    return {
        "tokens_per_second": job.final_metrics["tokens_per_second"],
        "wall": wall,
        "loss_points": points,
        "checkpoints": job.checkpoints.count(),
    }


def run_bare(version, tokenizer, steps: int) -> dict:
    from llmhub import storage
    from training.runtime.bare_loop import bare_train
    from training.runtime.presets import ModelSpec

    return bare_train(
        spec=ModelSpec("gpt2", "small"),
        tokenizer_dir=storage.local_directory(tokenizer.files_prefix, tokenizer.files),
        train_path=storage.local_copy(version.file),
        text_column="text",
        steps=steps,
        batch_size=BATCH,
        seq_len=SEQ,
        learning_rate=LR,
        output_dir=SCRATCH / "bare-model",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    stop_on_sigterm()
    worker = None
    try:
        import django

        django.setup()
        user, project, version, tokenizer = setup()
        worker = start_worker()
        # Warm-up: caches, imports, the first model build on both sides.
        run_bare(version, tokenizer, 5)
        run_job(user, project, version, tokenizer, 5)
        rounds = []
        for _ in range(args.rounds):
            with Round() as bare_meter:
                bare = run_bare(version, tokenizer, args.steps)
            with Round() as job_meter:
                job = run_job(user, project, version, tokenizer, args.steps)
            rounds.append((bare | {"meter": bare_meter}, job | {"meter": job_meter}))
    finally:
        stop_process(worker, timeout=20)
        shutil.rmtree(SCRATCH, ignore_errors=True)

    clean, discarded = split_rounds(rounds, lambda r: [r[0]["meter"], r[1]["meter"]])
    contended = discarded == len(rounds)
    print(
        f"GPT-2 style 'small' preset, batch {BATCH} x {SEQ} tokens, {args.steps} steps, "
        f"{args.rounds} interleaved rounds (bare, job) on {cores()} cores"
    )
    print(
        f"{'round':>6} {'bare tok/s':>12} {'job tok/s':>12} {'ratio':>7} {'job wall s':>11} "
        f"{'loss points':>12} {'checkpoints':>12}  contention (bare; job)"
    )
    for index, (bare, job) in enumerate(rounds, start=1):
        print(
            f"{index:>6} {bare['tokens_per_second']:>12,.0f} {job['tokens_per_second']:>12,.0f} "
            f"{job['tokens_per_second'] / bare['tokens_per_second']:>7.3f} "
            f"{job['wall']:>11.1f} {job['loss_points']:>12} {job['checkpoints']:>12}  "
            f"{bare['meter'].describe()}; {job['meter'].describe()}"
        )
    verdict = (
        "every round was contended: the medians are of ALL rounds and are not the product's figures"
        if contended
        else f"medians of {len(clean)} clean rounds, {discarded} contended rounds discarded"
    )
    print(f"({verdict}; contended: others took more than 15% of a core)")
    print(
        "(job tokens/s: the Trainer's training loop with logging, the callback, and the final "
        "checkpoint; job wall also counts queueing, data preparation, upload and registry)"
    )
    clean_ratios = [j["tokens_per_second"] / b["tokens_per_second"] for b, j in clean]
    print(
        json.dumps(
            {
                "figures": {
                    "bare_tokens_per_second": round(
                        statistics.median(b["tokens_per_second"] for b, _ in clean), 1
                    ),
                    "job_tokens_per_second": round(
                        statistics.median(j["tokens_per_second"] for _, j in clean), 1
                    ),
                    "job_to_bare_ratio": round(statistics.median(clean_ratios), 3),
                    "job_wall_seconds": round(statistics.median(j["wall"] for _, j in clean), 1),
                    "rounds": len(rounds),
                    "contended_rounds_discarded": discarded,
                    "all_rounds_contended": contended,
                    "max_other_cores": round(
                        max(m["meter"].other_cores for r in rounds for m in r), 3
                    ),
                },
                "targets": {"job_to_bare_ratio": {"min": 0.95}},
            }
        )
    )


if __name__ == "__main__":
    main()
