from __future__ import annotations

from rest_framework import serializers

from datasets_app.selectors import versions_for_user
from evaluation import selectors
from evaluation.models import BiasKind, BiasReport, EvaluationExample, EvaluationRun
from llmhub.api.fields import ScopedPrimaryKeyRelatedField
from llmhub.api.serializers import JobSerializer, StrictSerializer
from training.selectors import model_versions_for_user


class EvaluationRunSerializer(JobSerializer):
    model = serializers.CharField(source="model_version.__str__", read_only=True)

    class Meta:
        model = EvaluationRun
        fields = (
            *JobSerializer.JOB_FIELDS,
            "name",
            "model_version",
            "model",
            "dataset_version",
            "split",
            "task_type",
            "metrics",
            "settings",
            "results",
            "model_kind",
            "device",
            "n_examples",
            "warnings",
            "scoring",
        )
        read_only_fields = fields


class EvaluationLaunchSerializer(StrictSerializer):
    model_version = ScopedPrimaryKeyRelatedField(selector=model_versions_for_user)
    dataset_version = ScopedPrimaryKeyRelatedField(selector=versions_for_user)
    split = serializers.CharField(required=False, allow_blank=True, default="test")
    metrics = serializers.ListField(child=serializers.CharField(), required=False, allow_null=True)
    settings = serializers.DictField(
        required=False,
        default=dict,
        help_text=(
            "max_new_tokens, temperature (0 = greedy), top_p, num_beams, batch_size, max_examples, "
            "seed"
        ),
    )
    name = serializers.CharField(required=False, allow_blank=True, default="")


class ExampleSerializer(serializers.ModelSerializer):
    class Meta:
        model = EvaluationExample
        fields = ("index", "input", "reference", "prediction", "scores", "score")
        read_only_fields = fields


class BiasReportSerializer(JobSerializer):
    class Meta:
        model = BiasReport
        fields = (
            *JobSerializer.JOB_FIELDS,
            "kind",
            "model_version",
            "probe_version",
            "evaluation",
            "params",
            "report",
        )
        read_only_fields = fields


class BiasLaunchSerializer(StrictSerializer):
    kind = serializers.ChoiceField(choices=BiasKind.choices)
    model_version = ScopedPrimaryKeyRelatedField(
        selector=model_versions_for_user, required=False, allow_null=True
    )
    probe_version = ScopedPrimaryKeyRelatedField(
        selector=versions_for_user,
        required=False,
        allow_null=True,
        help_text="Your own probe set; built-in if left out.",
    )
    params = serializers.DictField(required=False, default=dict)
    evaluation = ScopedPrimaryKeyRelatedField(
        selector=selectors.evaluation_runs_for_user,
        required=False,
        allow_null=True,
        help_text="For kind=slice: the run to slice.",
    )
    column = serializers.CharField(required=False, help_text="For kind=slice.")
    metric = serializers.CharField(required=False, help_text="For kind=slice.")

    def validate(self, data):
        if data["kind"] == BiasKind.SLICE:
            if not data.get("evaluation") or not data.get("column"):
                raise serializers.ValidationError(
                    "A slice report needs an evaluation and a column."
                )
        elif not data.get("model_version"):
            raise serializers.ValidationError({"model_version": ["Choose the model to probe."]})
        return data
