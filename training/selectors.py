"""Reads of the training stage, scoped to the user's teams."""

from __future__ import annotations

from django.db.models import Count, QuerySet

from projects.selectors import User, get_visible, visible_to
from training.models import BaseSource, ModelVersion, RegisteredModel, Sweep, TrainingJob


def training_jobs_for_user(user: User) -> QuerySet[TrainingJob]:
    return visible_to(
        TrainingJob.objects.select_related(
            "project__team",
            "train_version__dataset",
            "tokenizer",
            "base_model_version",
            "model_version",
            "sweep",
            "created_by",
        ),
        user,
    )


def get_training_job_for_user(user: User, pk) -> TrainingJob:
    return get_visible(training_jobs_for_user(user), user, pk)


def sweeps_for_user(user: User) -> QuerySet[Sweep]:
    return visible_to(
        Sweep.objects.select_related("project__team")
        .annotate(trial_count=Count("trials"))
        .order_by("-created_at", "-id"),
        user,
    )


def registered_models_for_user(user: User) -> QuerySet[RegisteredModel]:
    return visible_to(
        RegisteredModel.objects.select_related("project__team")
        .annotate(version_count=Count("versions"))
        .order_by("name", "id"),
        user,
    )


def model_versions_for_user(user: User) -> QuerySet[ModelVersion]:
    return visible_to(
        ModelVersion.objects.select_related(
            "registered_model__project__team",
            "dataset_version__dataset",
            "tokenizer",
            "parent__registered_model",
            "base_model",
            "created_by",
            "produced_by",
        ),
        user,
        team_path="registered_model__project__team",
    )


def get_model_version_for_user(user: User, pk) -> ModelVersion:
    return get_visible(
        model_versions_for_user(user), user, pk, team_path="registered_model__project__team"
    )


def sweep_ranking(sweep: Sweep) -> list[TrainingJob]:
    """The sweep's trials, best first by its metric; trials without the metric last."""
    trials = list(
        sweep.trials.select_related("model_version__registered_model")
        .prefetch_related("checkpoints")
        .order_by("id")
    )
    reverse = sweep.direction == "maximize"

    def key(job: TrainingJob):
        value = job.final_metrics.get(sweep.metric)
        if value is None:
            return (1, 0.0)
        return (0, -value if reverse else value)

    return sorted(trials, key=key)


def lineage_of(version: ModelVersion) -> dict:
    """Where a model version came from, as JSON: data versions (oldest first), the job, the
    tokenizer and the base model it was fine-tuned from."""
    from datasets_app.selectors import lineage as data_lineage

    job = getattr(version, "produced_by", None)
    data = version.dataset_version
    return {
        "model_version": {"id": version.pk, "name": str(version), "stage": version.stage},
        "job": None
        if job is None
        else {
            "id": job.pk,
            "name": job.name,
            "kind": job.kind,
            "method": job.method,
            "hyperparameters": job.hyperparameters,
            "final_metrics": job.final_metrics,
            "train_split": job.train_split,
            "eval_split": job.eval_split,
        },
        "data": []
        if data is None
        else [
            {
                "id": v.pk,
                "name": str(v),
                "kind": v.kind,
                "rows": v.row_count,
                "sha256": v.content_sha256,
            }
            for v in data_lineage(data)
        ],
        "tokenizer": None
        if version.tokenizer is None
        else {
            "id": version.tokenizer.pk,
            "name": version.tokenizer.name,
            "vocab_size": version.tokenizer.vocab_size,
        },
        "base_model": pretrained_origin(version),
    }


def pretrained_origin(version: ModelVersion) -> dict:
    """What ``version`` started from, never None: a registered base model (with its license),
    a registry version, a local directory, a hub id, or random weights (``kind`` says which;
    ``id`` and ``name`` are there for every kind)."""
    job = getattr(version, "produced_by", None)
    source = job.base_source if job is not None else ""
    base = version.base_model or (job.base_model if job is not None else None)
    if base is not None:
        return {
            "kind": "base_model",
            "id": base.pk,
            "name": base.name,
            "license": base.license,
            "source": base.source,
            "package": base.package,
            "architecture": base.architecture,
            "parameters": base.parameters,
        }
    if version.parent is not None:
        return {"kind": "model_version", "id": version.parent.pk, "name": str(version.parent)}
    if source == BaseSource.LOCAL_DIR:
        return {"kind": "local_dir", "id": None, "name": job.base_path, "path": job.base_path}
    if source == BaseSource.HUB:
        return {"kind": "hub", "id": None, "name": job.hub_model_id, "hub_id": job.hub_model_id}
    if source == BaseSource.RANDOM and job is not None:
        spec = job.model_spec or {}
        label = " ".join(str(spec[k]) for k in ("family", "size") if spec.get(k))
        return {
            "kind": "random",
            "id": None,
            "name": f"random weights ({label})" if label else "random weights",
            "model_spec": spec,
        }
    return {"kind": "unknown", "id": None, "name": "not recorded (no job made this version)"}
