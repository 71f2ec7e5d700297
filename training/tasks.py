"""The training job runner on the gpu queue.

It turns a TrainingJob row into the runtime's TrainingConfig (local copies of the data splits,
tokenizer, base model and the last checkpoint when resuming), runs ``training.runtime.run.train``
with the job context as reporter, uploads each checkpoint as it is written, and registers the
final model version. torch and transformers are imported here only inside the runner, so the web
process (which imports this module to enqueue) never loads them.
"""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path

from django.conf import settings

from datasets_app.models import DatasetVersion
from llmhub import storage
from llmhub.jobs import JobContext, job_runner
from llmhub.reporting import JobInputError
from training import services
from training.metrics_store import summarize
from training.models import BaseSource, Checkpoint, TrainingJob

logger = logging.getLogger(__name__)


def _split_path(version: DatasetVersion, split: str) -> Path:
    if not split:
        return storage.local_copy(version.file)
    return storage.local_copy(version.splits.get(name=split).file)


def _last_checkpoint(job: TrainingJob) -> Checkpoint | None:
    """The checkpoint to resume from: this job's own (re-queued after a dead worker) or the
    job it resumes."""
    for source in (job, job.resumed_from):
        if source is not None:
            checkpoint = source.checkpoints.order_by("-step").first()
            if checkpoint is not None:
                return checkpoint
    return None


def _base_model_dir(job: TrainingJob) -> Path:
    """The registered base model's directory here: the installed package's folder, or its
    uploaded files copied from storage; a failed job saying why when neither is possible."""
    from training.base_models import base_model_local_dir

    if job.base_model is None:
        raise JobInputError("The job's registered base model no longer exists.")
    return base_model_local_dir(job.base_model)


def build_config(job: TrainingJob, work_dir: Path):
    """The runtime config for ``job``, with every input materialized on this machine."""
    from training.runtime.config import TrainingConfig
    from training.runtime.presets import ModelSpec

    source: dict = {}
    if job.base_source == BaseSource.RANDOM:
        source["model_spec"] = ModelSpec.from_dict(job.model_spec)
    elif job.base_source == BaseSource.MODEL_VERSION:
        version = job.base_model_version
        source["base_model_dir"] = storage.local_directory(version.files_prefix, version.files)
    elif job.base_source == BaseSource.BASE_MODEL:
        source["base_model_dir"] = _base_model_dir(job)
    elif job.base_source == BaseSource.LOCAL_DIR:
        source["base_model_dir"] = Path(job.base_path)
    else:
        source["hub_model_id"] = job.hub_model_id
    tokenizer_dir = None
    if job.tokenizer is not None:
        tokenizer_dir = storage.local_directory(job.tokenizer.files_prefix, job.tokenizer.files)
    checkpoint = _last_checkpoint(job)
    resume_dir = None
    if checkpoint is not None:
        resume_dir = storage.local_directory(checkpoint.files_prefix, checkpoint.files)
    hyperparameters = {
        k: v for k, v in job.hyperparameters.items() if k not in ("method", "register_as")
    }
    return TrainingConfig(
        kind=job.kind,
        method=job.method,
        tokenizer_dir=tokenizer_dir,
        train_path=_split_path(job.train_version, job.train_split),
        eval_path=_split_path(job.train_version, job.eval_split) if job.eval_split else None,
        column_roles=job.column_roles,
        output_dir=work_dir / "output",
        resume_from_checkpoint=resume_dir,
        max_parameters=settings.LLMHUB_MAX_MODEL_PARAMETERS,
        **source,
        **hyperparameters,
    )


@job_runner(TrainingJob)
def run_training_job(job: TrainingJob, ctx: JobContext) -> None:
    """Train, upload checkpoints as they come, register the model version."""
    import torch

    from training.runtime.run import train

    if job.external:
        raise JobInputError("External runs are tracked, not executed by a worker.")
    work_dir = Path(settings.LLMHUB_CACHE_DIR) / "training" / f"job-{job.pk}"
    shutil.rmtree(work_dir, ignore_errors=True)
    work_dir.mkdir(parents=True)
    device = f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"
    ctx.record(device=device)
    try:
        checkpoint = _last_checkpoint(job)
        # A re-queued attempt logs again the steps after its checkpoint (all of them when it
        # starts over): drop the dead attempt's points for those steps first.
        services.metrics_rewind(job=job, to_step=checkpoint.step if checkpoint else -1)
        config = build_config(job, work_dir)

        def on_checkpoint(path: Path, step: int) -> None:
            services.checkpoint_register(job=job, local_dir=path, step=step)
            logger.info("Checkpoint at step %s stored", step)

        processes = settings.LLMHUB_TRAINING_PROCESSES
        if processes > 1:
            result = _train_in_processes(config, ctx, on_checkpoint, processes, work_dir)
        else:
            result = train(config, reporter=ctx, checkpoint_callback=on_checkpoint)
        ctx.flush()  # the last metric points before the row is finalized
        # NaN or infinite final metrics (a diverged run) cannot be stored as JSON on PostgreSQL
        # nor served by any JSON reader: they are left out, as the curves leave them out.
        metrics = {
            k: v
            for k, v in result.metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        }
        # A run that diverged under on_divergence="warn" succeeds with its warnings ("succeeded
        # with warnings"); the model version copies them from the job.
        warnings = [dict(w) for w in result.warnings]
        ctx.record(
            device=result.device,
            precision_used=result.precision,
            global_step=result.global_step,
            total_steps=result.global_step,
            final_metrics=metrics,
            warnings=warnings,
            estimate=_with_counted_parameters(job.estimate, result),
        )
        job.warnings = warnings
        services.model_version_register(
            job=job, model_dir=result.model_dir, metrics=metrics, parameters=result.parameters
        )
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
        # Failed and cancelled runs keep their curves for comparisons too.
        ctx.flush()
        ctx.record(curve_summary=summarize(job.pk))


def _with_counted_parameters(estimate: dict, result) -> dict:
    """The job's estimate with the parameters of the model it built, counted, so the job and
    its model version show one figure; the launch's estimate stays as
    ``estimated_parameters`` where it differed (a classifier's head is estimated for two
    classes before the labels are read)."""
    estimate = dict(estimate or {})
    if not estimate:
        return estimate
    if estimate.get("parameters") != result.parameters:
        estimate["estimated_parameters"] = estimate.get("parameters")
    estimate["parameters"] = result.parameters
    estimate["trainable_parameters"] = result.trainable_parameters
    return estimate


def _train_in_processes(config, ctx: JobContext, on_checkpoint, processes: int, work_dir: Path):
    """Train under ``torchrun`` with ``processes`` ranks (one per GPU; gloo on CPU), relaying
    the ranks' reports from the events file to the job, and a cancel through the stop file."""
    import json
    import subprocess
    import sys
    import time

    from training.runtime.launch import config_to_json
    from training.runtime.run import TrainResult

    config_file, events, stop = work_dir / "job.json", work_dir / "events.jsonl", work_dir / "stop"
    config_file.write_text(json.dumps(config_to_json(config)))
    events.touch()
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
        "-m",
        "training.runtime.launch",
        "--config",
        str(config_file),
        "--events",
        str(events),
        "--stop",
        str(stop),
    ]
    log = open(work_dir / "ranks.log", "wb")  # noqa: SIM115 - closed below
    # The command is ours: the interpreter, torchrun and our own module with scratch paths.
    process = subprocess.Popen(  # noqa: S603
        command, cwd=settings.BASE_DIR, stdout=log, stderr=subprocess.STDOUT
    )
    outcome: dict = {}
    position = 0

    def relay() -> None:
        nonlocal position
        with open(events) as handle:
            handle.seek(position)
            for line in handle:
                if not line.endswith("\n"):
                    break  # a line still being written: read it next time
                position += len(line.encode())
                event = json.loads(line)
                kind = event.pop("type")
                if kind == "progress":
                    ctx.progress(event["fraction"], event["message"])
                elif kind == "metrics":
                    ctx.metrics(event["step"], event["values"], epoch=event["epoch"])
                elif kind == "checkpoint":
                    on_checkpoint(Path(event["path"]), event["step"])
                    shutil.rmtree(event["path"], ignore_errors=True)
                else:
                    outcome.update(event, type=kind)

    try:
        while process.poll() is None:
            relay()
            if ctx.should_stop() and not stop.exists():
                stop.touch()
            time.sleep(0.5)
        relay()
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
    kind = outcome.get("type")
    if kind == "input_error":
        raise JobInputError(outcome["message"])
    if kind == "cancelled":
        from llmhub.reporting import JobCancelled

        raise JobCancelled
    if kind != "result":
        tail = (work_dir / "ranks.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"torchrun exited with {process.returncode}:\n{tail}")
    outcome.pop("type")
    outcome["model_dir"] = Path(outcome["model_dir"])
    return TrainResult(**outcome)
