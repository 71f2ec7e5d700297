"""Evaluation runs with their per-example outputs, and bias reports.

An evaluation run measures one model version on one split of a dataset version with a set of
metrics; its results feed the project's goals. A bias report probes one model version with a
probe set (CrowS-Pairs, BOLD, WinoBias, or a slice of an evaluation run by a column).
"""

from __future__ import annotations

from typing import ClassVar

from django.db import models

from llmhub.models import Job


class EvaluationRun(Job):
    queue: ClassVar[str] = "gpu"
    kind_label: ClassVar[str] = "evaluation"

    name = models.CharField(max_length=120, blank=True, default="")
    model_version = models.ForeignKey(
        "training.ModelVersion", on_delete=models.RESTRICT, related_name="evaluations"
    )
    dataset_version = models.ForeignKey(
        "datasets_app.DatasetVersion", on_delete=models.RESTRICT, related_name="evaluations"
    )
    split = models.CharField(max_length=40, blank=True, default="")
    task_type = models.CharField(max_length=20)
    metrics = models.JSONField(default=list)
    settings = models.JSONField(
        default=dict,
        blank=True,
        help_text="Generation and batching: max_new_tokens, temperature, top_p, num_beams, ...",
    )
    # Results
    results = models.JSONField(
        default=dict, blank=True, help_text="metric -> {value, ci_low, ci_high, n}"
    )
    model_kind = models.CharField(max_length=30, blank=True, default="")
    device = models.CharField(max_length=40, blank=True, default="")
    n_examples = models.PositiveIntegerField(default=0)
    warnings = models.JSONField(default=list, blank=True)
    scoring = models.JSONField(
        default=dict,
        blank=True,
        help_text="A perplexity's scoring: tokens and characters scored, windows, stride.",
    )

    class Meta(Job.Meta):
        indexes = [models.Index(fields=["project", "status", "split"])]

    def __str__(self) -> str:
        return self.name or f"evaluation #{self.pk}"

    def value(self, metric: str) -> float | None:
        return (self.results.get(metric) or {}).get("value")


class EvaluationExample(models.Model):
    """One evaluated example: what went in, what was expected, what came out, its scores."""

    run = models.ForeignKey(EvaluationRun, on_delete=models.CASCADE, related_name="examples")
    index = models.PositiveIntegerField(help_text="Row number in the evaluated split.")
    input = models.TextField()
    reference = models.TextField(null=True, blank=True)
    prediction = models.TextField(null=True, blank=True)
    scores = models.JSONField(default=dict)
    # The run's first per-example score, for sorting (worst cases first) in the database.
    score = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["run_id", "index"]
        indexes = [
            models.Index(fields=["run", "index"], name="example_run_index"),
            models.Index(fields=["run", "score"], name="example_run_score"),
        ]

    def __str__(self) -> str:
        return f"example {self.index} of run {self.run_id}"


class BiasKind(models.TextChoices):
    CROWS_PAIRS = "crows_pairs", "Stereotype preference (CrowS-Pairs)"
    BOLD = "bold", "Generation sentiment gap (BOLD)"
    WINOBIAS = "winobias", "Pro- vs anti-stereotype likelihood (WinoBias)"
    SLICE = "slice", "Metric by slice of an evaluation"


class BiasReport(Job):
    queue: ClassVar[str] = "gpu"
    kind_label: ClassVar[str] = "bias report"

    kind = models.CharField(max_length=16, choices=BiasKind.choices)
    model_version = models.ForeignKey(
        "training.ModelVersion", on_delete=models.RESTRICT, related_name="bias_reports"
    )
    probe_version = models.ForeignKey(
        "datasets_app.DatasetVersion",
        null=True,
        blank=True,
        on_delete=models.RESTRICT,
        related_name="bias_reports",
        help_text="A probe set the team uploaded; built-in if empty.",
    )
    evaluation = models.ForeignKey(
        EvaluationRun,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="slice_reports",
        help_text="For slice reports: the run to slice.",
    )
    params = models.JSONField(default=dict, blank=True)
    report = models.JSONField(default=dict, blank=True)

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.pk}"


# The feedback stage's models live in their sub-package; importing them here registers them
# with the evaluation app (Django looks for an app's models in its ``models`` module).
from evaluation.feedback.models import (  # noqa: E402, F401
    AIRater,
    AIRatingJob,
    Assignment,
    Campaign,
    CampaignRater,
    FeedbackExport,
    GenerationJob,
    Item,
    Judgment,
)
