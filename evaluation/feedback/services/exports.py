"""Exports of a campaign's labels as dataset versions, and imports of existing preference data.

An export is a :class:`FeedbackExport` job (``evaluation/feedback/tasks.py`` runs it): it reads
the campaign's items and judgments in chunks, turns each item's labels into rows of one of the
two layouts trl's trainers take, writes a Parquet table and registers it as an immutable
version of the data stage (``datasets_app.services.version_register``), its ``recipe`` naming
the campaign (the lineage) and its column roles set so the training stage reads it.

- ``preference``: ``prompt`` / ``chosen`` / ``rejected`` (DPO, reward models).
  - pairwise: the chosen response against the other; ties and "both bad" give no row.
  - ranking: the best response against each of the others (n - 1 rows per item).
  - correction: the corrected text against the response it corrects.
  - rating (2+ responses): the best by mean rating (over criteria and raters) against each
    response rated strictly lower; responses with equal means give no pair.
- ``unpaired``: ``prompt`` / ``completion`` / ``label`` (bool; KTO).
  - rating: a response whose mean rating (over criteria and raters) is >= 4 is ``true``,
    <= 2 ``false``; in between gives no row.
  - correction: a ``true`` row for each corrected text.
  - pairwise: the chosen response ``true``, the other ``false`` (trl's own unpairing); ranking:
    the best ``true``, the worst ``false``.
  - items from logged requests: each response's thumbs in serving's ``ResponseFeedback`` (the
    sign of their sum; a tie gives no row).

Which label counts for an item: the adjudicated one when a manager adjudicated it; else the
majority of its judgments (one judgment is its own majority; a tie between the top choices
gives no row; rankings are combined by Borda count, ties broken by the lower response index).
Withdrawn judgments never count; AI raters' judgments count only with ``include_ai`` and for AI
raters a manager approved for training.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from datasets_app.models import Dataset, DatasetVersion
from evaluation.feedback.models import (
    Campaign,
    FeedbackExport,
    FeedbackTask,
    ItemSource,
    Judgment,
)
from llmhub.jobs import enqueue_job, requires_broker
from projects.audit import record_event
from projects.models import Project
from projects.permissions import Action
from projects.services import require

PREFERENCE = "preference"
UNPAIRED = "unpaired"
EXPORT_FORMATS = (PREFERENCE, UNPAIRED)
COLUMNS = {
    PREFERENCE: ("prompt", "chosen", "rejected"),
    UNPAIRED: ("prompt", "completion", "label"),
}
# Column roles of the exported versions (datasets_app/columns.py has no "completion" role: the
# completion is the version's "target", the text a model should or should not produce).
COLUMN_ROLES = {
    PREFERENCE: {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"},
    UNPAIRED: {"prompt": "prompt", "target": "completion", "label": "label"},
}
# Which task types each format can be made from.
FORMAT_TASKS = {
    PREFERENCE: (
        FeedbackTask.PAIRWISE,
        FeedbackTask.RANKING,
        FeedbackTask.RATING,
        FeedbackTask.CORRECTION,
    ),
    UNPAIRED: tuple(FeedbackTask.values),
}
THUMB_UP_AT, THUMB_DOWN_AT = 4, 2
# An import file up to this size is checked row by row before it is accepted (under a second
# for hh-rlhf's 2.4 MB sample); a larger one is checked by its ingest job.
IMPORT_CHECK_BYTES = 8 * 1024 * 1024
CHUNK = 2000  # items (and their judgments) held at once


def _error(field: str, message: str) -> ValidationError:
    return ValidationError({field: message})


def approved_ai_rater_ids(campaign: Campaign) -> list[int]:
    return list(campaign.ai_raters.filter(use_for_training=True).values_list("pk", flat=True))


@requires_broker
@transaction.atomic
def feedback_export_launch(
    *, actor, campaign: Campaign, format: str, include_ai: bool = False
) -> FeedbackExport:
    """Queue an export of ``campaign``'s labels in ``format`` ("preference" or "unpaired")."""
    project = campaign.project
    require(actor, project.team, Action.EDIT_PROJECT)
    if format not in EXPORT_FORMATS:
        raise _error("format", f"Choose one of {', '.join(EXPORT_FORMATS)}.")
    if campaign.task not in FORMAT_TASKS[format]:
        raise _error(
            "format",
            f"A {campaign.get_task_display().lower()} campaign cannot be exported as "
            f"{format} data; export it as {UNPAIRED} (prompt/completion/label).",
        )
    if not isinstance(include_ai, bool):
        raise _error("include_ai", "Give true or false.")
    if include_ai and not approved_ai_rater_ids(campaign):
        raise _error(
            "include_ai",
            "No AI rater of this campaign is approved for training: approve one (with its "
            "agreement on record) or export the human labels only.",
        )
    from_requests = format == UNPAIRED and campaign.source == ItemSource.REQUESTS
    has_labels = (
        Judgment.objects.filter(item__campaign=campaign, withdrawn_at__isnull=True).exists()
        or campaign.items.filter(adjudicated__isnull=False).exists()
    )
    if not (has_labels or from_requests):
        raise _error("campaign", f"{campaign} has no judgments yet: nothing to export.")
    job = FeedbackExport(
        project=project,
        created_by=actor,
        campaign=campaign,
        format=format,
        include_ai=include_ai,
    )
    job.full_clean()
    job.save()
    record_event(
        actor=actor,
        verb="feedback_export.launched",
        target=job,
        changes={"campaign": campaign.name, "format": format, "include_ai": include_ai},
    )
    enqueue_job(job)
    return job


# --- the rows (pure functions, used by the job) ----------------------------------------------


def _majority(values: list) -> Any | None:
    """The most common of ``values`` (hashable), or None when the top is tied or empty."""
    counts = Counter(values).most_common(2)
    if not counts or (len(counts) == 2 and counts[0][1] == counts[1][1]):
        return None
    return counts[0][0]


def _text(responses: list, index: Any) -> str | None:
    if isinstance(index, int) and 0 <= index < len(responses):
        text = responses[index].get("text") if isinstance(responses[index], dict) else None
        return text if isinstance(text, str) else None
    return None


def pairwise_choice(values: list[dict], adjudicated: dict | None) -> str | None:
    """ "a", "b", "tie" or "both_bad" for the item, or None (no majority)."""
    if adjudicated and adjudicated.get("choice"):
        return adjudicated["choice"]
    return _majority([v.get("choice") for v in values if v.get("choice")])


def consensus_ranking(values: list[dict], adjudicated: dict | None) -> list[int] | None:
    """The item's ranking (response indexes, best first): adjudicated, else by Borda count."""
    if adjudicated and adjudicated.get("ranking"):
        return list(adjudicated["ranking"])
    rankings = [v["ranking"] for v in values if isinstance(v.get("ranking"), list)]
    if not rankings:
        return None
    if len(rankings) == 1:
        return list(rankings[0])
    points: Counter = Counter()
    for ranking in rankings:
        for place, index in enumerate(ranking):
            points[index] += len(ranking) - place
    return sorted(points, key=lambda index: (-points[index], index))


def mean_ratings(values: list[dict], adjudicated: dict | None, n: int) -> list[float | None]:
    """Per response, the mean of its ratings over criteria and raters (None: unrated)."""
    source = [adjudicated] if adjudicated and adjudicated.get("ratings") else values
    sums, counts = [0.0] * n, [0] * n
    for value in source:
        for index, ratings in enumerate(value.get("ratings") or []):
            if index < n and isinstance(ratings, dict):
                for score in ratings.values():
                    if isinstance(score, int | float) and not isinstance(score, bool):
                        sums[index] += score
                        counts[index] += 1
    return [sums[i] / counts[i] if counts[i] else None for i in range(n)]


def rating_pairs(means: list[float | None]) -> list[tuple[int, int]]:
    """(chosen, rejected) response indexes from their mean ratings: each response with the top
    mean against each one rated strictly lower, as a ranking's best against the others. Ties
    (the top shared, or equal means below it) give no pair between them; unrated responses
    none at all."""
    rated = [(index, mean) for index, mean in enumerate(means) if mean is not None]
    if len(rated) < 2:
        return []
    top = max(mean for _index, mean in rated)
    return [
        (best, other)
        for best, best_mean in rated
        if best_mean == top
        for other, other_mean in rated
        if other_mean < top
    ]


def corrections(values: list[dict], adjudicated: dict | None) -> list[tuple[int, str]]:
    """(response index, corrected text) pairs, each text once: the adjudicated one alone when
    there is one, else every rater's."""
    source = [adjudicated] if adjudicated and adjudicated.get("text") else values
    seen, out = set(), []
    for value in source:
        index, text = value.get("response", 0), value.get("text")
        if isinstance(text, str) and text.strip() and (index, text) not in seen:
            seen.add((index, text))
            out.append((index, text))
    return out


def preference_rows(
    task: str, prompt: str, responses: list, values: list[dict], adjudicated: dict | None
) -> list[dict]:
    """The prompt/chosen/rejected rows one item gives."""
    rows = []
    if task == FeedbackTask.PAIRWISE:
        choice = pairwise_choice(values, adjudicated)
        if choice in ("a", "b"):
            chosen, rejected = (0, 1) if choice == "a" else (1, 0)
            rows.append((_text(responses, chosen), _text(responses, rejected)))
    elif task == FeedbackTask.RANKING:
        ranking = consensus_ranking(values, adjudicated)
        if ranking and len(ranking) >= 2:
            best = _text(responses, ranking[0])
            rows.extend((best, _text(responses, other)) for other in ranking[1:])
    elif task == FeedbackTask.RATING:
        rows.extend(
            (_text(responses, best), _text(responses, other))
            for best, other in rating_pairs(mean_ratings(values, adjudicated, len(responses)))
        )
    elif task == FeedbackTask.CORRECTION:
        for index, text in corrections(values, adjudicated):
            original = _text(responses, index)
            if original is not None and original != text:
                rows.append((text, original))
    return [
        {"prompt": prompt, "chosen": chosen, "rejected": rejected}
        for chosen, rejected in rows
        if chosen is not None and rejected is not None
    ]


def unpaired_rows(
    task: str, prompt: str, responses: list, values: list[dict], adjudicated: dict | None
) -> list[dict]:
    """The prompt/completion/label rows one item's judgments give."""
    rows: list[tuple[str | None, bool]] = []
    if task == FeedbackTask.RATING:
        for index, mean in enumerate(mean_ratings(values, adjudicated, len(responses))):
            if mean is not None and mean >= THUMB_UP_AT:
                rows.append((_text(responses, index), True))
            elif mean is not None and mean <= THUMB_DOWN_AT:
                rows.append((_text(responses, index), False))
    elif task == FeedbackTask.CORRECTION:
        rows.extend((text, True) for _index, text in corrections(values, adjudicated))
    elif task == FeedbackTask.PAIRWISE:
        choice = pairwise_choice(values, adjudicated)
        if choice in ("a", "b"):
            chosen = 0 if choice == "a" else 1
            rows += [(_text(responses, chosen), True), (_text(responses, 1 - chosen), False)]
    elif task == FeedbackTask.RANKING:
        ranking = consensus_ranking(values, adjudicated)
        if ranking and len(ranking) >= 2:
            rows += [(_text(responses, ranking[0]), True), (_text(responses, ranking[-1]), False)]
    return [
        {"prompt": prompt, "completion": text, "label": label}
        for text, label in rows
        if text is not None
    ]


def thumb_rows(prompt: str, responses: list, scores: list[int]) -> list[dict]:
    """The row serving's thumbs give a logged response (the sign of their sum)."""
    total, text = sum(scores), _text(responses, 0)
    if not total or text is None:
        return []
    return [{"prompt": prompt, "completion": text, "label": total > 0}]


# --- reading the campaign in chunks ------------------------------------------------------------


def _chunks(iterable: Iterable, size: int) -> Iterator[list]:
    chunk = []
    for value in iterable:
        chunk.append(value)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def export_rows(export: FeedbackExport) -> Iterator[tuple[list[dict], int, int]]:
    """The export's rows, a chunk of items at a time: ``(rows, items done, items in all)``.

    Items are read in id order with ``iterator()``; each chunk's judgments (and thumbs) are
    read with one query each, so memory holds one chunk whatever the campaign's size.
    """
    from django.db.models import Q

    campaign = export.campaign
    counts_from = Q(rater__isnull=False)
    if export.include_ai:
        counts_from |= Q(ai_rater_id__in=approved_ai_rater_ids(campaign))
    make = preference_rows if export.format == PREFERENCE else unpaired_rows
    thumbs = export.format == UNPAIRED and campaign.source == ItemSource.REQUESTS
    total = campaign.items.count()
    done = 0
    items = campaign.items.order_by("pk").values_list(
        "pk", "prompt", "responses", "adjudicated", "origin"
    )
    for chunk in _chunks(items.iterator(chunk_size=CHUNK), CHUNK):
        ids = [row[0] for row in chunk]
        values: dict[int, list[dict]] = {}
        judgments = (
            Judgment.objects.filter(counts_from, item_id__in=ids, withdrawn_at__isnull=True)
            .order_by("item_id", "pk")
            .values_list("item_id", "value")
        )
        for item_id, value in judgments.iterator(chunk_size=CHUNK * 4):
            if isinstance(value, dict):
                values.setdefault(item_id, []).append(value)
        scores = _thumbs(campaign, chunk) if thumbs else {}
        rows: list[dict] = []
        for pk, prompt, responses, adjudicated, origin in chunk:
            adjudicated = adjudicated if isinstance(adjudicated, dict) else None
            rows += make(campaign.task, prompt, responses or [], values.get(pk, []), adjudicated)
            response_id = (origin or {}).get("response_id")
            if response_id in scores:
                rows += thumb_rows(prompt, responses or [], scores[response_id])
        done += len(chunk)
        yield rows, done, total


def _thumbs(campaign: Campaign, chunk: list) -> dict[str, list[int]]:
    """response id -> its thumbs (+1/-1), for the logged requests of a chunk of items."""
    from serving.models import ResponseFeedback

    ids = [origin.get("response_id") for *_rest, origin in chunk if origin]
    ids = [i for i in ids if isinstance(i, str) and i]
    if not ids:
        return {}
    scores: dict[str, list[int]] = {}
    feedback = ResponseFeedback.objects.filter(
        endpoint__project=campaign.project, response_id__in=ids
    ).values_list("response_id", "score")
    for response_id, score in feedback:
        scores.setdefault(response_id, []).append(score)
    return scores


# --- registering the version (system writes of the job) ---------------------------------------


def _export_dataset(export: FeedbackExport) -> Dataset:
    """The dataset the campaign's exports go to: that of its last export, else a new one
    named after the campaign (a free name)."""
    from datasets_app.services import free_dataset_name

    previous = (
        FeedbackExport.objects.filter(campaign=export.campaign, dataset_version__isnull=False)
        .exclude(pk=export.pk)
        .order_by("-pk")
        .select_related("dataset_version__dataset")
        .first()
    )
    if previous is not None:
        return previous.dataset_version.dataset
    project = export.campaign.project
    name = free_dataset_name(project_id=project.pk, stem=f"{export.campaign.name} feedback")
    dataset = Dataset(
        project=project,
        name=name,
        description=f"Labels of the feedback campaign '{export.campaign.name}', exported.",
        created_by=export.created_by,
    )
    dataset.full_clean()
    dataset.save()
    record_event(
        actor=export.created_by,
        verb="dataset.created",
        target=dataset,
        changes={"from_campaign": export.campaign_id},
    )
    return dataset


def export_register(*, export: FeedbackExport, result, rows: int) -> DatasetVersion:
    """Register the written table (``result``: the data stage's ``IngestResult``) as a version
    whose recipe names the campaign, and point the export at it."""
    from datasets_app.services import version_register

    campaign = export.campaign
    with transaction.atomic():
        dataset = _export_dataset(export)
        version = version_register(
            dataset=dataset,
            local_path=result.path,
            sha256=result.content_sha256,
            row_count=rows,
            size_bytes=result.size_bytes,
            schema=result.columns,
            column_roles=COLUMN_ROLES[export.format],
            recipe={
                "kind": "feedback_export",
                "campaign": campaign.pk,
                "campaign_name": campaign.name,
                "task": campaign.task,
                "format": export.format,
                "include_ai": export.include_ai,
                "export": export.pk,
            },
            parent=None,
            actor=export.created_by,
            note=f"Exported from the campaign '{campaign.name}' ({export.format}, {rows:,} rows)",
        )
    return version


# --- import ------------------------------------------------------------------------------------


def preference_import(
    *,
    actor,
    project: Project,
    uploaded_file,
    name: str = "",
    format: str = PREFERENCE,
    column_roles: dict | None = None,
    description: str = "",
):
    """Import existing preference data (JSONL or CSV with prompt/chosen/rejected, or
    prompt/completion/label for ``format="unpaired"``) as a new dataset, through the data
    stage's upload path, whose ingest job checks every row with the layout's validator
    (``datasets_app/cleaning/layouts.py``). A file of up to ``IMPORT_CHECK_BYTES`` (not
    gzipped) is checked here first, by the same reader and validator: a missing or empty field
    is then a ValidationError naming its line, and nothing is stored; a larger file fails its
    ingest job naming the line, and no version is made. ``column_roles`` maps roles to other
    column names (e.g. hh-rlhf's ``chosen_response``); ``name`` defaults to the file's.
    Returns the ingest :class:`DataJob`."""
    from datasets_app.services import dataset_create_with_upload

    require(actor, project.team, Action.EDIT_DATA)
    if format not in EXPORT_FORMATS:
        raise _error("format", f"Choose one of {', '.join(EXPORT_FORMATS)}.")
    if column_roles is not None and not isinstance(column_roles, dict):
        raise _error("column_roles", 'Give an object of role -> column, e.g. {"chosen": "c"}.')
    roles = dict(COLUMN_ROLES[format])
    roles.update(column_roles or {})
    name = (name or "").strip() or _name_from_file(uploaded_file)
    if uploaded_file is not None:
        _check_import_file(uploaded_file, layout=format, column_roles=roles)
    return dataset_create_with_upload(
        actor=actor,
        project=project,
        name=name,
        description=description,
        uploaded_file=uploaded_file,
        column_roles=roles,
        layout=format,
    )


def _name_from_file(uploaded_file) -> str:
    filename = getattr(uploaded_file, "name", "") or ""
    stem = filename.rsplit("/", 1)[-1].split(".", 1)[0].strip()
    if not stem:
        raise _error("name", "Name the dataset to import into.")
    return stem[:120]


def _check_import_file(uploaded_file, *, layout: str, column_roles: dict) -> None:
    """Run the ingest's reader and layout validator over a small upload now (slow I/O, before
    any transaction), so a bad row is refused before anything is stored."""
    import tempfile
    from pathlib import Path

    from datasets_app.cleaning.readers import convert_to_parquet
    from datasets_app.cleaning.readers.sniff import GZIP_MAGIC
    from llmhub.reporting import JobInputError

    size = getattr(uploaded_file, "size", None) or 0
    if not 0 < size <= IMPORT_CHECK_BYTES:
        return  # empty: the data stage says so; large: its ingest job checks every row
    uploaded_file.seek(0)
    head = uploaded_file.read(2)
    uploaded_file.seek(0)
    if head == GZIP_MAGIC:
        return  # it may expand far past the bound: the job checks it
    filename = getattr(uploaded_file, "name", "") or "upload"
    with tempfile.TemporaryDirectory(prefix="llmhub-import-check-") as scratch:
        source = Path(scratch) / "upload"
        with open(source, "wb") as handle:
            for chunk in uploaded_file.chunks():
                handle.write(chunk)
        uploaded_file.seek(0)
        try:
            convert_to_parquet(
                source,
                output=Path(scratch) / "checked.parquet",
                filename=filename,
                layout=layout,
                column_roles=column_roles,
            )
        except JobInputError as exc:
            raise _error("file", str(exc)) from exc
