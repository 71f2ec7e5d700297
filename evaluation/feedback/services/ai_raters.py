"""AI raters (RLAIF) and generations of several model versions for a campaign.

An AI rater is a model that judges a campaign's items through a job (``AIRatingJob``): an
endpoint of the deploy stage (called through the inference process with the internal token, as
the playground is) or any OpenAI-compatible base URL with a key. Its labels count for training
only once a manager approves it, with its agreement with the humans then on record.

A generation job (``GenerationJob``, gpu queue) makes a "versions" campaign's items: each prompt
answered by each of two or more model versions of the project.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from django.conf import settings as django_settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from evaluation.feedback.models import (
    MAX_RESPONSES_PER_ITEM,
    AIRater,
    AIRatingJob,
    Campaign,
    CampaignStatus,
    GenerationJob,
    Item,
    ItemSource,
    Judgment,
)
from evaluation.feedback.runtime.judge import DEFAULT_PROMPTS, PLACEHOLDERS, missing_placeholders
from llmhub.jobs import enqueue_job, requires_broker
from llmhub.net import check_public_url
from projects.audit import record_event
from projects.permissions import Action
from projects.services import require

MAX_AI_ITEMS = 100_000
MAX_GENERATION_PROMPTS = 2_000
MAX_PROMPT_CHARS = 20_000
GENERATION_SETTINGS = {
    # name: (type, minimum, maximum, default)
    "max_tokens": (int, 1, 2048, 64),
    "temperature": (float, 0.0, 2.0, 0.0),
}

__all__ = [
    "DEFAULT_PROMPTS",
    "PLACEHOLDERS",
    "ai_judgment_store",
    "ai_rater_approve",
    "ai_rater_create",
    "ai_rating_launch",
    "generation_items_store",
    "generation_launch",
]


def _error(field: str, message: str) -> ValidationError:
    return ValidationError({field: message})


def _audit(*, actor, verb: str, target, campaign: Campaign, changes: dict | None = None) -> None:
    project = campaign.project
    record_event(
        actor=actor, verb=verb, target=target, team=project.team, project=project, changes=changes
    )


# --- AI raters --------------------------------------------------------------------------------


def ai_rater_create(
    *,
    actor,
    campaign: Campaign,
    name: str,
    judging_prompt: str,
    endpoint=None,
    base_url: str = "",
    model: str = "",
    api_key: str = "",
) -> AIRater:
    """Add a model as a rater of ``campaign``: ``endpoint`` (one of the project's) or an
    OpenAI-compatible ``base_url`` (http(s), public unless LLMHUB_ALLOW_PRIVATE_URLS) with
    ``model`` and ``api_key``. ``judging_prompt`` uses {instructions}, {prompt}, {responses}."""
    project = campaign.project
    require(actor, project.team, Action.EDIT_PROJECT)
    name = (name or "").strip()
    if not name:
        raise _error("name", "Give the AI rater a name.")
    judging_prompt = (judging_prompt or "").strip()
    if not judging_prompt:
        raise _error(
            "judging_prompt",
            f"Give a judging prompt (the default for a {campaign.task} campaign is a good start).",
        )
    missing = missing_placeholders(judging_prompt)
    if missing:
        raise _error(
            "judging_prompt",
            "The judging prompt must contain "
            + ", ".join("{" + m + "}" for m in missing)
            + " (where the responses go); it may also use {instructions} and {prompt}.",
        )
    base_url, model, api_key = (base_url or "").strip(), (model or "").strip(), api_key or ""
    if endpoint is not None and base_url:
        raise _error("base_url", "Choose an endpoint or a base URL, not both.")
    if endpoint is None and not base_url:
        raise _error("endpoint", "Choose an endpoint of the project or give a base URL.")
    if endpoint is not None:
        if endpoint.project_id != project.pk:
            raise _error("endpoint", "The endpoint belongs to another project.")
        if getattr(endpoint, "archived_at", None) is not None:
            raise _error("endpoint", f"The endpoint {endpoint.name} is archived.")
        if model or api_key:
            raise _error("model", "An endpoint needs no model name or key: it is called as is.")
    else:
        base_url = check_public_url(base_url, field="base_url")
        if not model:
            raise _error("model", "Give the model name the URL serves (sent as `model`).")
    if AIRater.objects.filter(campaign=campaign, name=name).exists():
        raise _error("name", f"This campaign already has an AI rater named {name!r}.")
    rater = AIRater(
        campaign=campaign,
        name=name,
        endpoint=endpoint,
        base_url=base_url,
        model=model,
        api_key=api_key,
        judging_prompt=judging_prompt,
    )
    rater.full_clean()
    try:
        with transaction.atomic():
            rater.save()
    except IntegrityError:
        raise _error("name", f"This campaign already has an AI rater named {name!r}.") from None
    _audit(
        actor=actor,
        verb="ai_rater.created",
        target=rater,
        campaign=campaign,
        changes={"name": name, "endpoint": getattr(endpoint, "pk", None), "base_url": base_url},
    )
    return rater


@requires_broker
@transaction.atomic
def ai_rating_launch(*, actor, ai_rater: AIRater, max_items: int | None = None) -> AIRatingJob:
    """Queue a job in which ``ai_rater`` judges the campaign's items it has not judged yet (at
    most ``max_items``)."""
    campaign = ai_rater.campaign
    project = campaign.project
    require(actor, project.team, Action.EDIT_PROJECT)
    if max_items is not None and not 1 <= int(max_items) <= MAX_AI_ITEMS:
        raise _error("max_items", f"Give a number from 1 to {MAX_AI_ITEMS}, or none for all.")
    if campaign.status == CampaignStatus.CLOSED:
        raise _error("ai_rater", "The campaign is closed: nothing more is labelled.")
    if not campaign.items.exists():
        raise _error("ai_rater", "The campaign has no items to judge yet.")
    if AIRatingJob.objects.filter(ai_rater=ai_rater, status__in=("queued", "running")).exists():
        raise _error(
            "ai_rater", f"{ai_rater.name} is already judging (a job is queued or running)."
        )
    job = AIRatingJob(project=project, created_by=actor, ai_rater=ai_rater, max_items=max_items)
    job.full_clean()
    job.save()
    _audit(
        actor=actor,
        verb="ai_rating_job.launched",
        target=job,
        campaign=campaign,
        changes={"ai_rater": ai_rater.pk, "max_items": max_items},
    )
    enqueue_job(job)
    return job


def _human_judgments(campaign: Campaign):
    return Judgment.objects.filter(
        item__campaign=campaign, rater__isnull=False, withdrawn_at__isnull=True
    )


def _simple_agreement(ai_rater: AIRater) -> dict:
    """The share of the AI's judgments equal to a human's on the same item (a fallback when the
    campaign's statistics say nothing of this rater)."""
    ai = dict(
        Judgment.objects.filter(ai_rater=ai_rater, withdrawn_at__isnull=True).values_list(
            "item_id", "value"
        )
    )
    pairs = agree = 0
    for item_id, value in (
        _human_judgments(ai_rater.campaign)
        .filter(item_id__in=list(ai))
        .values_list("item_id", "value")
    ):
        mine = ai[item_id]
        key = next((k for k in ("choice", "ranking", "ratings") if k in value), None)
        pairs += 1
        agree += int(key is not None and value.get(key) == mine.get(key))
    return {"pairs": pairs, "agreement": agree / pairs if pairs else None}


def _agreement_on_record(ai_rater: AIRater) -> dict:
    """The AI's agreement with the humans as the campaign's statistics give it (G2's
    ``campaign_stats``), plus the raw share of equal labels."""
    record: dict = {"at": timezone.now().isoformat(), "simple": _simple_agreement(ai_rater)}
    try:
        from evaluation.feedback.stats import campaign_stats
    except ImportError:  # the statistics module is not there: the simple share stands alone
        return record
    stats = campaign_stats(ai_rater.campaign)
    record["campaign_stats"] = _ai_part(stats, ai_rater)
    return record


def _ai_part(stats: object, ai_rater: AIRater) -> object:
    """What ``stats`` (``campaign_stats``) says of ``ai_rater``: its row of the AI raters'
    agreement with the humans, beside the humans' agreement with each other."""
    block = stats.get("ai_raters") if isinstance(stats, dict) else None
    if not isinstance(block, dict):
        return None
    row = next(
        (
            r
            for r in block.get("raters") or []
            if isinstance(r, dict) and r.get("id") == ai_rater.pk
        ),
        None,
    )
    return _jsonable({"ai_rater": row, "humans": block.get("humans")})


def _jsonable(value: object) -> object:
    import json

    return json.loads(json.dumps(value, default=str))


@transaction.atomic
def ai_rater_approve(*, actor, ai_rater: AIRater, use_for_training: bool) -> AIRater:
    """Let ``ai_rater``'s labels count as training data (``use_for_training``), recording its
    agreement with the humans and who approved; or withdraw that. Approving needs human
    judgments on the items the AI judged, to compare with."""
    campaign = ai_rater.campaign
    require(actor, campaign.project.team, Action.EDIT_PROJECT)
    ai_rater = AIRater.objects.select_for_update().get(pk=ai_rater.pk)
    if use_for_training:
        judged = Judgment.objects.filter(ai_rater=ai_rater, withdrawn_at__isnull=True)
        if not judged.exists():
            raise _error(
                "use_for_training", f"{ai_rater.name} has judged nothing yet; run it first."
            )
        compared = _human_judgments(campaign).filter(item_id__in=judged.values("item_id"))
        if not compared.exists():
            raise _error(
                "use_for_training",
                "No human has judged the items this AI rater judged: there is no agreement to "
                "record. Approve it once people have labelled some of the same items.",
            )
        ai_rater.agreement_when_approved = _agreement_on_record(ai_rater)
        ai_rater.approved_by = actor
    else:
        ai_rater.agreement_when_approved = None
        ai_rater.approved_by = None
    ai_rater.use_for_training = bool(use_for_training)
    ai_rater.save(update_fields=["use_for_training", "agreement_when_approved", "approved_by"])
    _audit(
        actor=actor,
        verb="ai_rater.approved" if use_for_training else "ai_rater.unapproved",
        target=ai_rater,
        campaign=campaign,
        changes={
            "use_for_training": ai_rater.use_for_training,
            "agreement": ai_rater.agreement_when_approved,
        },
    )
    return ai_rater


def endpoint_call_target(endpoint) -> tuple[str, str, dict[str, str]]:
    """(base URL, model, headers) to call ``endpoint`` through the inference process, as the
    playground does: the internal token, for any endpoint of its project."""
    from serving.runner import internal_token

    base = django_settings.LLMHUB_SERVING_URL.rstrip("/") + "/v1"
    return (
        base,
        endpoint.slug,
        {
            "Authorization": f"Bearer {internal_token()}",
            "X-LLMHub-Project": str(endpoint.project_id),
        },
    )


def ai_rater_call_target(ai_rater: AIRater) -> tuple[str, str, dict[str, str]]:
    """(base URL, model, headers) the job calls: an endpoint through the inference process
    (internal token, any endpoint of the project), or the rater's own URL and key."""
    if ai_rater.endpoint_id is not None:
        return endpoint_call_target(ai_rater.endpoint)
    # Checked again at call time: the host's DNS answer may have changed since it was saved.
    base = check_public_url(ai_rater.base_url, field="base_url")
    headers = {"Authorization": f"Bearer {ai_rater.api_key}"} if ai_rater.api_key else {}
    return base, ai_rater.model, headers


def random_order(n: int, rng: random.Random) -> list[int]:
    order = list(range(n))
    rng.shuffle(order)
    return order


def ai_judgment_store(*, ai_rater: AIRater, item: Item, value: dict, order: Sequence[int]):
    """Record the AI's judgment of ``item`` (``value`` as it saw the responses, in ``order``)
    through the labeling service's one validator; raises ValidationError when the value is
    refused or the AI already judged the item."""
    from evaluation.feedback.services.labeling import ai_judgment_record

    return ai_judgment_record(ai_rater=ai_rater, item=item, value=value, order=list(order))


# --- generations ------------------------------------------------------------------------------


def _generation_settings(settings: dict | None) -> dict:
    settings = dict(settings or {})
    unknown = sorted(set(settings) - set(GENERATION_SETTINGS))
    if unknown:
        raise _error(
            "settings",
            f"Unknown setting(s) {', '.join(unknown)}; use {', '.join(GENERATION_SETTINGS)}.",
        )
    out = {}
    for name, (kind, low, high, default) in GENERATION_SETTINGS.items():
        raw = settings.get(name, default)
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise _error("settings", f"{name} must be a number.")
        if kind is int and raw != int(raw):
            raise _error("settings", f"{name} must be a whole number.")
        if not low <= raw <= high:
            raise _error("settings", f"{name} must be from {low} to {high}, not {raw}.")
        out[name] = kind(raw)
    return out


def _prompts(prompts: Sequence[str] | None, dataset_version, column: str) -> list[str]:
    if dataset_version is not None:
        if prompts:
            raise _error("prompts", "Give prompts or a dataset version's column, not both.")
        if not column:
            raise _error("column", "Name the column of prompts.")
        if column not in dataset_version.columns:
            raise _error(
                "column",
                f"{dataset_version} has no column {column!r}; it has "
                f"{', '.join(dataset_version.columns)}.",
            )
        return []  # read by the job (the file may be large; no slow I/O here)
    if not prompts or isinstance(prompts, str):
        raise _error("prompts", "Give a list of prompts (or a dataset version and its column).")
    cleaned = []
    for n, prompt in enumerate(prompts, start=1):
        if not isinstance(prompt, str) or not prompt.strip():
            raise _error("prompts", f"Prompt {n} is empty.")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise _error("prompts", f"Prompt {n} is longer than {MAX_PROMPT_CHARS} characters.")
        cleaned.append(prompt)
    if len(cleaned) > MAX_GENERATION_PROMPTS:
        raise _error("prompts", f"At most {MAX_GENERATION_PROMPTS} prompts per generation.")
    return cleaned


def _check_versions(versions: list, project) -> None:
    for version in versions:
        if version.project.pk != project.pk:
            raise _error("versions", f"{version} belongs to another project.")
        if not any(f in version.files for f in ("tokenizer.json", "tokenizer_config.json")):
            raise _error("versions", f"{version} has no tokenizer files; it cannot generate.")


def _check_endpoints(endpoints: list, project) -> None:
    """Each endpoint is the project's, live, and answers completions; no two serve only the
    same version (the items would compare a version with itself)."""
    from serving.engine.types import SERVE_GENERATE
    from serving.models import EngineKind
    from serving.selectors import serve_kind_for

    served: dict[int, str] = {}
    for endpoint in endpoints:
        if endpoint.project_id != project.pk:
            raise _error("endpoints", f"The endpoint {endpoint.name} belongs to another project.")
        if endpoint.archived_at is not None:
            raise _error("endpoints", f"The endpoint {endpoint.name} is archived.")
        if endpoint.engine == EngineKind.EXTERNAL:
            continue  # an external engine's model: whatever it serves, it generates
        version = endpoint.version
        if version is None:
            raise _error(
                "endpoints",
                f"The endpoint {endpoint.name} serves no version yet: promote one to it first.",
            )
        if serve_kind_for(version) != SERVE_GENERATE:
            raise _error(
                "endpoints",
                f"The endpoint {endpoint.name} serves {version}, which does not generate text "
                f"({version.get_task_kind_display().lower()}).",
            )
        if endpoint.canary_version_id is None:
            if version.pk in served:
                raise _error(
                    "endpoints",
                    f"The endpoints {served[version.pk]} and {endpoint.name} both serve "
                    f"{version}: the items would compare a version with itself.",
                )
            served[version.pk] = endpoint.name


@requires_broker
@transaction.atomic
def generation_launch(
    *,
    actor,
    campaign: Campaign,
    versions: Sequence | None = None,
    endpoints: Sequence | None = None,
    prompts: Sequence[str] | None = None,
    settings: dict | None = None,
    dataset_version=None,
    column: str = "",
) -> GenerationJob:
    """Queue the generation of ``prompts`` (or ``column`` of ``dataset_version``) by each of
    ``versions`` (two or more of the campaign's project, loaded by the job) or of
    ``endpoints`` (two or more of the project's, called through the inference process); the
    job adds one item per prompt."""
    project = campaign.project
    require(actor, project.team, Action.EDIT_PROJECT)
    if campaign.source != ItemSource.VERSIONS:
        raise _error(
            "campaign",
            f"{campaign.name} takes its items from {campaign.get_source_display().lower()}; "
            "generations go to a campaign whose source is model versions.",
        )
    if campaign.status == CampaignStatus.CLOSED:
        raise _error("campaign", "The campaign is closed: no items can be added.")
    versions, endpoints = list(versions or []), list(endpoints or [])
    if versions and endpoints:
        raise _error("endpoints", "Compare model versions or endpoints, not both.")
    field = "endpoints" if endpoints else "versions"
    compared = endpoints or versions
    what = "endpoints" if endpoints else "model versions"
    ids = [c.pk for c in compared]
    if len(set(ids)) < 2:
        raise _error(field, f"Choose two or more different {what} to compare.")
    if len(set(ids)) != len(ids):
        raise _error(field, f"{'An endpoint' if endpoints else 'A version'} is listed twice.")
    if len(ids) > MAX_RESPONSES_PER_ITEM:
        raise _error(field, f"At most {MAX_RESPONSES_PER_ITEM} {what} per item.")
    if campaign.task == "pairwise" and len(ids) != 2:
        raise _error(field, f"A pairwise campaign compares exactly two {what}.")
    if endpoints:
        _check_endpoints(endpoints, project)
    else:
        _check_versions(versions, project)
    if dataset_version is not None and dataset_version.dataset.project_id != project.pk:
        raise _error("dataset_version", "The dataset version belongs to another project.")
    cleaned = _prompts(prompts, dataset_version, (column or "").strip())
    settings = _generation_settings(settings)
    if dataset_version is not None:
        settings.update(dataset_version=dataset_version.pk, column=column.strip())
    job = GenerationJob(
        project=project,
        created_by=actor,
        campaign=campaign,
        version_ids=[] if endpoints else ids,
        endpoint_ids=ids if endpoints else [],
        prompts=cleaned,
        settings=settings,
    )
    job.full_clean()
    job.save()
    _audit(
        actor=actor,
        verb="generation_job.launched",
        target=job,
        campaign=campaign,
        changes={field: ids, "prompts": len(cleaned), "settings": settings},
    )
    enqueue_job(job)
    return job


def generation_items_store(
    *,
    job: GenerationJob,
    prompts: Sequence[str],
    responses: Sequence[Sequence[dict] | None],
    origins: Sequence[dict] | None = None,
) -> int:
    """Make one item per prompt from ``responses[p]`` (that prompt's ``{"text",
    "model_version_id", "label"}`` in the compared order; None: the prompt got no item),
    through the campaign service's ``items_create``; ``origins[p]`` adds to the item's origin.
    Returns how many were made."""
    items = [
        {
            "prompt": prompt,
            "responses": list(responses[p]),
            "origin": {
                "generation_job": job.pk,
                "prompt_index": p,
                **(origins[p] if origins else {}),
            },
        }
        for p, prompt in enumerate(prompts)
        if responses[p] is not None
    ]
    from evaluation.feedback.services.campaigns import items_create

    return items_create(campaign=job.campaign, items=items)
