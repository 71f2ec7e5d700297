"""Drift to retraining: an alert's "Retrain" turns the recent window of the endpoint's requests
into a new dataset version and pre-fills the training launch form from the serving version's
own job, fine-tuning from that version on the new data.

The dataset version (:func:`retrain_propose`)

- Rows: the window's answered requests (status < 400) that stored their prompt, of the version
  the alert is about (all versions when the alert names none), the newest
  ``MonitorSettings.window_requests`` of them, oldest first. The window is the alert's drift
  job's ``window_start``..``window_end``, else the endpoint's ``window_hours`` before the alert
  was last seen. A ``/v1/predict`` request of several inputs gives one row per input when its
  logged prompt and labels line up (one per line), else one row; a chat request's messages
  are rendered as the engine renders them without a chat template (a "User: ..." line per
  message, then "Assistant:").
  A drift alert's rows are its drift job's: that version's, the canary's left out.
- Columns follow the current version's training data, so its pre-filled job runs unchanged:
  the text column under the name (and role) that job's data gave it, and for a classifier the
  label column, for a generator the target column, named as there. Two columns more:
  ``response_id`` and ``feedback`` ("up", "down" or empty).
- Labels from the thumbs (``ResponseFeedback`` by response id; several people's thumbs on one
  response add up, a tie counts as none): a thumbs up keeps the logged answer (the predicted
  label, the completion) as the label or target; a thumbs down or no thumbs leaves it empty,
  since "wrong" does not say what is right. Every prompt stays in the version (to be labelled,
  by a campaign or an edited copy); the splits hold only the confirmed rows.
- Splits, made by the data stage's own ``split_table`` under the current job's split names:
  for a job that learns an answer (classification, SFT, seq2seq) from the rows a thumbs up
  confirmed, stratified by label for a classifier, 90/10 when the job had an eval split (all
  of them as the train split when too few to part), "train" where the job named none, so the
  pre-filled job never trains on unlabelled prompts; with fewer than two labels (one confirmed
  completion for a generator) no split is made and the version carries a warning saying to
  label first. Pretraining parts every row, only where its job named splits.
- Lineage: recipe ``{"kind": "monitor_window", "endpoint", "alert", "drift_job",
  "window_start", "window_end", "rows", "labelled_rows", "version"}``, in the endpoint's
  dataset of monitor windows; the alert keeps the version (``retrain_dataset_version``), so a
  second call returns it.

Kinds: classification, sft_causal, seq2seq and pretraining keep their kind; a version trained
with DPO or KTO is continued with SFT on the confirmed completions (thumbs give no preference
pairs, and KTO needs a thumb on every row); extractive QA and reward models are not served.
"""

from __future__ import annotations

import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.urls import reverse

from datasets_app.models import Dataset, DatasetVersion
from projects.audit import record_event
from projects.permissions import Action
from projects.services import require
from serving.models import RequestLog, ResponseFeedback
from serving.monitoring.models import Alert, MonitorSettings
from training.models import BaseSource, ModelVersion, TrainingJob

# The share of the window's rows that go to the eval split, when the current job had one.
EVAL_SHARE = 0.1
SPLIT_SEED = 42
# Kinds whose served versions are continued with another kind's job on the window.
KIND_FOR_RETRAIN = {"dpo": "sft_causal", "kto": "sft_causal"}
# Kinds whose data a window of logged prompts cannot give.
UNSUPPORTED_KINDS = ("qa", "reward_model")
PRETRAIN_KINDS = ("pretrain_clm", "pretrain_mlm")


def _error(message: str) -> ValidationError:
    return ValidationError({"alert": message})


# --- what the window is, and which job it continues ------------------------------------------


def current_version(alert: Alert) -> ModelVersion | None:
    """The model version the retraining starts from: the one the alert is about, else the
    endpoint's serving version."""
    return alert.version or alert.endpoint.version


def source_job(version: ModelVersion | None) -> TrainingJob | None:
    """The training job that made ``version`` (None for a version of an external run that
    recorded none)."""
    if version is None:
        return None
    return TrainingJob.objects.filter(model_version=version).select_related("train_version").first()


def _settings(alert: Alert) -> tuple[int, int]:
    """(window_hours, window_requests) of the endpoint's monitor settings, or their defaults
    where the endpoint has no settings row yet (reading creates none)."""
    row = (
        MonitorSettings.objects.filter(endpoint_id=alert.endpoint_id)
        .values_list("window_hours", "window_requests")
        .first()
    )
    if row is not None:
        return row
    field = MonitorSettings._meta.get_field
    return field("window_hours").default, field("window_requests").default


def window_of(alert: Alert, hours: int | None = None) -> tuple[datetime, datetime]:
    """(start, end) of the window the retrain data is made from: the drift job's, else
    ``window_hours`` before the alert was last seen."""
    job = alert.drift_job
    if job is not None and job.window_start and job.window_end:
        return job.window_start, job.window_end
    hours = hours if hours is not None else _settings(alert)[0]
    return alert.last_seen_at - timedelta(hours=hours), alert.last_seen_at


def _layout(kind: str, job: TrainingJob | None) -> dict[str, Any]:
    """The new table's columns and roles, named as the current job's data named them:
    ``{"kind", "text": (role, column), "answer": (role, column) | None}``."""
    roles = dict((job.column_roles or job.train_version.column_roles) if job else {})
    if kind in UNSUPPORTED_KINDS:
        raise _error(
            f"The serving version is a {kind} model: its training data cannot be made from "
            "logged prompts."
        )
    kind = KIND_FOR_RETRAIN.get(kind, kind)
    if kind == "classification":
        return {
            "kind": kind,
            "text": ("text", roles.get("text") or "text"),
            "answer": ("label", roles.get("label") or "label"),
        }
    if kind in PRETRAIN_KINDS:
        return {"kind": kind, "text": ("text", roles.get("text") or "text"), "answer": None}
    # Generators: the source the job read (prompt, else text, else question), and the target.
    role = next((r for r in ("prompt", "text", "question") if roles.get(r)), "prompt")
    return {
        "kind": kind,
        "text": (role, roles.get(role) or role),
        "answer": ("target", roles.get("target") or "target"),
    }


def _window_requests(alert: Alert, start: datetime, end: datetime, limit: int) -> list[tuple]:
    logs = RequestLog.objects.filter(
        endpoint_id=alert.endpoint_id,
        created_at__gte=start,
        created_at__lte=end,
        status_code__lt=400,
        prompt_text__isnull=False,
    ).exclude(prompt_text="")
    job = alert.drift_job
    if job is not None:  # the drift job's own rows: its version's, the canary's left out
        logs = logs.filter(version_id=job.version_id, canary=False)
    elif alert.version_id:
        logs = logs.filter(version_id=alert.version_id)
    newest = list(
        logs.order_by("-created_at", "-id").values_list(
            "response_id", "route", "prompt_text", "completion_text"
        )[:limit]
    )
    newest.reverse()
    return newest


def _thumbs(alert: Alert, start: datetime, response_ids: set[str]) -> dict[str, str]:
    """``{response_id: "up" | "down"}``: the sum of the thumbs on each response (feedback comes
    after its response, so only feedback since the window's start is read)."""
    totals: dict[str, int] = {}
    for response_id, score in ResponseFeedback.objects.filter(
        endpoint_id=alert.endpoint_id, created_at__gte=start
    ).values_list("response_id", "score"):
        if response_id in response_ids:
            totals[response_id] = totals.get(response_id, 0) + score
    return {rid: ("up" if total > 0 else "down") for rid, total in totals.items() if total}


def _chat_prompt(logged: str) -> str:
    """A chat request's prompt as the engine renders messages without a chat template (a
    "Role: content" line each, then "Assistant:"), instead of the log's JSON of them."""
    import json

    from serving.engine.backends.generate import default_chat_prompt

    try:
        messages = json.loads(logged)
    except ValueError:
        return logged
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        return logged
    return default_chat_prompt(messages)


def _rows(requests: list[tuple], thumbs: dict[str, str], layout: dict) -> list[dict]:
    text_column = layout["text"][1]
    answer_column = layout["answer"][1] if layout["answer"] else None
    rows = []
    for response_id, route, prompt, completion in requests:
        if route == "chat":
            prompt = _chat_prompt(prompt)
        pairs = [(prompt, completion)]
        if route == "predict" and completion is not None:
            prompts, labels = prompt.split("\n"), completion.split("\n")
            if len(prompts) == len(labels) > 1:
                pairs = list(zip(prompts, labels, strict=True))
        feedback = thumbs.get(response_id, "")
        for text, answer in pairs:
            row = {text_column: text, "response_id": response_id, "feedback": feedback}
            if answer_column is not None:
                row[answer_column] = answer if feedback == "up" and answer else None
            rows.append(row)
    return rows


# --- the version -----------------------------------------------------------------------------


def _write(rows: list[dict], layout: dict, job: TrainingJob | None, folder: Path):
    """Write the table and its splits under ``folder``; returns (IngestResult, splits for
    ``version_register``, the train and eval split names made, warnings for the version).

    A job learning an answer (classification, SFT, seq2seq) gets its splits from the rows
    whose answer a thumbs up confirmed, stratified by label for a classifier, under the
    current job's split names ("train" where it named none, so the pre-filled job never trains
    on the unlabelled prompts); pretraining parts every row, only where its job named splits."""
    import pyarrow as pa

    from datasets_app.cleaning.readers import parquet_io
    from datasets_app.cleaning.splits import split_table
    from llmhub.reporting import JobInputError

    columns = [layout["text"][1]]
    answer = layout["answer"][1] if layout["answer"] else None
    if answer:
        columns.append(answer)
    columns += ["response_id", "feedback"]
    schema = pa.schema([(name, pa.string()) for name in columns])
    result = parquet_io.write_table(
        pa.Table.from_pylist(rows, schema=schema), folder / "window.parquet"
    )
    train, evaluation = (job.train_split, job.eval_split) if job else ("", "")
    source, stratify, warnings = result.path, None, []
    if answer:
        train = train or "train"
        labelled = [row for row in rows if row[answer] is not None]
        distinct = {row[answer] for row in labelled}
        needed = 2 if layout["kind"] == "classification" else 1
        if len(distinct) < needed:
            what = "two labels" if needed == 2 else "one confirmed answer"
            warnings.append(
                f"{len(labelled):,} of {len(rows):,} rows have a label from a thumbs up "
                f"({len(distinct)} distinct); training needs {what} at least: label the "
                "prompts (a feedback campaign, or an edited copy) before training on them."
            )
            return result, [], "", "", warnings
        source = parquet_io.write_table(
            pa.Table.from_pylist(labelled, schema=schema), folder / "labelled.parquet"
        ).path
        if layout["kind"] == "classification":
            stratify = answer
    elif not train:
        return result, [], "", "", warnings
    attempts = [{train: 1.0 - EVAL_SHARE, evaluation: EVAL_SHARE}] if evaluation else []
    attempts.append({train: 1.0})
    for ratios in attempts:
        try:
            parts = split_table(
                source,
                output_dir=folder / "splits",
                ratios=ratios,
                seed=SPLIT_SEED,
                stratify_column=stratify if len(ratios) > 1 else None,
            )
        except JobInputError:  # too few rows for an eval split: they are all the train split
            continue
        splits = [
            {"name": name, "path": s.path, "sha256": s.sha256, "rows": s.rows}
            for name, s in parts.items()
        ]
        return result, splits, train, evaluation if evaluation in parts else "", warnings
    return result, [], "", "", warnings


def _monitor_dataset(*, actor, alert: Alert) -> Dataset:
    """The endpoint's dataset of monitor windows: that of its last retrain version, else a new
    one (a free name) made by the data stage's service."""
    from datasets_app.services import dataset_create, free_dataset_name

    previous = (
        Alert.objects.filter(endpoint_id=alert.endpoint_id, retrain_dataset_version__isnull=False)
        .exclude(pk=alert.pk)
        .select_related("retrain_dataset_version__dataset")
        .order_by("-pk")
        .first()
    )
    if previous is not None:
        return previous.retrain_dataset_version.dataset
    endpoint = alert.endpoint
    name = free_dataset_name(
        project_id=endpoint.project_id, stem=f"{endpoint.name} monitor windows"
    )
    return dataset_create(
        actor=actor,
        project=endpoint.project,
        name=name,
        description=f"Recent requests of the endpoint '{endpoint.name}', made into data by "
        "its alerts' Retrain.",
    )


def retrain_propose(*, actor, alert: Alert) -> DatasetVersion:
    """The dataset version made from the alert's window (see the module's docstring), stored
    on ``alert.retrain_dataset_version``; a second call returns the same version. EDIT_DATA
    on the endpoint's team. ValidationError, with nothing written, for an endpoint that
    stores no text, a window without a prompt, or a version whose kind the window cannot
    feed. The table is written and stored before the short transaction that records it."""
    from datasets_app.services import version_register
    from llmhub import storage

    endpoint = alert.endpoint
    require(actor, endpoint.project.team, Action.EDIT_DATA)
    if alert.retrain_dataset_version_id:
        return alert.retrain_dataset_version
    if not endpoint.store_text:
        raise _error(
            f"The endpoint '{endpoint.name}' does not store prompt text (its privacy switch "
            "is off), so its requests cannot become a dataset. Turn on storing text on the "
            "endpoint page; the requests from then on can."
        )
    version = current_version(alert)
    job = source_job(version)
    layout = _layout(job.kind if job else (version.task_kind if version else "sft_causal"), job)
    hours, limit = _settings(alert)
    start, end = window_of(alert, hours)
    requests = _window_requests(alert, start, end, limit)
    if not requests:
        raise _error(
            f"No answered request with its prompt stored between {start:%Y-%m-%d %H:%M} and "
            f"{end:%Y-%m-%d %H:%M} UTC: nothing to make a dataset from."
        )
    thumbs = _thumbs(alert, start, {r[0] for r in requests})
    rows = _rows(requests, thumbs, layout)
    answer = layout["answer"][1] if layout["answer"] else None
    labelled = sum(1 for row in rows if answer and row.get(answer) is not None)
    roles = {layout["text"][0]: layout["text"][1]}
    if layout["answer"]:
        roles[layout["answer"][0]] = answer
    with tempfile.TemporaryDirectory(prefix=f"llmhub-retrain-{alert.pk}-") as scratch:
        result, splits, train_split, eval_split, warnings = _write(rows, layout, job, Path(scratch))
        # Slow I/O before the transaction: version_register finds these stored already.
        storage.store_content_addressed(result.path, sha256=result.content_sha256)
        for split in splits:
            storage.store_content_addressed(split["path"], sha256=split["sha256"])
        recipe = {
            "kind": "monitor_window",
            "endpoint": endpoint.pk,
            "alert": alert.pk,
            "drift_job": alert.drift_job_id,
            "version": version.pk if version else None,
            "window_start": start.isoformat(),
            "window_end": end.isoformat(),
            "rows": len(rows),
            "labelled_rows": labelled,
            "training_kind": layout["kind"],
            "train_split": train_split,
            "eval_split": eval_split,
        }
        with transaction.atomic():
            locked = Alert.objects.select_for_update().get(pk=alert.pk)
            if locked.retrain_dataset_version_id:  # another request made it a moment ago
                return locked.retrain_dataset_version
            new = version_register(
                dataset=_monitor_dataset(actor=actor, alert=locked),
                local_path=result.path,
                sha256=result.content_sha256,
                row_count=len(rows),
                size_bytes=result.size_bytes,
                schema=result.columns,
                column_roles=roles,
                recipe=recipe,
                parent=None,
                actor=actor,
                note=f"Window of {endpoint.name}, alert #{alert.pk}: {len(rows):,} prompts, "
                f"{labelled:,} labelled from thumbs up",
                splits=splits,
                warnings=warnings,
            )
            locked.retrain_dataset_version = new
            locked.save(update_fields=["retrain_dataset_version"])
            record_event(
                actor=actor,
                verb="alert.retrain_proposed",
                target=locked,
                changes={"dataset_version": new.pk, "rows": len(rows), "labelled": labelled},
            )
    alert.retrain_dataset_version = new
    return new


# --- the launch form's pre-fill ----------------------------------------------------------------


def retrain_launch_url(alert: Alert) -> str:
    """The training launch page of the alert's project, pre-filled for this alert."""
    url = reverse("training-launch", kwargs={"pk": alert.endpoint.project_id})
    return f"{url}?retrain={alert.pk}"


def launch_values(alert: Alert) -> dict[str, Any]:
    """What the pre-filled training job is, in the REST API's terms (the body of
    ``POST /api/v1/training-jobs/``; the launch service's arguments, ids for objects): the
    current version's own job's settings with base = the current version
    (``base_source="model_version"``) and data = the retrain version with the splits made for
    it. The pre-training rate and epochs of a job from random weights become the fine-tuning
    defaults (``PRETRAINED_DEFAULTS``). Needs ``retrain_propose`` first."""
    from training.runtime.config import PRETRAINED_DEFAULTS

    data = alert.retrain_dataset_version
    if data is None:
        raise _error("Propose the retrain dataset first.")
    version = current_version(alert)
    if version is None:
        raise _error("The endpoint serves no model version to fine-tune.")
    job = source_job(version)
    recipe = data.recipe or {}
    hyperparameters = dict(job.hyperparameters or {}) if job else {}
    if job is None or job.base_source == BaseSource.RANDOM:
        hyperparameters.update(PRETRAINED_DEFAULTS)
    name = f"{(job.name if job else alert.endpoint.slug)[:100]}-retrain-{alert.pk}"
    return {
        "project": alert.endpoint.project_id,
        "name": name[:120],
        "kind": recipe.get("training_kind") or version.task_kind,
        "method": job.method if job else "full",
        "base_source": BaseSource.MODEL_VERSION.value,
        "base_model_version": version.pk,
        "tokenizer": version.tokenizer_id or (job.tokenizer_id if job else None),
        "train_version": data.pk,
        "train_split": recipe.get("train_split", ""),
        "eval_split": recipe.get("eval_split", ""),
        "hyperparameters": hyperparameters,
    }
