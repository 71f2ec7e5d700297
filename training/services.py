"""Every write of the training stage: launching, resuming and cancelling training jobs, sweeps,
tracking external runs, checkpoints, and the model registry.

Everything that can be known before launch is checked here, so a bad request is a 400 with a
message rather than a failed job: hyperparameters in range, a dataset version with the columns
the job kind needs, a tokenizer that fits the base model, a base model that exists.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from datasets_app.models import DatasetVersion, Tokenizer
from llmhub import storage
from llmhub.jobs import enqueue_job, requires_broker
from llmhub.models import JobStatus
from llmhub.services import update_instance
from projects.audit import record_event
from projects.models import Project
from projects.permissions import Action
from projects.services import require
from training.models import (
    BaseModel,
    BaseSource,
    Checkpoint,
    ModelVersion,
    RegisteredModel,
    Stage,
    StageChange,
    Sweep,
    TrainingJob,
    TrainingKind,
    TrainingMethod,
)


def _error(field: str | None, message: str) -> ValidationError:
    return ValidationError({field: message} if field else message)


# --- checks shared by launch, sweeps and resume -------------------------------------------------


def _check_roles(kind: str, version: DatasetVersion, roles: dict[str, str]) -> None:
    from llmhub.reporting import JobInputError
    from training.runtime.config import PREFERENCE_KINDS, preference_columns, required_roles

    if kind in PREFERENCE_KINDS:
        # trl's formats: each field by its role, or a column named after it (the runtime reads
        # the table the same way).
        try:
            preference_columns(kind, roles, list(version.columns))
        except JobInputError as exc:
            raise _error("train_version", f"{version}: {exc}") from exc
        return
    for options in required_roles(kind):
        if not any(role in roles and roles[role] in version.columns for role in options):
            label = " or ".join(f"'{o}'" for o in options)
            raise _error(
                "train_version",
                f"A {TrainingKind(kind).label} job needs a {label} column; {version} has roles "
                f"{json.dumps(roles) if roles else '(none)'} over columns "
                f"{', '.join(version.columns)}. Map the roles on the version page first.",
            )


def _check_split(version: DatasetVersion, split: str, field: str) -> None:
    problem = version.missing_split(split)
    if problem:
        raise _error(field, problem)


def _read_local_config(path: Path) -> dict:
    config_file = path / "config.json"
    if not path.is_dir():
        raise _error("base_path", f"No directory at {path}.")
    if not config_file.is_file():
        raise _error("base_path", f"{path} is not a model directory: it has no config.json.")
    try:
        return json.loads(config_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise _error("base_path", f"{config_file} cannot be read: {exc}") from exc


def _check_kind_fits(kind: str, config: dict, *, field: str, name: str) -> None:
    """Refuse a job kind the base model's architecture cannot do (a decoder cannot answer
    extractive QA, an encoder cannot generate), where its config says which it is."""
    from training.runtime.presets import FAMILIES, KINDS_BY_ARCHITECTURE

    architecture = (FAMILIES.get(config.get("model_type") or "") or {}).get("architecture")
    if architecture is None:
        names = " ".join(str(a) for a in config.get("architectures") or [])
        if "CausalLM" in names or "LMHeadModel" in names:
            architecture = "decoder"
        elif "ConditionalGeneration" in names or "Seq2SeqLM" in names:
            architecture = "encoder-decoder"
    if architecture is None:
        return  # the runtime's loader decides
    allowed = KINDS_BY_ARCHITECTURE[architecture]
    if kind not in allowed:
        article = "an" if architecture.startswith("e") else "a"
        raise _error(
            field,
            f"{name} is {article} {architecture} model "
            f"({config.get('model_type') or 'unknown type'}): it cannot do "
            f"'{TrainingKind(kind).label}'; it can do "
            f"{'; '.join(repr(TrainingKind(k).label) for k in allowed)}.",
        )


def _check_preference_base(
    kind: str,
    *,
    base_source: str,
    base_model_version: ModelVersion | None,
    config: dict,
    field: str,
    name: str,
) -> None:
    """A reward model starts from a model with a sequence-classification head (a causal LM, an
    encoder or a classifier); DPO and KTO from a causal LM, which they tune."""
    from training.runtime.config import PREFERENCE_BASE_KINDS, PREFERENCE_MODEL_KIND

    label = TrainingKind(kind).label
    if base_source == BaseSource.MODEL_VERSION and base_model_version is not None:
        allowed = PREFERENCE_BASE_KINDS[kind]
        if base_model_version.task_kind not in allowed:
            raise _error(
                field,
                f"{name} is a '{TrainingKind(base_model_version.task_kind).label}' model; a "
                f"'{label}' job starts from a version of kind "
                f"{', '.join(repr(TrainingKind(k).label) for k in allowed)}.",
            )
    # Its architecture where the config says (a decoder for DPO and KTO; no seq2seq model).
    try:
        _check_kind_fits(PREFERENCE_MODEL_KIND[kind], config, field=field, name=name)
    except ValidationError as exc:
        what = "a causal LM (a decoder)" if kind != "reward_model" else "a decoder or an encoder"
        raise _error(
            field, f"A '{label}' job starts from {what}. {' '.join(exc.messages)}"
        ) from exc


def _model_limits(config: dict) -> tuple[int | None, int | None]:
    """(vocabulary size, maximum positions) of a transformers config, where it says."""
    vocab = config.get("vocab_size")
    for key in ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length"):
        if isinstance(config.get(key), int):
            return vocab, config[key]
    return vocab, None


def _validate_hyperparameters(
    hyperparameters: dict,
    *,
    method: str,
    kind: str | None = None,
    has_eval: bool | None = None,
    pretrained: bool = False,
    family: str | None = None,
) -> dict:
    from llmhub.reporting import JobInputError
    from training.runtime.config import validate_hyperparameters

    if not isinstance(hyperparameters, dict):
        raise _error("hyperparameters", "Give an object of hyperparameter -> value.")
    try:
        # With the kind and the eval split: early stopping and the best checkpoint are checked
        # here as the worker checks them; with the family, the architecture settings.
        return validate_hyperparameters(
            hyperparameters, kind=kind, has_eval=has_eval, pretrained=pretrained, family=family
        )
    except JobInputError as exc:
        raise _error("hyperparameters", str(exc)) from exc


def _estimate(spec: dict, *, hyperparameters: dict, method: str, kind: str | None = None) -> dict:
    """The estimate of a spec or base config; a ValidationError for a malformed spec or a model
    above the size limit (the runtime's check, with this installation's setting)."""
    from llmhub.reporting import JobInputError
    from training.runtime.config import check_model_size, model_settings
    from training.runtime.presets import estimate_from_dict

    try:
        estimate = estimate_from_dict(
            spec,
            seq_len=hyperparameters["max_seq_length"],
            batch_size=hyperparameters["batch_size"],
            precision=hyperparameters["precision"],
            method=method,
            kind=kind,  # the head the job builds (a classifier's, not an LM's) is counted
            settings=model_settings(hyperparameters),  # tied embeddings, biases
        )
        check_model_size(estimate["parameters"], limit=settings.LLMHUB_MAX_MODEL_PARAMETERS)
    except JobInputError as exc:
        raise _error("model_spec", str(exc)) from exc
    return estimate


def _prepare(
    *,
    project: Project,
    kind: str,
    method: str,
    base_source: str,
    model_spec: dict | None,
    base_model_version: ModelVersion | None,
    base_path: str,
    hub_model_id: str,
    tokenizer: Tokenizer | None,
    train_version: DatasetVersion | None,
    train_split: str,
    eval_split: str,
    hyperparameters: dict,
    base_model: BaseModel | None = None,
) -> dict[str, Any]:
    """Validate a launch request; returns the fields of the job to create."""
    if kind not in TrainingKind.values:
        raise _error("kind", f"Unknown kind '{kind}'. Kinds: {', '.join(TrainingKind.values)}.")
    if method not in TrainingMethod.values:
        raise _error("method", "Choose 'full' or 'lora'.")
    if base_source not in BaseSource.values:
        raise _error("base_source", f"Choose one of {', '.join(BaseSource.values)}.")
    if train_version is None:
        raise _error("train_version", "Choose the dataset version to train on.")
    if train_version.dataset.project_id != project.pk:
        raise _error("train_version", "The dataset version belongs to another project.")
    if tokenizer is not None and tokenizer.project_id != project.pk:
        raise _error("tokenizer", "The tokenizer belongs to another project.")
    _check_split(train_version, train_split, "train_split")
    _check_split(train_version, eval_split, "eval_split")
    roles = dict(train_version.column_roles)
    _check_roles(kind, train_version, roles)
    random_family = (model_spec or {}).get("family") if isinstance(model_spec, dict) else None
    hyperparameters = _validate_hyperparameters(
        hyperparameters,
        method=method,
        kind=kind,
        has_eval=bool(eval_split),
        pretrained=base_source != BaseSource.RANDOM,
        # Architecture settings fit the family built from random weights; a pretrained model
        # keeps its own ("").
        family=random_family if base_source == BaseSource.RANDOM else "",
    )

    from training.runtime.config import PREFERENCE_KINDS, PREFERENCE_MODEL_KIND

    preference = kind in PREFERENCE_KINDS
    # Estimates and architecture checks count the model the job builds (a scalar-reward
    # classifier, or the causal LM DPO and KTO tune).
    model_kind = PREFERENCE_MODEL_KIND.get(kind, kind)
    vocab, max_positions, spec = None, None, dict(model_spec or {})
    if preference and base_source == BaseSource.RANDOM:
        raise _error(
            "base_source",
            f"A '{TrainingKind(kind).label}' job trains a model from feedback: start it from a "
            "trained model (a model version of this project, or a registered base model), not "
            "from random weights.",
        )
    if base_source == BaseSource.RANDOM:
        if tokenizer is None:
            raise _error(
                "tokenizer",
                "A model from random weights needs a tokenizer trained on "
                "your data (Data tab -> a version -> Train a tokenizer).",
            )
        if method == TrainingMethod.LORA:
            raise _error(
                "method",
                "LoRA adapts a trained base model; from random weights "
                "train all weights (method 'full').",
            )
        spec["vocab_size"] = tokenizer.vocab_size
        estimate = _estimate(spec, hyperparameters=hyperparameters, method=method, kind=kind)
        max_positions = estimate.get("max_positions")
    else:
        if base_source == BaseSource.MODEL_VERSION:
            if base_model_version is None:
                raise _error("base_model_version", "Choose the model version to start from.")
            if base_model_version.project.pk != project.pk:
                raise _error("base_model_version", "The model version belongs to another project.")
            config = base_model_version.config
            tokenizer = tokenizer or base_model_version.tokenizer
            if preference:
                _check_preference_base(
                    kind,
                    base_source=base_source,
                    base_model_version=base_model_version,
                    config=config,
                    field="base_model_version",
                    name=str(base_model_version),
                )
        elif base_source == BaseSource.BASE_MODEL:
            if base_model is None:
                raise _error("base_model", "Choose the registered base model to start from.")
            if base_model.team_id != project.team_id:
                raise _error("base_model", "The base model belongs to another team.")
            config = base_model.config
            if preference:
                _check_preference_base(
                    kind,
                    base_source=base_source,
                    base_model_version=None,
                    config=config,
                    field="base_model",
                    name=base_model.name,
                )
            else:
                _check_kind_fits(kind, config, field="base_model", name=base_model.name)
        elif base_source == BaseSource.LOCAL_DIR:
            config = _read_local_config(Path(base_path))
            if preference:
                _check_preference_base(
                    kind,
                    base_source=base_source,
                    base_model_version=None,
                    config=config,
                    field="base_path",
                    name=base_path,
                )
            else:
                _check_kind_fits(kind, config, field="base_path", name=base_path)
        else:
            if not hub_model_id.strip():
                raise _error("hub_model_id", "Give the hub model id to download.")
            config = {}
        vocab, max_positions = _model_limits(config)
        if tokenizer is not None and vocab is not None and tokenizer.vocab_size > vocab:
            raise _error(
                "tokenizer",
                f"The tokenizer has {tokenizer.vocab_size:,} tokens but the base model's "
                f"embedding has {vocab:,}: ids past {vocab - 1} would have no embedding. Use "
                "the base model's own tokenizer or a smaller vocabulary.",
            )
        estimate = {}
        if config:
            estimate = _estimate(
                {"config": config}, hyperparameters=hyperparameters, method=method, kind=model_kind
            )
    if max_positions and hyperparameters["max_seq_length"] > max_positions:
        raise _error(
            "hyperparameters",
            f"max_seq_length {hyperparameters['max_seq_length']} is above the model's maximum "
            f"of {max_positions} positions.",
        )
    return {
        "kind": kind,
        "method": method,
        "base_source": base_source,
        "base_model_version": base_model_version
        if base_source == BaseSource.MODEL_VERSION
        else None,
        "base_model": base_model if base_source == BaseSource.BASE_MODEL else None,
        "base_path": base_path if base_source == BaseSource.LOCAL_DIR else "",
        "hub_model_id": hub_model_id if base_source == BaseSource.HUB else "",
        "model_spec": spec if base_source == BaseSource.RANDOM else {},
        "tokenizer": tokenizer,
        "train_version": train_version,
        "train_split": train_split,
        "eval_split": eval_split,
        "column_roles": roles,
        "hyperparameters": hyperparameters,
        "estimate": estimate,
    }


# --- launch, resume, external runs ------------------------------------------------------------


@requires_broker
def training_job_launch(
    *,
    actor,
    project: Project,
    name: str,
    kind: str,
    train_version: DatasetVersion | None,
    method: str = TrainingMethod.FULL,
    base_source: str = BaseSource.RANDOM,
    model_spec: dict | None = None,
    base_model_version: ModelVersion | None = None,
    base_path: str = "",
    hub_model_id: str = "",
    tokenizer: Tokenizer | None = None,
    train_split: str = "",
    eval_split: str = "",
    hyperparameters: dict | None = None,
    sweep: Sweep | None = None,
    base_model: BaseModel | None = None,
) -> TrainingJob:
    """Validate and queue a training job on the gpu queue. The checks (which may read a local
    model directory's config) run before the short transaction that creates the job."""
    require(actor, project.team, Action.RUN_JOBS)
    fields = _prepare(
        project=project,
        kind=kind,
        method=method,
        base_source=base_source,
        model_spec=model_spec,
        base_model_version=base_model_version,
        base_path=base_path,
        hub_model_id=hub_model_id,
        tokenizer=tokenizer,
        train_version=train_version,
        train_split=train_split,
        eval_split=eval_split,
        hyperparameters=hyperparameters or {},
        base_model=base_model,
    )
    with transaction.atomic():
        return _create_job(actor=actor, project=project, name=name, sweep=sweep, fields=fields)


def _create_job(
    *, actor, project: Project, name: str, sweep: Sweep | None, fields: dict[str, Any]
) -> TrainingJob:
    """Create and queue a job from validated launch fields (inside the caller's transaction)."""
    job = TrainingJob(
        project=project,
        name=(name or "").strip() or f"{fields['kind']} run",
        created_by=actor,
        sweep=sweep,
        **fields,
    )
    job.full_clean(exclude=["model_version"])
    job.save()
    record_event(
        actor=actor,
        team=project.team,
        project=project,
        verb="training_job.launched",
        target=job,
        changes={"kind": fields["kind"]},
    )
    enqueue_job(job)
    return job


@requires_broker
@transaction.atomic
def training_job_resume(*, actor, job: TrainingJob) -> TrainingJob:
    """Queue a new job that continues ``job`` from its last checkpoint."""
    require(actor, job.project.team, Action.RUN_JOBS)
    if job.external:
        raise ValidationError("An external run is resumed by its own script.")
    if job.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
        raise ValidationError(
            f"Only a failed or cancelled job can be resumed; this one {job.status}."
        )
    if not job.checkpoints.exists():
        raise ValidationError("This job saved no checkpoint to resume from; launch it again.")
    resumed = TrainingJob.objects.get(pk=job.pk)
    resumed.pk = resumed.id = None
    resumed._state.adding = True
    for field, value in {
        "status": JobStatus.QUEUED,
        "progress": 0.0,
        "progress_message": "",
        "error": "",
        "traceback": "",
        "log": "",
        "worker_host": "",
        "celery_task_id": "",
        "attempts": 0,
        "cancel_requested_at": None,
        "heartbeat_at": None,
        "started_at": None,
        "finished_at": None,
        "created_at": timezone.now(),
        "created_by": actor,
        "resumed_from": job,
        "final_metrics": {},
        "model_version": None,
        "device": "",
        "precision_used": "",
        "name": job.name if "(resumed)" in job.name else f"{job.name[:110]} (resumed)",
    }.items():
        setattr(resumed, field, value)
    resumed.full_clean(exclude=["model_version"])
    resumed.save()
    record_event(
        actor=actor,
        team=job.project.team,
        project=job.project,
        verb="training_job.resumed",
        target=resumed,
        changes={"from": job.pk},
    )
    enqueue_job(resumed)
    return resumed


@transaction.atomic
def external_run_start(
    *,
    actor,
    project: Project,
    name: str,
    kind: str = TrainingKind.SFT_CAUSAL,
    hyperparameters: dict | None = None,
    train_version: DatasetVersion | None = None,
) -> TrainingJob:
    """Track a run that trains outside LLMHub: its script posts metrics and finishes it."""
    require(actor, project.team, Action.RUN_JOBS)
    if kind not in TrainingKind.values:
        raise _error("kind", f"Unknown kind '{kind}'.")
    if train_version is not None and train_version.dataset.project_id != project.pk:
        raise _error("train_version", "The dataset version belongs to another project.")
    now = timezone.now()
    job = TrainingJob(
        project=project,
        name=(name or "").strip() or "external run",
        kind=kind,
        external=True,
        hyperparameters=hyperparameters or {},
        train_version=train_version,
        created_by=actor,
        status=JobStatus.RUNNING,
        started_at=now,
        heartbeat_at=now,
        attempts=1,
        worker_host="external",
    )
    job.full_clean(exclude=["model_version"])
    job.save()
    record_event(
        actor=actor,
        team=project.team,
        project=project,
        verb="training_job.external_started",
        target=job,
    )
    return job


MAX_POINTS_PER_REQUEST = 100_000


def metrics_ingest(*, actor, job: TrainingJob, points: list[dict]) -> int:
    """Store a batch of metric points, ``[{"step", "name", "value", "epoch"?}, ...]``, from an
    external script (or any client). Returns how many were stored. The store checks every
    point (a step within the column's range, a name, finite numbers) and refuses the whole
    batch, naming the first bad point, before anything is written."""
    from training import metrics_store

    require(actor, job.project.team, Action.RUN_JOBS)
    if job.status != JobStatus.RUNNING:
        raise ValidationError(f"The run is {job.status}; metrics go to running runs only.")
    if len(points) > MAX_POINTS_PER_REQUEST:
        raise ValidationError(f"At most {MAX_POINTS_PER_REQUEST:,} points per request.")
    with transaction.atomic():
        stored = metrics_store.record_points(job.pk, metrics_store.rows_from_dicts(points))
        TrainingJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now())
    return stored


@transaction.atomic
def metrics_rewind(*, job: TrainingJob, to_step: int) -> int:
    """Forget the points ``job`` logged after ``to_step`` (system write by the runner, when an
    attempt starts from the checkpoint at that step, or from scratch with ``to_step=-1``): the
    attempt logs those steps again, and each step keeps one point, the latest attempt's.
    Returns how many points were deleted."""
    from training import metrics_store

    deleted = metrics_store.discard_after(job.pk, to_step)
    if deleted:
        record_event(
            actor=None,
            team=job.project.team,
            project=job.project,
            verb="training_job.metrics_rewound",
            target=job,
            changes={"after_step": to_step, "points": deleted},
        )
    return deleted


@transaction.atomic
def external_run_finish(
    *,
    actor,
    job: TrainingJob,
    status: str = JobStatus.SUCCEEDED,
    final_metrics: dict | None = None,
    error: str = "",
) -> TrainingJob:
    require(actor, job.project.team, Action.RUN_JOBS)
    if not job.external:
        raise ValidationError("Only external runs are finished by API; cancel a job instead.")
    if status not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED):
        raise _error("status", "Finish as succeeded, failed or cancelled.")
    final_metrics = dict(final_metrics or {})
    for key, value in final_metrics.items():
        # Stored as JSON, which holds no NaN or infinity: every reader of the run would fail.
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise _error("final_metrics", f"final_metrics.{key}: must be a finite number.")
    updated = TrainingJob.objects.filter(pk=job.pk, status=JobStatus.RUNNING).update(
        status=status,
        finished_at=timezone.now(),
        final_metrics=final_metrics,
        error=error,
        progress=1.0 if status == JobStatus.SUCCEEDED else job.progress,
    )
    if not updated:
        raise ValidationError(f"The run already {job.status}.")
    job.refresh_from_db()
    record_event(
        actor=actor,
        team=job.project.team,
        project=job.project,
        verb="training_job.external_finished",
        target=job,
        changes={"status": status},
    )
    return job


# --- sweeps -----------------------------------------------------------------------------------

MAX_TRIALS = 64


def _trial_params(search_space: dict, *, method: str, max_trials: int, seed: int) -> list[dict]:
    if not isinstance(search_space, dict) or not search_space:
        raise _error("search_space", "Give hyperparameter -> values to search.")
    if method == "grid":
        for name, values in search_space.items():
            if not isinstance(values, list) or not values:
                raise _error(
                    "search_space",
                    f"'{name}': a grid needs a list of values; a range needs random search.",
                )
        names = list(search_space)
        combos = list(itertools.product(*(search_space[n] for n in names)))
        if len(combos) > max_trials:
            raise _error(
                "search_space",
                f"The grid has {len(combos)} combinations; max_trials is {max_trials}.",
            )
        return [dict(zip(names, combo, strict=True)) for combo in combos]
    rng = random.Random(seed)
    trials = []
    for _ in range(max_trials):
        trial = {}
        for name, space in search_space.items():
            if isinstance(space, list) and space:
                trial[name] = rng.choice(space)
            elif isinstance(space, dict) and {"min", "max"} <= set(space):
                low, high = float(space["min"]), float(space["max"])
                if low >= high:
                    raise _error("search_space", f"'{name}': min must be below max.")
                if space.get("log"):
                    import math

                    trial[name] = math.exp(rng.uniform(math.log(low), math.log(high)))
                else:
                    trial[name] = rng.uniform(low, high)
                if space.get("integer"):
                    trial[name] = round(trial[name])
            else:
                raise _error("search_space", f"'{name}': give a list or {{min, max, log}}.")
        trials.append(trial)
    return trials


@requires_broker
def sweep_launch(
    *,
    actor,
    project: Project,
    name: str,
    base: dict,
    search_space: dict,
    method: str = "grid",
    max_trials: int = 8,
    metric: str = "eval_loss",
    direction: str = "minimize",
    seed: int = 0,
) -> Sweep:
    """Create a sweep and one training job per trial (``base`` holds the launch arguments).
    Every trial is validated first; the sweep and its jobs are then created together."""
    require(actor, project.team, Action.RUN_JOBS)
    if method not in ("grid", "random"):
        raise _error("method", "Choose 'grid' or 'random'.")
    if direction not in ("minimize", "maximize"):
        raise _error("direction", "Choose 'minimize' or 'maximize'.")
    if not 1 <= max_trials <= MAX_TRIALS:
        raise _error("max_trials", f"Between 1 and {MAX_TRIALS}.")
    if metric.startswith("eval_") and not base.get("eval_split"):
        # Without an eval split no trial reports it, and the sweep could never pick a best.
        raise _error(
            "metric", f"{metric} is measured on an eval split: name one, or rank by train_loss."
        )
    if base.get("kind") in TrainingKind.values:
        from training.runtime.config import final_metric_names

        allowed = final_metric_names(base["kind"], has_eval=bool(base.get("eval_split")))
        if metric not in allowed:
            raise _error(
                "metric",
                f"A {TrainingKind(base['kind']).label} trial does not report {metric}; rank by "
                f"one of {', '.join(allowed)}.",
            )
    trials = _trial_params(search_space, method=method, max_trials=max_trials, seed=seed)
    base = dict(base)
    base_hp = dict(base.pop("hyperparameters", None) or {})
    prepared = [
        _prepare(project=project, hyperparameters={**base_hp, **trial}, **_launch_defaults(base))
        for trial in trials
    ]
    with transaction.atomic():
        sweep = Sweep(
            project=project,
            name=(name or "").strip() or "sweep",
            method=method,
            search_space=search_space,
            max_trials=len(trials),
            metric=metric,
            direction=direction,
            seed=seed,
            created_by=actor,
        )
        sweep.full_clean()
        sweep.save()
        for index, fields in enumerate(prepared, start=1):
            _create_job(
                actor=actor,
                project=project,
                name=f"{sweep.name} #{index}",
                sweep=sweep,
                fields=fields,
            )
        record_event(
            actor=actor,
            team=project.team,
            project=project,
            verb="sweep.launched",
            target=sweep,
            changes={"trials": len(trials)},
        )
    return sweep


def _launch_defaults(base: dict) -> dict[str, Any]:
    """The launch arguments of ``base`` with ``training_job_launch``'s defaults filled in."""
    defaults = {
        "kind": None,
        "train_version": None,
        "method": TrainingMethod.FULL,
        "base_source": BaseSource.RANDOM,
        "model_spec": None,
        "base_model_version": None,
        "base_model": None,
        "base_path": "",
        "hub_model_id": "",
        "tokenizer": None,
        "train_split": "",
        "eval_split": "",
    }
    unknown = sorted(set(base) - set(defaults))
    if unknown:
        raise _error("base", f"Unknown launch argument(s): {', '.join(unknown)}.")
    return {**defaults, **base}


# --- checkpoints and the registry (system writes made by the training runner) -----------------


def _delete_stored(prefix: str, files: list[str]) -> None:
    for name in files:
        storage.delete_quietly(f"{prefix}/{name}")


def checkpoint_register(*, job: TrainingJob, local_dir: Path, step: int) -> Checkpoint:
    """Store a checkpoint directory, then record it (system write by the training runner). The
    upload runs before the transaction opens; a checkpoint of the same step saved by an
    earlier attempt is replaced, and its files deleted once the new row is committed."""
    prefix = storage.unique_prefix("checkpoints", job.pk, f"step-{step}")
    files = storage.store_directory(local_dir, prefix=prefix)
    size = sum(p.stat().st_size for p in Path(local_dir).rglob("*") if p.is_file())
    try:
        with transaction.atomic():
            checkpoint = Checkpoint.objects.select_for_update().filter(job=job, step=step).first()
            replaced = (checkpoint.files_prefix, checkpoint.files) if checkpoint else None
            checkpoint = checkpoint or Checkpoint(job=job, step=step)
            checkpoint.files_prefix, checkpoint.files, checkpoint.size_bytes = prefix, files, size
            checkpoint.full_clean(validate_constraints=False)
            checkpoint.save()
            if replaced is not None:
                transaction.on_commit(lambda: _delete_stored(*replaced))
    except Exception:
        _delete_stored(prefix, files)  # nothing refers to them
        raise
    return checkpoint


def registered_model_for(job: TrainingJob) -> RegisteredModel:
    """The registered model a job's version goes to (created on first use)."""
    name = (
        job.hyperparameters.get("register_as")
        or (job.sweep.name if job.sweep_id else "")
        or job.name.removesuffix(" (resumed)")
    )[:120]
    model = RegisteredModel.objects.filter(project=job.project, name=name).first()
    if model is not None:
        return model
    model = RegisteredModel(project=job.project, name=name)
    model.full_clean(validate_constraints=False)
    try:
        with transaction.atomic():
            model.save()
    except IntegrityError:  # another job of the project registered it a moment ago
        model = RegisteredModel.objects.get(project=job.project, name=name)
    return model


def _final_checkpoint(
    *, job: TrainingJob, step: int, prefix: str, files: list[str], size: int
) -> Checkpoint:
    """Record the stored final model as the job's checkpoint at its last step (inside the
    caller's transaction): a run with ``save_steps=0`` saves "at the end only", and that end
    is the final model. A checkpoint the Trainer saved at the same step gives way to it (the
    same weights, complete with the tokenizer); its files are deleted once this commits."""
    checkpoint = Checkpoint.objects.select_for_update().filter(job=job, step=step).first()
    replaced = (checkpoint.files_prefix, checkpoint.files) if checkpoint else None
    checkpoint = checkpoint or Checkpoint(job=job, step=step)
    checkpoint.files_prefix, checkpoint.files, checkpoint.size_bytes = prefix, files, size
    checkpoint.full_clean(validate_constraints=False)
    checkpoint.save()
    in_use = replaced is not None and ModelVersion.objects.filter(files_prefix=replaced[0]).exists()
    if replaced is not None and replaced[0] != prefix and not in_use:
        transaction.on_commit(lambda: _delete_stored(*replaced))
    return checkpoint


def _stage_change(*, version: ModelVersion, from_stage: str, to_stage: str, actor, reason: str):
    change = StageChange(
        version=version,
        from_stage=from_stage,
        to_stage=to_stage,
        reason=reason,
        changed_by=actor,
    )
    change.full_clean()
    change.save()
    return change


def _create_version(
    *, job: TrainingJob, prefix: str, files: list[str], size: int, metrics: dict, parameters: int
) -> ModelVersion:
    """Number and create the version of ``job``'s stored final model, with its lineage (data,
    tokenizer, base) and warnings, and its first stage change (inside the caller's
    transaction)."""
    registered = registered_model_for(job)
    registered = RegisteredModel.objects.select_for_update().get(pk=registered.pk)
    number = (
        registered.versions.order_by("-number").values_list("number", flat=True).first() or 0
    ) + 1
    config = _stored_config(prefix, files)
    version = ModelVersion(
        registered_model=registered,
        number=number,
        task_kind=job.kind,
        architecture=(config.get("architectures") or [""])[0][:80],
        files_prefix=prefix,
        files=files,
        config=config,
        hyperparameters=job.hyperparameters,
        metrics=metrics,
        warnings=list(job.warnings or []),
        parameters=parameters,
        size_bytes=size,
        dataset_version=job.train_version,
        tokenizer=job.tokenizer,
        parent=job.base_model_version,
        base_model=job.base_model,
        created_by=job.created_by,
    )
    version.full_clean()
    version.save()
    _stage_change(
        version=version,
        from_stage="",
        to_stage=version.stage,
        actor=job.created_by,
        reason=f"Registered by {job.name}"
        + (f", the best trial of sweep {job.sweep.name}" if job.sweep_id else "")
        + ".",
    )
    TrainingJob.objects.filter(pk=job.pk).update(model_version=version)
    record_event(
        actor=job.created_by,
        team=job.project.team,
        project=job.project,
        verb="model_version.registered",
        target=version,
        changes={"warnings": len(version.warnings)} if version.warnings else None,
    )
    return version


def _stored_config(prefix: str, files: list[str]) -> dict:
    if "config.json" not in files:
        return {}
    return json.loads(storage.local_copy(f"{prefix}/config.json").read_text())


def model_version_register(
    *,
    job: TrainingJob,
    model_dir: Path,
    metrics: dict,
    parameters: int,
) -> ModelVersion | None:
    """Store the trained model directory as the job's final checkpoint and register it as a
    version (lineage: data -> job -> model, and the pretrained base). A sweep trial registers
    nothing itself: once its sweep's last trial has ended, the best one is registered
    (:func:`sweep_register_best`); the others keep their results and checkpoints.

    The upload (slow: the weights) runs first, with no transaction open and no row locked;
    then one short transaction records the checkpoint and, locking the registered model,
    numbers the version. Returns the version (None for a trial not registered)."""
    prefix = storage.unique_prefix("models", job.project_id, f"job-{job.pk}")
    files = storage.store_directory(model_dir, prefix=prefix)
    size = sum(p.stat().st_size for p in Path(model_dir).rglob("*") if p.is_file())
    # What the runner recorded while the job ran (its last step, warnings such as a diverged
    # loss) is on the row, not on the object it started with.
    job = TrainingJob.objects.select_related("project__team", "sweep").get(pk=job.pk)
    try:
        with transaction.atomic():
            _final_checkpoint(job=job, step=job.global_step, prefix=prefix, files=files, size=size)
            version = None
            if not job.sweep_id:
                version = _create_version(
                    job=job,
                    prefix=prefix,
                    files=files,
                    size=size,
                    metrics=metrics,
                    parameters=parameters,
                )
    except Exception:
        _delete_stored(prefix, files)  # nothing refers to them
        raise
    if job.sweep_id:
        return sweep_register_best(sweep=job.sweep, ended=job)
    return version


def _trial_done(trial: TrainingJob, ended: TrainingJob | None) -> bool:
    """A trial that will not change the ranking any more: ended, or the one ending now, or one
    whose final model is stored (it is registering at this moment, in another worker)."""
    if trial.status not in (JobStatus.QUEUED, JobStatus.RUNNING):
        return True
    if ended is not None and trial.pk == ended.pk:
        return True
    return bool(trial.final_metrics) and trial.checkpoints.filter(step=trial.global_step).exists()


def sweep_register_best(*, sweep: Sweep, ended: TrainingJob | None = None) -> ModelVersion | None:
    """Once every trial of ``sweep`` has ended (``ended`` is the one ending now), register the
    best trial by the sweep's metric and direction as a model version, from its stored final
    checkpoint (no upload). Trials with warnings (a diverged loss) are passed over while a
    trial without any qualifies. Idempotent (system write): a sweep registers one version.
    Returns the version, or None while trials still run or when no trial qualifies."""
    from training.selectors import sweep_ranking

    with transaction.atomic():
        sweep = Sweep.objects.select_for_update().get(pk=sweep.pk)
        trials = list(sweep.trials.all())
        if any(t.model_version_id for t in trials):
            return None  # registered already (by a trial that ended a moment ago)
        if not all(_trial_done(t, ended) for t in trials):
            return None
        ranked = [
            t
            for t in sweep_ranking(sweep)
            if t.final_metrics.get(sweep.metric) is not None
            and (t.status == JobStatus.SUCCEEDED or (ended is not None and t.pk == ended.pk))
        ]
        ranked.sort(key=lambda t: bool(t.warnings))  # stable: the best clean trial first
        for best in ranked:
            final = best.checkpoints.filter(step=best.global_step).first()
            if final is None:
                continue
            best = TrainingJob.objects.select_related(
                "project__team", "sweep", "train_version", "tokenizer", "base_model"
            ).get(pk=best.pk)
            version = _create_version(
                job=best,
                prefix=final.files_prefix,
                files=final.files,
                size=final.size_bytes,
                metrics=best.final_metrics,
                # The figure the runner counted (on the job), as for a version of a lone job.
                parameters=(best.estimate or {}).get("parameters") or _final_parameters(best),
            )
            record_event(
                actor=sweep.created_by,
                team=sweep.project.team,
                project=sweep.project,
                verb="sweep.best_registered",
                target=sweep,
                changes={"trial": best.pk, "metric": sweep.metric},
            )
            return version
    return None


def _final_parameters(job: TrainingJob) -> int:
    """The parameter count of a trial's final model, from its safetensors headers."""
    from training.runtime.model_files import count_parameters

    final = job.checkpoints.filter(step=job.global_step).first()
    if final is None:
        return 0
    directory = storage.local_directory(final.files_prefix, final.files)
    try:
        return count_parameters(directory)
    except Exception:  # an unreadable header: the version is still worth registering
        return 0


@transaction.atomic
def model_version_set_stage(
    *, actor, version: ModelVersion, stage: str, reason: str = ""
) -> ModelVersion:
    """Move a version to a stage, recording the change (from, to, by whom, why) in its stage
    history; promoting to production archives the previous one (recorded too)."""
    project = version.project
    require(actor, project.team, Action.EDIT_PROJECT)
    if stage not in Stage.values:
        raise _error("stage", f"Choose one of {', '.join(Stage.values)}.")
    reason = (reason or "").strip()
    version = ModelVersion.objects.select_for_update().get(pk=version.pk)
    previous = version.stage
    if stage == Stage.PRODUCTION:
        displaced = ModelVersion.objects.filter(
            registered_model=version.registered_model, stage=Stage.PRODUCTION
        ).exclude(pk=version.pk)
        for other in displaced.select_for_update():
            _stage_change(
                version=other,
                from_stage=Stage.PRODUCTION,
                to_stage=Stage.ARCHIVED,
                actor=actor,
                reason=f"{version} was promoted to production.",
            )
        displaced.update(stage=Stage.ARCHIVED)
    changes = update_instance(version, {"stage": stage})
    if changes:
        _stage_change(
            version=version, from_stage=previous, to_stage=stage, actor=actor, reason=reason
        )
    record_event(actor=actor, verb="model_version.staged", target=version, changes=changes)
    return version


def estimate_for(
    *,
    model_spec: dict,
    hyperparameters: dict,
    method: str,
    kind: str | None = None,
    tokenizer: Tokenizer | None = None,
    train_version: DatasetVersion | None = None,
) -> dict:
    """Parameters, memory and FLOPs per token of a spec (no launch; for forms). With the job's
    ``kind`` its head is counted, with the chosen ``tokenizer`` its vocabulary sizes the
    embeddings and with the job's ``hyperparameters`` its architecture settings (tied
    embeddings) change the count: the figure the launch stores on the job.

    The vocabulary: the tokenizer's; else the spec's ``vocab_size``; else that of the newest
    tokenizer trained on ``train_version``; else an assumed 8,000. The answer says which
    (``vocab_size``, ``vocab_source``)."""
    from training.runtime.presets import DEFAULT_VOCAB_SIZE

    if not isinstance(model_spec, dict) or "config" in model_spec:
        checked = _validate_hyperparameters(hyperparameters, method=method, family="")
        return _estimate(model_spec, hyperparameters=checked, method=method, kind=kind)
    checked = _validate_hyperparameters(
        hyperparameters, method=method, family=model_spec.get("family")
    )
    if tokenizer is None and not model_spec.get("vocab_size") and train_version is not None:
        tokenizer = train_version.tokenizers.order_by("-created_at", "-id").first()
        source = "dataset"
    else:
        source = "tokenizer"
    if tokenizer is not None:
        model_spec = {**model_spec, "vocab_size": tokenizer.vocab_size}
    else:
        source = "spec" if model_spec.get("vocab_size") else "assumed"
    estimate = _estimate(model_spec, hyperparameters=checked, method=method, kind=kind)
    vocab = model_spec.get("vocab_size") or DEFAULT_VOCAB_SIZE
    return {**estimate, "vocab_size": vocab, "vocab_source": source}


# Tags and a description on a model version (the registry page and PATCH in the API).
MAX_VERSION_TAGS = 20
MAX_TAG_LENGTH = 40
MAX_VERSION_DESCRIPTION = 10_000


def _clean_tags(tags: Any) -> list[str]:
    """Tags as stored: stripped, each a short line of text without commas (the page edits them
    as a comma-separated list), at most ``MAX_VERSION_TAGS``, no two the same (any case).
    Every problem is reported at once."""
    if not isinstance(tags, list | tuple):
        raise _error("tags", "Give the tags as a list of short strings.")
    problems, cleaned, seen = [], [], set()
    for index, tag in enumerate(tags, start=1):
        if not isinstance(tag, str):
            problems.append(f"Tag {index} is not text.")
            continue
        tag = tag.strip()
        if not tag:
            problems.append(f"Tag {index} is empty.")
        elif len(tag) > MAX_TAG_LENGTH:
            problems.append(f"'{tag[:20]}...' is longer than {MAX_TAG_LENGTH} characters.")
        elif "," in tag or any(not ch.isprintable() for ch in tag):
            problems.append(f"'{tag}' may not hold commas or control characters.")
        elif tag.lower() in seen:
            problems.append(f"'{tag}' is given twice.")
        else:
            seen.add(tag.lower())
            cleaned.append(tag)
    if len(tags) > MAX_VERSION_TAGS:
        problems.append(f"At most {MAX_VERSION_TAGS} tags ({len(tags)} given).")
    if problems:
        raise ValidationError({"tags": problems})
    return cleaned


@transaction.atomic
def model_version_update(
    *, actor, version: ModelVersion, description: str | None = None, tags: list | None = None
) -> ModelVersion:
    """Change a version's description and/or tags (None leaves one as it is)."""
    require(actor, version.project.team, Action.EDIT_PROJECT)
    changes: dict[str, Any] = {}
    if description is not None:
        if not isinstance(description, str):
            raise _error("description", "The description is text.")
        if len(description) > MAX_VERSION_DESCRIPTION:
            raise _error("description", f"At most {MAX_VERSION_DESCRIPTION:,} characters, please.")
        changes["description"] = description.strip()
    if tags is not None:
        changes["tags"] = _clean_tags(tags)
    version = ModelVersion.objects.select_for_update().get(pk=version.pk)
    diff = update_instance(version, changes, editable={"description", "tags"})
    if diff:
        record_event(actor=actor, verb="model_version.updated", target=version, changes=diff)
    return version
