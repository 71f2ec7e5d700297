from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from datasets_app.selectors import tokenizers_for_user, versions_for_user
from llmhub.api.fields import ScopedPrimaryKeyRelatedField
from llmhub.api.serializers import JobSerializer, StrictSerializer
from projects.selectors import projects_for_user
from training import selectors
from training.base_models import base_models_for_user
from training.models import (
    BaseSource,
    Checkpoint,
    ModelVersion,
    RegisteredModel,
    Stage,
    Sweep,
    TrainingJob,
    TrainingKind,
    TrainingMethod,
)


class TrainingJobSerializer(JobSerializer):
    class Meta:
        model = TrainingJob
        fields = (
            *JobSerializer.JOB_FIELDS,
            "name",
            "kind",
            "method",
            "base_source",
            "base_model_version",
            "base_model",
            "base_path",
            "hub_model_id",
            "model_spec",
            "tokenizer",
            "train_version",
            "train_split",
            "eval_split",
            "column_roles",
            "hyperparameters",
            "estimate",
            "sweep",
            "resumed_from",
            "external",
            "device",
            "precision_used",
            "global_step",
            "total_steps",
            "final_metrics",
            "warnings",
            "model_version",
            "log",
        )
        read_only_fields = fields


class TrainingLaunchSerializer(StrictSerializer):
    project = ScopedPrimaryKeyRelatedField(selector=projects_for_user)
    name = serializers.CharField(max_length=120, required=False, default="")
    kind = serializers.ChoiceField(choices=TrainingKind.choices)
    method = serializers.ChoiceField(choices=TrainingMethod.choices, default=TrainingMethod.FULL)
    base_source = serializers.ChoiceField(choices=BaseSource.choices, default=BaseSource.RANDOM)
    model_spec = serializers.JSONField(
        required=False,
        allow_null=True,
        help_text='For random weights: {"family": "gpt2", "size": "tiny", ...overrides}.',
    )
    base_model_version = ScopedPrimaryKeyRelatedField(
        selector=selectors.model_versions_for_user, required=False, allow_null=True
    )
    base_model = ScopedPrimaryKeyRelatedField(
        selector=base_models_for_user,
        required=False,
        allow_null=True,
        help_text='A registered base model (base_source "base_model").',
    )
    base_path = serializers.CharField(required=False, allow_blank=True, default="")
    hub_model_id = serializers.CharField(required=False, allow_blank=True, default="")
    tokenizer = ScopedPrimaryKeyRelatedField(
        selector=tokenizers_for_user, required=False, allow_null=True
    )
    train_version = ScopedPrimaryKeyRelatedField(selector=versions_for_user)
    train_split = serializers.CharField(required=False, allow_blank=True, default="")
    eval_split = serializers.CharField(required=False, allow_blank=True, default="")
    hyperparameters = serializers.JSONField(required=False, default=dict)


class EstimateSerializer(StrictSerializer):
    model_spec = serializers.JSONField()
    tokenizer = ScopedPrimaryKeyRelatedField(
        selector=tokenizers_for_user,
        required=False,
        allow_null=True,
        help_text="Its vocabulary sizes the embeddings.",
    )
    train_version = ScopedPrimaryKeyRelatedField(
        selector=versions_for_user,
        required=False,
        allow_null=True,
        help_text="Without a tokenizer: the newest tokenizer trained on it sizes the embeddings.",
    )
    hyperparameters = serializers.JSONField(
        required=False,
        default=dict,
        help_text="The job's hyperparameters; its architecture settings (tie_word_embeddings, "
        "attention_bias, ...) change the count.",
    )
    max_seq_length = serializers.IntegerField(min_value=1, default=128)
    batch_size = serializers.IntegerField(min_value=1, default=8)
    precision = serializers.ChoiceField(choices=["fp32", "bf16", "fp16"], default="fp32")
    method = serializers.ChoiceField(choices=TrainingMethod.choices, default=TrainingMethod.FULL)
    kind = serializers.ChoiceField(choices=TrainingKind.choices, required=False, allow_null=True)


class ExternalRunSerializer(StrictSerializer):
    project = ScopedPrimaryKeyRelatedField(selector=projects_for_user)
    name = serializers.CharField(max_length=120)
    kind = serializers.ChoiceField(choices=TrainingKind.choices, default=TrainingKind.SFT_CAUSAL)
    hyperparameters = serializers.JSONField(required=False, default=dict)
    train_version = ScopedPrimaryKeyRelatedField(
        selector=versions_for_user, required=False, allow_null=True
    )


class MetricPointSerializer(serializers.Serializer):
    step = serializers.IntegerField(min_value=0, max_value=2**31 - 1)
    name = serializers.CharField(max_length=60)
    value = serializers.FloatField()
    epoch = serializers.FloatField(required=False, allow_null=True)


@extend_schema_field(MetricPointSerializer(many=True))
class MetricPointsField(serializers.Field):
    """A non-empty list of points. The metric store (``training.metrics_store``) checks each
    point (and says which one is wrong); checking 100,000 dicts field by field here too cost
    more time than storing them."""

    def to_internal_value(self, data):
        if not isinstance(data, list) or not data:
            raise serializers.ValidationError("Give a non-empty list of points.")
        return data

    def to_representation(self, value):
        return value


class MetricBatchSerializer(StrictSerializer):
    points = MetricPointsField(
        help_text='[{"step": 1, "name": "loss", "value": 2.3}, ...] (up to 100,000).'
    )


class FinishSerializer(StrictSerializer):
    status = serializers.ChoiceField(
        choices=["succeeded", "failed", "cancelled"], default="succeeded"
    )
    final_metrics = serializers.DictField(
        child=serializers.FloatField(), required=False, default=dict
    )
    error = serializers.CharField(required=False, allow_blank=True, default="")


class CheckpointSerializer(serializers.ModelSerializer):
    class Meta:
        model = Checkpoint
        fields = ("id", "job", "step", "size_bytes", "created_at")
        read_only_fields = fields


class SweepSerializer(serializers.ModelSerializer):
    trial_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = Sweep
        fields = (
            "id",
            "project",
            "name",
            "method",
            "search_space",
            "max_trials",
            "metric",
            "direction",
            "seed",
            "trial_count",
            "created_at",
        )
        read_only_fields = fields


class SweepCreateSerializer(StrictSerializer):
    project = ScopedPrimaryKeyRelatedField(selector=projects_for_user)
    name = serializers.CharField(max_length=120)
    method = serializers.ChoiceField(choices=["grid", "random"], default="grid")
    search_space = serializers.JSONField(
        help_text='{"learning_rate": [1e-4, 5e-4]} for a grid; {"learning_rate": '
        '{"min": 1e-5, "max": 1e-3, "log": true}} for random search.'
    )
    max_trials = serializers.IntegerField(min_value=1, max_value=64, default=8)
    metric = serializers.CharField(max_length=60, default="eval_loss")
    direction = serializers.ChoiceField(choices=["minimize", "maximize"], default="minimize")
    seed = serializers.IntegerField(default=0)
    base = TrainingLaunchSerializer(help_text="The launch request every trial starts from.")


class ModelVersionSerializer(serializers.ModelSerializer):
    model_name = serializers.CharField(source="registered_model.name", read_only=True)
    job = serializers.SerializerMethodField()

    class Meta:
        model = ModelVersion
        fields = (
            "id",
            "registered_model",
            "model_name",
            "number",
            "stage",
            "task_kind",
            "architecture",
            "config",
            "hyperparameters",
            "metrics",
            "parameters",
            "size_bytes",
            "dataset_version",
            "tokenizer",
            "parent",
            "job",
            "tags",
            "description",
            "warnings",
            "created_at",
        )
        read_only_fields = fields

    def get_job(self, version) -> int | None:
        job = getattr(version, "produced_by", None)  # reverse one-to-one, None if absent
        return job.pk if job is not None else None


class ModelVersionUpdateSerializer(StrictSerializer):
    """PATCH of a version: what a tag may be is the service's to say (one validator)."""

    description = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    tags = serializers.ListField(
        child=serializers.CharField(allow_blank=True, trim_whitespace=False), required=False
    )


class StageSerializer(StrictSerializer):
    stage = serializers.ChoiceField(choices=Stage.choices)
    reason = serializers.CharField(
        max_length=2000, required=False, allow_blank=True, default="", help_text="Why (kept)."
    )


class RegisteredModelSerializer(serializers.ModelSerializer):
    version_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = RegisteredModel
        fields = ("id", "project", "name", "description", "version_count", "created_at")
        read_only_fields = fields
