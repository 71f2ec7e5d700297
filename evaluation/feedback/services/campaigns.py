"""Every write of a feedback campaign: create it with its items (from an evaluation run's
outputs, logged production requests, or an uploaded file; generations of model versions come
later from the generation job through :func:`items_create`), its raters, the edits that stay
safe after launch, launch and close.

As elsewhere: keyword-only arguments, the actor's role checked first (campaign writes need
EDIT_PROJECT), everything validated before anything is written (a bad request is one
ValidationError naming every field at fault, nothing half-written), the items read and built
before the transaction opens (an upload is parsed from its file then), one short transaction,
an audit event per write.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F, Max
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from evaluation.feedback.models import (
    MAX_OVERLAP,
    MAX_RESPONSES_PER_ITEM,
    Assignment,
    AssignmentStatus,
    Campaign,
    CampaignRater,
    CampaignStatus,
    FeedbackTask,
    Item,
    ItemSource,
    Judgment,
)
from evaluation.models import EvaluationExample, EvaluationRun
from llmhub.models import JobStatus
from projects.audit import record_event
from projects.models import Membership, Project
from projects.permissions import Action, roles_allowed
from projects.services import require

DEFAULT_CRITERIA = ("helpfulness", "harmlessness", "factuality")
MAX_CRITERIA = 10
MAX_CRITERION_LENGTH = 40
MIN_TIMEOUT_SECONDS = 30
MAX_TIMEOUT_SECONDS = 7 * 24 * 3600
# A campaign's items are rows of the database and an upload is parsed in the web process:
# both are bounded (the request source's ``limit`` too).
MAX_ITEMS = 50_000
MAX_UPLOAD_BYTES = 100 * 1024 * 1024
MAX_LINE_ERRORS = 20
BULK_BATCH = 1000
# Settings a manager may change at all, and those that stay safe once raters have started.
EDITABLE = ("name", "instructions", "criteria", "overlap", "blind", "assignment_timeout_seconds")
SAFE_AFTER_LAUNCH = ("name", "instructions", "overlap", "assignment_timeout_seconds")
WHY_NOT_AFTER_LAUNCH = {
    "task": "The task cannot change: the collected judgments answer the task they were asked.",
    "criteria": "The criteria cannot change after launch: judgments already rate these ones.",
    "blind": "Blind mode cannot change after launch: raters have already seen the items so.",
    "items": "The items cannot change after launch: judgments refer to them.",
    "source": "The source cannot change after launch: the items were made from it.",
    "source_params": "The source cannot change after launch: the items were made from it.",
}

User = get_user_model()


# --- validation -------------------------------------------------------------------------------


def responses_needed(task: str) -> tuple[int, int]:
    """The (least, most) responses an item of ``task`` has."""
    if task == FeedbackTask.PAIRWISE:
        return 2, 2
    if task == FeedbackTask.RANKING:
        return 3, MAX_RESPONSES_PER_ITEM
    return 1, MAX_RESPONSES_PER_ITEM


def task_fit_message(task: str, n: int) -> str | None:
    """Why items of ``n`` responses do not fit ``task`` (None when they do)."""
    low, high = responses_needed(task)
    if low <= n <= high:
        return None
    if task == FeedbackTask.PAIRWISE:
        need = "exactly 2 responses per item"
    elif task == FeedbackTask.RANKING:
        need = f"3 to {MAX_RESPONSES_PER_ITEM} responses per item"
    else:
        need = f"1 to {MAX_RESPONSES_PER_ITEM} responses per item"
    return f"A {task} campaign needs {need}; this source gives {n}."


def _clean_criteria(task: str, criteria: Any, problems: dict[str, str]) -> list[str]:
    if task != FeedbackTask.RATING:
        if criteria:
            problems["criteria"] = "Only a rating campaign has criteria."
        return []
    if criteria is None:
        return list(DEFAULT_CRITERIA)
    if isinstance(criteria, str) or not isinstance(criteria, Sequence):
        problems["criteria"] = "Give the criteria as a list of names."
        return []
    names = [c.strip() if isinstance(c, str) else c for c in criteria]
    if not 1 <= len(names) <= MAX_CRITERIA:
        problems["criteria"] = f"A rating campaign has 1 to {MAX_CRITERIA} criteria."
    elif any(not isinstance(c, str) or not c for c in names):
        problems["criteria"] = "Every criterion needs a name."
    elif any(len(c) > MAX_CRITERION_LENGTH for c in names):
        problems["criteria"] = f"A criterion's name has at most {MAX_CRITERION_LENGTH} characters."
    elif len(set(names)) != len(names):
        problems["criteria"] = "The criteria's names must differ."
    return names


def _clean_int(value: Any, field: str, low: int, high: int, what: str, problems) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            value = int(str(value).strip())
        except (TypeError, ValueError):
            problems[field] = f"The {what} must be a whole number."
            return low
    if not low <= value <= high:
        problems[field] = f"The {what} must be between {low} and {high}."
    return value


def _clean_overlap(value: Any, problems) -> int:
    return _clean_int(value, "overlap", 1, MAX_OVERLAP, "overlap", problems)


def _clean_timeout(value: Any, problems) -> int:
    return _clean_int(
        value,
        "assignment_timeout_seconds",
        MIN_TIMEOUT_SECONDS,
        MAX_TIMEOUT_SECONDS,
        "assignment timeout (seconds)",
        problems,
    )


def _clean_name(project: Project, name: Any, problems, *, exclude: int | None = None) -> str:
    name = (name or "").strip() if isinstance(name, str) else ""
    if not name:
        problems["name"] = "Name the campaign."
    elif len(name) > Campaign._meta.get_field("name").max_length:
        problems["name"] = "The name has at most 120 characters."
    else:
        taken = Campaign.objects.filter(project=project, name=name)
        if exclude is not None:
            taken = taken.exclude(pk=exclude)
        if taken.exists():
            problems["name"] = f"The project already has a campaign named {name!r}."
    return name


def _resolve_raters(project: Project, raters: Iterable, problems) -> list:
    """The users named by ``raters`` (users or ids): members of the project's team whose role
    allows labeling; the refusals are written into ``problems``."""
    if isinstance(raters, (str, bytes, dict)) or not isinstance(raters, Iterable):
        problems["raters"] = "Give the raters as a list of user ids."
        return []
    ids: list[int] = []
    for rater in raters:
        pk = getattr(rater, "pk", rater)
        try:
            pk = int(pk)
        except (TypeError, ValueError):
            problems["raters"] = f"{rater!r} is not a user id."
            return []
        if pk not in ids:
            ids.append(pk)
    members = {
        m.user_id: m
        for m in Membership.objects.filter(team_id=project.team_id, user_id__in=ids).select_related(
            "user"
        )
    }
    missing = [pk for pk in ids if pk not in members]
    if missing:
        problems["raters"] = (
            f"Not members of {project.team.name}: user {', '.join(map(str, missing))}."
        )
        return []
    allowed = roles_allowed(Action.LABEL)
    refused = [m for m in members.values() if m.role not in allowed]
    if refused:
        problems["raters"] = "; ".join(
            f"{m.user.username} is {m.role}, a role that may not label outputs" for m in refused
        )
        return []
    return [members[pk].user for pk in ids]


def _check_raters_cover_overlap(n_raters: int, overlap: int, problems) -> None:
    if "raters" not in problems and "overlap" not in problems and n_raters < overlap:
        problems["raters"] = (
            f"A campaign with fewer raters than its overlap cannot fill its items: {n_raters} "
            f"rater{'s' if n_raters != 1 else ''} for an overlap of {overlap}."
        )


# --- sources ----------------------------------------------------------------------------------


def _response(text: str, *, version=None, label: str = "") -> dict[str, Any]:
    return {
        "text": text,
        "model_version_id": version.pk if version is not None else None,
        "label": label or (str(version) if version is not None else ""),
    }


def _ids(value: Any, field: str) -> list[int]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValidationError({"source_params": f"Give {field} as a list of ids."})
    try:
        return list(dict.fromkeys(int(v) for v in value))
    except (TypeError, ValueError):
        raise ValidationError({"source_params": f"Give {field} as a list of ids."}) from None


def _items_from_evaluation(project: Project, params: dict) -> tuple[list[dict], dict]:
    """One response per item from one run; from two or more runs on the same dataset version
    and split, their outputs paired by example index (examples all runs have)."""
    run_ids = _ids(params.get("runs"), "runs")
    if not run_ids:
        raise ValidationError({"source_params": "Choose at least one evaluation run."})
    if len(run_ids) > MAX_RESPONSES_PER_ITEM:
        raise ValidationError(
            {"source_params": f"At most {MAX_RESPONSES_PER_ITEM} runs can be compared."}
        )
    runs = {
        r.pk: r
        for r in EvaluationRun.objects.filter(project=project, pk__in=run_ids).select_related(
            "model_version__registered_model"
        )
    }
    missing = [pk for pk in run_ids if pk not in runs]
    if missing:
        raise ValidationError(
            {"source_params": f"No evaluation run {', '.join(map(str, missing))} in this project."}
        )
    unfinished = [str(runs[pk]) for pk in run_ids if runs[pk].status != JobStatus.SUCCEEDED]
    if unfinished:
        raise ValidationError(
            {"source_params": f"Only succeeded runs have outputs: {', '.join(unfinished)}."}
        )
    ordered = [runs[pk] for pk in run_ids]
    if len({(r.dataset_version_id, r.split) for r in ordered}) > 1:
        raise ValidationError(
            {
                "source_params": "Runs compared side by side must have evaluated the same "
                "dataset version and split."
            }
        )
    outputs: dict[int, dict[int, tuple[int, str, str]]] = {r.pk: {} for r in ordered}
    rows = (
        EvaluationExample.objects.filter(run__in=run_ids, prediction__isnull=False)
        .exclude(prediction="")
        .order_by()
        .values_list("run_id", "index", "id", "input", "prediction")
    )
    for run_id, index, example_id, prompt, prediction in rows.iterator(chunk_size=5000):
        outputs[run_id][index] = (example_id, prompt, prediction)
    common = set.intersection(*(set(o) for o in outputs.values()))
    items = []
    for index in sorted(common)[:MAX_ITEMS]:
        first = outputs[ordered[0].pk][index]
        items.append(
            {
                "prompt": first[1],
                "responses": [
                    _response(outputs[r.pk][index][2], version=r.model_version) for r in ordered
                ],
                "origin": {
                    "example_index": index,
                    "evaluation_examples": [outputs[r.pk][index][0] for r in ordered],
                },
            }
        )
    if not items:
        raise ValidationError(
            {"source_params": "These runs have no outputs on common examples to judge."}
        )
    return items, {"runs": run_ids}


def _parse_time(value: Any, field: str):
    if value in (None, ""):
        return None
    parsed = parse_datetime(value) if isinstance(value, str) else None
    if parsed is None:
        raise ValidationError({"source_params": f"{field} is not an ISO date and time."})
    if timezone.is_naive(parsed):
        parsed = timezone.make_aware(parsed, timezone.get_current_timezone())
    return parsed


def _items_from_requests(project: Project, params: dict) -> tuple[list[dict], dict]:
    """Answered requests of one endpoint (optionally: one version, a time range, thumbs down
    only), newest first, one response per item."""
    from serving.models import Endpoint, RequestLog, ResponseFeedback

    problems: dict[str, str] = {}
    try:
        endpoint = Endpoint.objects.get(project=project, pk=int(params.get("endpoint")))
    except (Endpoint.DoesNotExist, TypeError, ValueError):
        raise ValidationError({"source_params": "Choose an endpoint of this project."}) from None
    if not endpoint.store_text:
        raise ValidationError(
            {
                "source_params": f"{endpoint.name} stores no prompt or completion text "
                "(its store_text switch is off): its requests cannot be judged."
            }
        )
    since = _parse_time(params.get("since"), "since")
    until = _parse_time(params.get("until"), "until")
    if since and until and since >= until:
        problems["source_params"] = "since must be before until."
    limit = _clean_int(params.get("limit", 1000), "source_params", 1, MAX_ITEMS, "limit", problems)
    version_id = params.get("version")
    thumbs_down_only = bool(params.get("thumbs_down_only", False))
    if problems:
        raise ValidationError(problems)
    logs = RequestLog.objects.filter(
        endpoint=endpoint, status_code=200, prompt_text__isnull=False, completion_text__isnull=False
    ).exclude(completion_text="")
    if version_id not in (None, ""):
        try:
            version_id = int(version_id)
        except (TypeError, ValueError):
            raise ValidationError({"source_params": "version is not an id."}) from None
        logs = logs.filter(version_id=version_id)
    if since:
        logs = logs.filter(created_at__gte=since)
    if until:
        logs = logs.filter(created_at__lt=until)
    if thumbs_down_only:
        logs = logs.filter(
            response_id__in=ResponseFeedback.objects.filter(endpoint=endpoint, score=-1).values(
                "response_id"
            )
        )
    rows = list(
        logs.select_related("version__registered_model").order_by("-created_at", "-id")[:limit]
    )
    if not rows:
        raise ValidationError({"source_params": "No logged answered request matches the filter."})
    items = [
        {
            "prompt": log.prompt_text,
            "responses": [
                _response(
                    log.completion_text,
                    version=log.version,
                    label=str(log.version) if log.version else endpoint.name,
                )
            ],
            "origin": {"request_log": log.pk, "response_id": log.response_id},
        }
        for log in rows
    ]
    stored = {
        "endpoint": endpoint.pk,
        "version": version_id if version_id not in (None, "") else None,
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "thumbs_down_only": thumbs_down_only,
        "limit": limit,
    }
    return items, stored


def _upload_rows(upload) -> Iterator[tuple[int, dict]]:
    """(line number, row) of a JSONL or CSV file, read in a stream."""
    name = (getattr(upload, "name", "") or "").lower()
    upload.seek(0)
    text = io.TextIOWrapper(upload, encoding="utf-8-sig", newline="")
    try:
        if name.endswith(".csv"):
            reader = csv.DictReader(text)
            for row in reader:
                yield reader.line_num, row
            return
        for number, line in enumerate(text, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValidationError(
                    {"upload": f"Line {number} is not valid JSON ({exc.msg})."}
                ) from None
            if not isinstance(row, dict):
                raise ValidationError({"upload": f"Line {number} is not a JSON object."})
            yield number, row
    except UnicodeDecodeError:
        raise ValidationError({"upload": "The file is not UTF-8 text."}) from None
    finally:
        text.detach()


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _upload_item(row: dict, is_csv: bool) -> tuple[dict | None, str | None]:
    """The item of one row, or why the row is refused."""
    prompt = _text(row.get("prompt"))
    if prompt is None:
        return None, "the field prompt is missing or empty"
    if "response_a" in row or "response_b" in row:
        texts = [row.get("response_a"), row.get("response_b")]
        fields = ["response_a", "response_b"]
        labels = [row.get("model_a"), row.get("model_b")]
    elif row.get("responses") not in (None, ""):
        texts = row["responses"]
        if is_csv and isinstance(texts, str):
            try:
                texts = json.loads(texts)
            except json.JSONDecodeError:
                return None, "the field responses is not a JSON list"
        if not isinstance(texts, list) or not texts:
            return None, "the field responses must be a non-empty list of texts"
        fields = [f"responses[{i}]" for i in range(len(texts))]
        labels = row.get("models") if isinstance(row.get("models"), list) else []
    elif "response" in row:
        texts, fields, labels = [row.get("response")], ["response"], [row.get("model")]
    else:
        return None, "the fields response_a/response_b, responses or response are missing"
    for field, value in zip(fields, texts, strict=True):
        if _text(value) is None:
            return None, f"the field {field} is missing or empty"
    responses = []
    for i, value in enumerate(texts):
        label = labels[i] if i < len(labels) and _text(labels[i]) else "upload"
        responses.append({"text": value, "model_version_id": None, "label": label})
    return {"prompt": prompt, "responses": responses}, None


def _items_from_upload(upload) -> tuple[list[dict], dict]:
    if upload is None:
        raise ValidationError({"upload": "Upload a JSONL or CSV file of prompts with responses."})
    name = getattr(upload, "name", "") or ""
    if not name.lower().endswith((".jsonl", ".json", ".csv")):
        raise ValidationError({"upload": "The file must be JSONL (.jsonl) or CSV (.csv)."})
    size = getattr(upload, "size", None)
    if size is not None and size > MAX_UPLOAD_BYTES:
        raise ValidationError(
            {"upload": f"The file is larger than the limit of {MAX_UPLOAD_BYTES:,} bytes."}
        )
    is_csv = name.lower().endswith(".csv")
    items, errors = [], []
    for number, row in _upload_rows(upload):
        item, error = _upload_item(row, is_csv)
        if error:
            errors.append(f"Line {number}: {error}.")
            if len(errors) >= MAX_LINE_ERRORS:
                break
            continue
        item["origin"] = {"upload_line": number}
        items.append(item)
        if len(items) > MAX_ITEMS:
            raise ValidationError({"upload": f"The file has more than {MAX_ITEMS:,} items."})
    if errors:
        raise ValidationError({"upload": errors})
    if not items:
        raise ValidationError({"upload": "The file has no items."})
    return items, {"file_name": name, "items": len(items)}


def _check_items(task: str, items: list[dict]) -> None:
    """Every item has a prompt and responses that fit the task (one message for the first
    misfit: the source is usually uniform)."""
    for position, item in enumerate(items):
        prompt, responses = item.get("prompt"), item.get("responses")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValidationError({"items": f"Item {position} has no prompt."})
        if not isinstance(responses, list) or any(
            not isinstance(r, dict) or not isinstance(r.get("text"), str) for r in responses
        ):
            raise ValidationError({"items": f"Item {position}'s responses are not texts."})
        misfit = task_fit_message(task, len(responses))
        if misfit:
            raise ValidationError({"task": misfit})


def _build_items(project, task, source, source_params, upload) -> tuple[list[dict], dict]:
    if not isinstance(source_params, dict):
        raise ValidationError({"source_params": "Give the source's parameters as an object."})
    if source == ItemSource.EVALUATION:
        return _items_from_evaluation(project, source_params)
    if source == ItemSource.REQUESTS:
        return _items_from_requests(project, source_params)
    if source == ItemSource.UPLOAD:
        return _items_from_upload(upload)
    # VERSIONS: the generation job makes the items later (items_create).
    return [], dict(source_params)


def _item_rows(campaign: Campaign, items: list[dict], start: int) -> list[Item]:
    return [
        Item(
            campaign=campaign,
            index=start + position,
            prompt=item["prompt"],
            responses=[
                {
                    "text": r["text"],
                    "model_version_id": r.get("model_version_id"),
                    "label": r.get("label") or "",
                }
                for r in item["responses"]
            ],
            origin=item.get("origin") or {},
        )
        for position, item in enumerate(items)
    ]


# --- campaigns --------------------------------------------------------------------------------


def campaign_create(
    *,
    actor,
    project: Project,
    name: str,
    task: str,
    source: str,
    source_params: dict | None = None,
    instructions: str = "",
    criteria: Sequence[str] | None = None,
    overlap: int = 1,
    blind: bool = True,
    assignment_timeout_seconds: int = 1800,
    raters: Iterable | None = (),
    upload=None,
) -> Campaign:
    """A draft campaign with its raters and the items of its source (none yet for
    ``versions``: the generation job adds them)."""
    require(actor, project.team, Action.EDIT_PROJECT)
    problems: dict[str, Any] = {}
    name = _clean_name(project, name, problems)
    if task not in FeedbackTask.values:
        problems["task"] = f"Choose one of {', '.join(FeedbackTask.values)}."
    if source not in ItemSource.values:
        problems["source"] = f"Choose one of {', '.join(ItemSource.values)}."
    criteria = _clean_criteria(task, criteria, problems)
    overlap = _clean_overlap(overlap, problems)
    timeout = _clean_timeout(assignment_timeout_seconds, problems)
    if not isinstance(instructions, str):
        problems["instructions"] = "The instructions are text."
    users = _resolve_raters(project, raters if raters is not None else (), problems)
    _check_raters_cover_overlap(len(users), overlap, problems)
    if upload is not None and source != ItemSource.UPLOAD:
        problems["upload"] = "Only an upload campaign takes a file."
    items, stored_params = [], {}
    if "task" not in problems and "source" not in problems and "upload" not in problems:
        # The source is read (and an upload parsed) before any transaction opens.
        try:
            items, stored_params = _build_items(project, task, source, source_params or {}, upload)
            _check_items(task, items)
        except ValidationError as exc:
            problems.update(exc.message_dict)
    if problems:
        raise ValidationError(problems)
    campaign = Campaign(
        project=project,
        name=name,
        task=task,
        instructions=instructions,
        criteria=criteria,
        overlap=overlap,
        blind=bool(blind),
        assignment_timeout_seconds=timeout,
        source=source,
        source_params=stored_params,
        created_by=actor,
    )
    campaign.full_clean(validate_constraints=False)
    with transaction.atomic():
        try:
            with transaction.atomic():
                campaign.save()
        except IntegrityError:
            # Another manager took the name between the check and the save.
            raise ValidationError(
                {"name": f"The project already has a campaign named {name!r}."}
            ) from None
        CampaignRater.objects.bulk_create(CampaignRater(campaign=campaign, user=u) for u in users)
        Item.objects.bulk_create(_item_rows(campaign, items, 0), batch_size=BULK_BATCH)
        record_event(
            actor=actor,
            verb="feedback_campaign.created",
            target=campaign,
            changes={
                "task": task,
                "source": source,
                "items": len(items),
                "raters": [u.pk for u in users],
                "overlap": overlap,
            },
        )
    return campaign


def items_create(*, campaign: Campaign, items: list[dict]) -> int:
    """Append ``items`` (``{"prompt", "responses": [{"text", "model_version_id", "label"}],
    "origin"}``) to a campaign not closed; their indexes follow the last one. Returns how many.
    The generation job calls it (its actor checked when it was launched)."""
    _check_items(campaign.task, items)
    with transaction.atomic():
        locked = Campaign.objects.select_for_update().get(pk=campaign.pk)
        if locked.status == CampaignStatus.CLOSED:
            raise ValidationError("The campaign is closed: it takes no more items.")
        last = locked.items.aggregate(last=Max("index"))["last"]
        start = 0 if last is None else last + 1
        if start + len(items) > MAX_ITEMS:
            raise ValidationError(f"A campaign holds at most {MAX_ITEMS:,} items.")
        Item.objects.bulk_create(_item_rows(locked, items, start), batch_size=BULK_BATCH)
    return len(items)


def _locked(campaign: Campaign) -> Campaign:
    return Campaign.objects.select_for_update().select_related("project__team").get(pk=campaign.pk)


def _expire_active(assignments) -> int:
    """Expire active assignments, handing their items back to the queue (``taken``). Inside
    the caller's transaction; items are locked in id order, as the assignment service does."""
    rows = list(assignments.filter(status=AssignmentStatus.ACTIVE).values_list("pk", "item_id"))
    if not rows:
        return 0
    item_ids = sorted({item_id for _pk, item_id in rows})
    list(Item.objects.select_for_update().filter(pk__in=item_ids).order_by("pk").values("pk"))
    Assignment.objects.filter(pk__in=[pk for pk, _ in rows]).update(status=AssignmentStatus.EXPIRED)
    # Only human assignments count in ``taken``; an item's count drops once per assignment.
    human = set(
        Assignment.objects.filter(pk__in=[pk for pk, _ in rows], rater__isnull=False).values_list(
            "pk", flat=True
        )
    )
    counts: dict[int, int] = {}
    for pk, item_id in rows:
        if pk in human:
            counts[item_id] = counts.get(item_id, 0) + 1
    for item_id, n in counts.items():
        Item.objects.filter(pk=item_id, taken__gte=n).update(taken=F("taken") - n)
    return len(rows)


def campaign_update(*, actor, campaign: Campaign, **changes: Any) -> Campaign:
    """Change a campaign's settings. Before launch everything but the task and source may
    change; after launch only what leaves the collected judgments valid (instructions, name,
    timeout, a higher overlap, or a lower one no item is already past). A closed campaign
    does not change. Raters change through :func:`campaign_set_raters`."""
    require(actor, campaign.project.team, Action.EDIT_PROJECT)
    problems: dict[str, Any] = {}
    with transaction.atomic():
        if "raters" in changes:
            # In the same transaction: a refused setting undoes the raters' change too.
            campaign_set_raters(actor=actor, campaign=campaign, raters=changes.pop("raters"))
        locked = _locked(campaign)
        if locked.status == CampaignStatus.CLOSED:
            raise ValidationError("The campaign is closed: it cannot change.")
        launched = locked.status == CampaignStatus.ACTIVE
        for field in changes:
            if launched and field in WHY_NOT_AFTER_LAUNCH:
                problems[field] = WHY_NOT_AFTER_LAUNCH[field]
            elif field in ("task", "source", "source_params", "items"):
                problems[field] = (
                    f"The {field.replace('_', ' ')} cannot change: the items were built for it. "
                    "Create a new campaign instead."
                )
            elif field not in EDITABLE:
                problems[field] = "This field cannot be changed."
            elif launched and field not in SAFE_AFTER_LAUNCH:
                problems[field] = "This cannot change after launch."
        values: dict[str, Any] = {}
        if "name" in changes and "name" not in problems:
            values["name"] = _clean_name(
                locked.project, changes["name"], problems, exclude=locked.pk
            )
        if "instructions" in changes and "instructions" not in problems:
            if not isinstance(changes["instructions"], str):
                problems["instructions"] = "The instructions are text."
            else:
                values["instructions"] = changes["instructions"]
        if "criteria" in changes and "criteria" not in problems:
            values["criteria"] = _clean_criteria(locked.task, changes["criteria"], problems)
        if "blind" in changes and "blind" not in problems:
            values["blind"] = bool(changes["blind"])
        if "assignment_timeout_seconds" in changes and "assignment_timeout_seconds" not in problems:
            values["assignment_timeout_seconds"] = _clean_timeout(
                changes["assignment_timeout_seconds"], problems
            )
        if "overlap" in changes and "overlap" not in problems:
            overlap = _clean_overlap(changes["overlap"], problems)
            if "overlap" not in problems:
                most = locked.items.aggregate(most=Max("submitted"))["most"] or 0
                if overlap < most:
                    problems["overlap"] = (
                        f"An item already has {most} submitted judgments: the overlap cannot "
                        f"go below {most}."
                    )
                n_raters = locked.rater_rows.count()
                _check_raters_cover_overlap(n_raters, overlap, problems)
                if "raters" in problems:
                    problems["overlap"] = problems.pop("raters")
                values["overlap"] = overlap
        if problems:
            raise ValidationError(problems)
        diff = {k: [getattr(locked, k), v] for k, v in values.items() if getattr(locked, k) != v}
        if diff:
            for field, (_old, new) in diff.items():
                setattr(locked, field, new)
            locked.full_clean(validate_constraints=False)
            locked.save(update_fields=list(diff))
            record_event(actor=actor, verb="feedback_campaign.updated", target=locked, changes=diff)
    return locked


def campaign_set_raters(*, actor, campaign: Campaign, raters: Iterable) -> Campaign:
    """Make ``raters`` the campaign's human raters. A rater with submitted judgments cannot be
    removed (their labels are in the statistics); a removed rater's active assignments expire
    and their items return to the queue."""
    require(actor, campaign.project.team, Action.EDIT_PROJECT)
    problems: dict[str, Any] = {}
    users = _resolve_raters(campaign.project, raters, problems)
    if problems:
        raise ValidationError(problems)
    with transaction.atomic():
        locked = _locked(campaign)
        if locked.status == CampaignStatus.CLOSED:
            raise ValidationError("The campaign is closed: its raters cannot change.")
        current = set(locked.rater_rows.values_list("user_id", flat=True))
        wanted = [u.pk for u in users]
        removed = current - set(wanted)
        added = [pk for pk in wanted if pk not in current]
        with_labels = set(
            Judgment.objects.filter(
                item__campaign=locked, rater_id__in=removed, withdrawn_at__isnull=True
            ).values_list("rater_id", flat=True)
        )
        if with_labels:
            names = sorted(
                User.objects.filter(pk__in=with_labels).values_list("username", flat=True)
            )
            problems["raters"] = (
                f"{', '.join(names)} already submitted judgments in this campaign and cannot be "
                "removed."
            )
        _check_raters_cover_overlap(len(wanted), locked.overlap, problems)
        if problems:
            raise ValidationError(problems)
        if not removed and not added:
            return locked
        expired = 0
        if removed:
            expired = _expire_active(
                Assignment.objects.filter(item__campaign=locked, rater_id__in=removed)
            )
            CampaignRater.objects.filter(campaign=locked, user_id__in=removed).delete()
        CampaignRater.objects.bulk_create(
            CampaignRater(campaign=locked, user_id=pk) for pk in added
        )
        record_event(
            actor=actor,
            verb="feedback_campaign.raters_changed",
            target=locked,
            changes={"added": added, "removed": sorted(removed), "assignments_expired": expired},
        )
    return locked


def campaign_launch(*, actor, campaign: Campaign) -> Campaign:
    """Open a draft campaign to its raters: it needs items and enough raters for its overlap."""
    require(actor, campaign.project.team, Action.EDIT_PROJECT)
    with transaction.atomic():
        locked = _locked(campaign)
        if locked.status != CampaignStatus.DRAFT:
            raise ValidationError(
                f"Only a draft campaign can be launched; this one is {locked.status}."
            )
        problems: dict[str, Any] = {}
        if not locked.items.exists():
            problems["items"] = "The campaign has no items yet."
        _check_raters_cover_overlap(locked.rater_rows.count(), locked.overlap, problems)
        if problems:
            raise ValidationError(problems)
        locked.status = CampaignStatus.ACTIVE
        locked.launched_at = timezone.now()
        locked.save(update_fields=["status", "launched_at"])
        record_event(actor=actor, verb="feedback_campaign.launched", target=locked)
    return locked


def campaign_close(*, actor, campaign: Campaign) -> Campaign:
    """Close a campaign: no more assignments; the active ones expire (submitted judgments
    stay and count)."""
    require(actor, campaign.project.team, Action.EDIT_PROJECT)
    with transaction.atomic():
        locked = _locked(campaign)
        if locked.status == CampaignStatus.CLOSED:
            raise ValidationError("The campaign is already closed.")
        expired = _expire_active(Assignment.objects.filter(item__campaign=locked))
        locked.status = CampaignStatus.CLOSED
        locked.closed_at = timezone.now()
        locked.save(update_fields=["status", "closed_at"])
        record_event(
            actor=actor,
            verb="feedback_campaign.closed",
            target=locked,
            changes={"assignments_expired": expired},
        )
    return locked
