"""Rows the deploy-stage tests build: model versions whose files are really in storage, finished
evaluations of them, endpoints serving them, request-log records as the engine hands them."""

from __future__ import annotations

import itertools
import time
import uuid
from pathlib import Path

import pyarrow as pa
from django.utils import timezone

from evaluation.models import EvaluationRun
from llmhub import storage
from llmhub.models import JobStatus
from serving.engine.types import RequestRecord
from training.models import ModelVersion, RegisteredModel

_numbers = itertools.count(1)

FILES = {
    "config.json": b'{"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}',
    "model.safetensors": bytes(range(256)) * 4,
}


def stored_version(
    project,
    tmp_path: Path,
    *,
    kind: str = "sft_causal",
    name: str = "support bot",
    warnings: list | None = None,
) -> ModelVersion:
    """A registered version of ``project`` whose (tiny, fake) files are in storage."""
    number = next(_numbers)
    directory = tmp_path / f"model-{uuid.uuid4().hex[:8]}"
    for file_name, content in FILES.items():
        (directory / file_name).parent.mkdir(parents=True, exist_ok=True)
        (directory / file_name).write_bytes(content)
    prefix = storage.unique_prefix("models", project.pk)
    files = storage.store_directory(directory, prefix=prefix)
    registered, _ = RegisteredModel.objects.get_or_create(project=project, name=name)
    return ModelVersion.objects.create(
        registered_model=registered,
        number=number,
        task_kind=kind,
        files_prefix=prefix,
        files=files,
        warnings=warnings or [],
    )


_dataset_versions: dict[int, object] = {}


def finished_evaluation(
    world, version: ModelVersion, *, metric: str, value: float, split: str = "test"
) -> EvaluationRun:
    """A succeeded evaluation of ``version`` that measured ``metric`` = ``value`` on ``split``."""
    from tests.datasets_app.tables import make_version

    project = version.registered_model.project
    data = (
        EvaluationRun.objects.filter(project=project).values_list("dataset_version", flat=True)
    ).first()
    if data is None:
        table = pa.table({"text": ["a b", "c d"], "label": [0, 1]})
        data = make_version(world, table, name=f"eval-{uuid.uuid4().hex[:6]}").pk
    return EvaluationRun.objects.create(
        project=project,
        model_version=version,
        dataset_version_id=data,
        split=split,
        task_type=project.task_type,
        metrics=[metric],
        status=JobStatus.SUCCEEDED,
        finished_at=timezone.now(),
        results={metric: {"value": value, "ci_low": value, "ci_high": value, "n": 2}},
    )


def request_record(endpoint, **fields) -> RequestRecord:
    """A record as the engine hands it to the runner (an answered completion by default)."""
    values = {
        "response_id": f"cmpl-{uuid.uuid4().hex[:20]}",
        "created_at": time.time(),
        "endpoint_id": endpoint.pk,
        "version_id": endpoint.version_id,
        "key_id": None,
        "route": "completions",
        "status_code": 200,
        "latency_ms": 12.5,
        "prompt_tokens": 5,
        "completion_tokens": 7,
        "prompt_text": "Hello",
        "completion_text": " world",
    }
    values.update(fields)
    return RequestRecord(**values)
