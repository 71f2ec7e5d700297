"""Datasets, their immutable versions and splits, data cards, cleaning recipes, tokenizers, and
the data jobs that produce them.

A version is a Parquet table stored once under its content hash: versions that hold the same
rows (a split or a column-role remap of the same table) share one file. Nothing edits a version
after it is created; every change makes a new version whose ``parent`` and ``recipe`` say how.
"""

from __future__ import annotations

from typing import ClassVar

from django.conf import settings
from django.db import models
from django.utils import timezone

from llmhub.models import Job


class Dataset(models.Model):
    project = models.ForeignKey(
        "projects.Project", on_delete=models.CASCADE, related_name="datasets"
    )
    name = models.CharField(max_length=120)
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
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "name"], name="dataset_name_unique_in_project"
            )
        ]

    def __str__(self) -> str:
        return self.name


class DataCard(models.Model):
    """The ethics and provenance record of a dataset (one per dataset)."""

    REQUIRED_FIELDS: ClassVar[tuple[str, ...]] = (
        "source",
        "license",
        "collection_method",
        "consent",
        "personal_data",
    )

    dataset = models.OneToOneField(Dataset, on_delete=models.CASCADE, related_name="card")
    source = models.TextField(blank=True, default="", help_text="Where the data comes from.")
    license = models.CharField(
        max_length=200, blank=True, default="", help_text="e.g. CC BY 4.0, Apache-2.0, internal."
    )
    collection_method = models.TextField(
        blank=True, default="", help_text="How it was collected or sampled."
    )
    consent = models.TextField(
        blank=True, default="", help_text="Did the people in it agree to this use? How?"
    )
    personal_data = models.TextField(
        blank=True,
        default="",
        help_text="What personal data it may hold and what was done about it (e.g. PII redaction).",
    )
    intended_use = models.TextField(blank=True, default="")
    limitations = models.TextField(
        blank=True, default="", help_text="Known gaps, biases and ways it should not be used."
    )
    updated_at = models.DateTimeField(default=timezone.now)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )

    def __str__(self) -> str:
        return f"Data card of {self.dataset}"

    @property
    def missing_fields(self) -> list[str]:
        return [name for name in self.REQUIRED_FIELDS if not getattr(self, name).strip()]

    @property
    def is_complete(self) -> bool:
        return not self.missing_fields


class DatasetVersion(models.Model):
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.RESTRICT, related_name="children"
    )
    file = models.CharField(max_length=255, help_text="Storage name of the Parquet table.")
    content_sha256 = models.CharField(max_length=64, db_index=True)
    row_count = models.PositiveBigIntegerField()
    size_bytes = models.PositiveBigIntegerField()
    schema = models.JSONField(default=list, help_text="[{name, type}] of the table's columns.")
    column_roles = models.JSONField(
        default=dict, help_text="role -> column, e.g. {'text': 'body'}."
    )
    recipe = models.JSONField(
        default=dict, help_text="What produced this version: {'kind': 'upload'|'clean'|..., ...}."
    )
    note = models.CharField(max_length=255, blank=True, default="")
    warnings = models.JSONField(
        default=list,
        blank=True,
        help_text="Sentences about the data worth a user's attention (NUL removed, NaN, very "
        "long lines, no text column...), from the job that made the version.",
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
        ordering = ["dataset_id", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["dataset", "number"], name="version_number_unique")
        ]

    def __str__(self) -> str:
        return f"{self.dataset.name} v{self.number}"

    @property
    def kind(self) -> str:
        return self.recipe.get("kind", "upload")

    @property
    def columns(self) -> list[str]:
        return [column["name"] for column in self.schema]

    def missing_split(self, name: str) -> str | None:
        """Why ``name`` is not a split of this version (a sentence naming those it has), or
        None when it is one or no split is asked for: the one check of the launch forms and
        the training and evaluation services."""
        names = [s.name for s in self.splits.all()]
        if not name or name in names:
            return None
        have = f"its splits are {', '.join(names)}" if names else "it has no splits"
        return f"{self} has no '{name}' split; {have}."


class DatasetSplit(models.Model):
    """One named part (train, validation, test...) of a version."""

    version = models.ForeignKey(DatasetVersion, on_delete=models.CASCADE, related_name="splits")
    name = models.CharField(max_length=40)
    file = models.CharField(max_length=255)
    content_sha256 = models.CharField(max_length=64)
    row_count = models.PositiveBigIntegerField()

    class Meta:
        ordering = ["version_id", "id"]
        constraints = [
            models.UniqueConstraint(fields=["version", "name"], name="split_name_unique_in_version")
        ]

    def __str__(self) -> str:
        return f"{self.version} [{self.name}]"


class CleaningRecipe(models.Model):
    """An ordered list of cleaning steps with parameters, reusable across a project's datasets."""

    project = models.ForeignKey(
        "projects.Project", on_delete=models.CASCADE, related_name="cleaning_recipes"
    )
    name = models.CharField(max_length=120)
    description = models.TextField(blank=True, default="")
    steps = models.JSONField(default=list)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "name"], name="recipe_name_unique_in_project"
            )
        ]

    def __str__(self) -> str:
        return self.name


class Tokenizer(models.Model):
    """A tokenizer trained on a dataset version, stored as a transformers tokenizer directory."""

    project = models.ForeignKey(
        "projects.Project", on_delete=models.CASCADE, related_name="tokenizers"
    )
    name = models.CharField(max_length=120)
    algorithm = models.CharField(max_length=20)
    vocab_size = models.PositiveIntegerField()
    special_tokens = models.JSONField(default=list)
    source_version = models.ForeignKey(
        DatasetVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="tokenizers"
    )
    files_prefix = models.CharField(
        max_length=255, help_text="Storage prefix of the tokenizer directory."
    )
    files = models.JSONField(default=list)
    stats = models.JSONField(default=dict, help_text="Token statistics on the source version.")
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
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="tokenizer_name_unique")
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.algorithm}, {self.vocab_size})"


class DataJobKind(models.TextChoices):
    INGEST = "ingest", "Ingest upload"
    PROFILE = "profile", "Profile"
    CLEAN = "clean", "Clean"
    SPLIT = "split", "Split"
    TOKENIZER = "tokenizer", "Train tokenizer"


class DataJob(Job):
    """One data operation on the ``cpu`` queue. Inputs are in ``params``; outputs are a new
    version, a tokenizer, and/or a JSON ``result`` (profile, cleaning report, token stats)."""

    queue = "cpu"
    kind_label = "data job"

    kind = models.CharField(max_length=16, choices=DataJobKind.choices)
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="jobs")
    source_version = models.ForeignKey(
        DatasetVersion, null=True, blank=True, on_delete=models.CASCADE, related_name="jobs"
    )
    recipe = models.ForeignKey(
        CleaningRecipe, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs"
    )
    params = models.JSONField(default=dict)
    result = models.JSONField(default=dict, blank=True)
    result_version = models.ForeignKey(
        DatasetVersion,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="produced_by",
    )
    result_tokenizer = models.ForeignKey(
        Tokenizer, null=True, blank=True, on_delete=models.SET_NULL, related_name="produced_by"
    )

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.pk} ({self.status})"
