from __future__ import annotations

from rest_framework import serializers

from datasets_app import selectors
from datasets_app.models import (
    CleaningRecipe,
    DataCard,
    DataJob,
    Dataset,
    DatasetSplit,
    DatasetVersion,
    Tokenizer,
)
from llmhub.api.fields import ScopedPrimaryKeyRelatedField
from llmhub.api.serializers import JobSerializer, StrictSerializer
from projects.selectors import projects_for_user


class DataCardSerializer(serializers.ModelSerializer):
    missing_fields = serializers.ListField(child=serializers.CharField(), read_only=True)
    is_complete = serializers.BooleanField(read_only=True)
    updated_by = serializers.CharField(source="updated_by.username", default=None, read_only=True)

    class Meta:
        model = DataCard
        fields = (
            "source",
            "license",
            "collection_method",
            "consent",
            "personal_data",
            "intended_use",
            "limitations",
            "missing_fields",
            "is_complete",
            "updated_at",
            "updated_by",
        )
        read_only_fields = fields


class DataCardUpdateSerializer(StrictSerializer):
    source = serializers.CharField(allow_blank=True)
    license = serializers.CharField(allow_blank=True, max_length=200)
    collection_method = serializers.CharField(allow_blank=True)
    consent = serializers.CharField(allow_blank=True)
    personal_data = serializers.CharField(allow_blank=True)
    intended_use = serializers.CharField(allow_blank=True)
    limitations = serializers.CharField(allow_blank=True)


class SplitSerializer(serializers.ModelSerializer):
    class Meta:
        model = DatasetSplit
        fields = ("name", "row_count", "content_sha256")
        read_only_fields = fields


class VersionSerializer(serializers.ModelSerializer):
    splits = SplitSerializer(many=True, read_only=True)
    kind = serializers.CharField(read_only=True)
    created_by = serializers.CharField(source="created_by.username", default=None, read_only=True)

    class Meta:
        model = DatasetVersion
        fields = (
            "id",
            "dataset",
            "number",
            "parent",
            "kind",
            "content_sha256",
            "row_count",
            "size_bytes",
            "schema",
            "column_roles",
            "recipe",
            "note",
            "warnings",
            "splits",
            "created_by",
            "created_at",
        )
        read_only_fields = fields


class DatasetSerializer(serializers.ModelSerializer):
    card = DataCardSerializer(read_only=True)
    version_count = serializers.IntegerField(read_only=True)
    created_by = serializers.CharField(source="created_by.username", default=None, read_only=True)

    class Meta:
        model = Dataset
        fields = (
            "id",
            "project",
            "name",
            "description",
            "version_count",
            "card",
            "created_by",
            "created_at",
        )
        read_only_fields = fields


class DatasetCreateSerializer(StrictSerializer):
    project = ScopedPrimaryKeyRelatedField(selector=projects_for_user)
    name = serializers.CharField(max_length=120)
    description = serializers.CharField(required=False, allow_blank=True, default="")


class DatasetUpdateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=120)
    description = serializers.CharField(allow_blank=True)


class UploadSerializer(StrictSerializer):
    """The upload's fields. Only their types are checked here: the values are validated once,
    by the runtime's ``IngestOptions`` (the service calls it, and the worker again)."""

    file = serializers.FileField(allow_empty_file=True, use_url=False)
    file_format = serializers.CharField(
        required=False,
        allow_null=True,
        allow_blank=True,
        help_text="csv, tsv, json, jsonl, txt or parquet; inferred from the file name when "
        "left out.",
    )
    encoding = serializers.CharField(
        required=False,
        default="utf-8",
        help_text="utf-8 (default), latin-1, cp1252... or utf-16 (converted).",
    )
    encoding_errors = serializers.CharField(
        required=False,
        default="strict",
        help_text="'strict' fails on invalid bytes (saying where); 'replace' substitutes them.",
    )
    txt_mode = serializers.CharField(
        required=False,
        default="lines",
        help_text="For .txt: 'lines' (one document per line) or 'chunks' (the corpus cut "
        "into chunks of chunk_chars characters).",
    )
    chunk_chars = serializers.IntegerField(
        required=False, default=2000, help_text="100 to 1,000,000."
    )
    column_roles = serializers.JSONField(
        required=False,
        allow_null=True,
        help_text='role -> column, e.g. {"text": "document", "target": "summary"}; inferred '
        "from column names when left out.",
    )


class RolesSerializer(StrictSerializer):
    column_roles = serializers.DictField(child=serializers.CharField())


class RecipeSerializer(serializers.ModelSerializer):
    created_by = serializers.CharField(source="created_by.username", default=None, read_only=True)

    class Meta:
        model = CleaningRecipe
        fields = (
            "id",
            "project",
            "name",
            "description",
            "steps",
            "created_by",
            "created_at",
            "updated_at",
        )
        read_only_fields = fields


class RecipeCreateSerializer(StrictSerializer):
    project = ScopedPrimaryKeyRelatedField(selector=projects_for_user)
    name = serializers.CharField(max_length=120)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    steps = serializers.JSONField(help_text='[{"step": "strip_html", "params": {}}, ...]')


class RecipeUpdateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=120)
    description = serializers.CharField(allow_blank=True)
    steps = serializers.JSONField()


class CleanSerializer(StrictSerializer):
    recipe = ScopedPrimaryKeyRelatedField(
        selector=selectors.recipes_for_user, required=False, allow_null=True
    )
    steps = serializers.JSONField(required=False, allow_null=True)
    text_columns = serializers.ListField(
        child=serializers.CharField(), required=False, allow_null=True
    )
    num_proc = serializers.IntegerField(required=False, default=1, help_text="1 to 16.")


class SplitRequestSerializer(StrictSerializer):
    ratios = serializers.DictField(child=serializers.FloatField(), required=False, allow_null=True)
    seed = serializers.IntegerField(required=False, default=42)
    stratify_column = serializers.CharField(required=False, allow_null=True)
    by_column = serializers.CharField(required=False, allow_null=True)
    strategy = serializers.CharField(
        required=False,
        default="random",
        help_text="random (shuffled by the seed) or position (the rows in file order: the first "
        "split takes the first rows).",
    )


class ProfileRequestSerializer(StrictSerializer):
    tokenizer = ScopedPrimaryKeyRelatedField(
        selector=selectors.tokenizers_for_user, required=False, allow_null=True
    )


class TokenizerSerializer(serializers.ModelSerializer):
    class Meta:
        model = Tokenizer
        fields = (
            "id",
            "project",
            "name",
            "algorithm",
            "vocab_size",
            "special_tokens",
            "source_version",
            "stats",
            "created_at",
        )
        read_only_fields = fields


class TokenizerCreateSerializer(StrictSerializer):
    version = ScopedPrimaryKeyRelatedField(selector=selectors.versions_for_user)
    name = serializers.CharField(max_length=120)
    # Values are validated once, by the runtime's TokenizerParams (called by the service).
    algorithm = serializers.CharField(
        default="bpe",
        help_text="bpe, wordpiece, unigram or char (every distinct character a token, for "
        "small corpora).",
    )
    vocab_size = serializers.IntegerField(
        default=8000,
        help_text="Up to 1,000,000; at least the special tokens + 256 for bpe, the special "
        "tokens + 1 otherwise (char: an upper bound, the rarest characters left out).",
    )
    min_frequency = serializers.IntegerField(default=2, help_text="At least 1.")
    special_tokens = serializers.ListField(
        child=serializers.CharField(), required=False, allow_null=True
    )
    lowercase = serializers.BooleanField(default=False)
    text_columns = serializers.ListField(
        child=serializers.CharField(), required=False, allow_null=True
    )


class DataJobSerializer(JobSerializer):
    class Meta:
        model = DataJob
        fields = (
            *JobSerializer.JOB_FIELDS,
            "kind",
            "dataset",
            "source_version",
            "recipe",
            "params",
            "result",
            "result_version",
            "result_tokenizer",
        )
        read_only_fields = fields
