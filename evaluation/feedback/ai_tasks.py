"""Job runners of the AI raters (cpu queue) and of generations for a campaign (gpu queue: the
versions loaded here, or their endpoints called through the inference process).

Imported by ``evaluation.tasks`` (what Celery's autodiscovery loads), so the worker knows them.
"""

from __future__ import annotations

import logging
import random

from django.conf import settings as django_settings
from django.core.exceptions import ValidationError

from evaluation.feedback.models import AIRatingJob, GenerationJob, Judgment
from evaluation.feedback.runtime import judge
from evaluation.feedback.services.ai_raters import (
    ai_judgment_store,
    ai_rater_call_target,
    endpoint_call_target,
    generation_items_store,
    random_order,
)
from evaluation.feedback.services.labeling import campaign_criteria
from llmhub import storage
from llmhub.jobs import JobContext, job_runner
from llmhub.reporting import JobCancelled, JobInputError

logger = logging.getLogger(__name__)

JUDGE_TIMEOUT_SECONDS = 120.0
JUDGE_MAX_TOKENS = 256


def _judge_limits() -> tuple[float, int]:
    timeout = float(getattr(django_settings, "LLMHUB_JUDGE_TIMEOUT_SECONDS", JUDGE_TIMEOUT_SECONDS))
    max_tokens = int(getattr(django_settings, "LLMHUB_JUDGE_MAX_TOKENS", JUDGE_MAX_TOKENS))
    return timeout, max_tokens


@job_runner(AIRatingJob)
def run_ai_rating(job: AIRatingJob, ctx: JobContext) -> None:
    """The AI rater judges each item it has not judged yet (at most ``max_items``): responses in
    a random recorded order, one chat call each, the answer parsed into a judgment. An answer
    that cannot be read (or a failed call) counts as failed for that item; the job goes on."""
    import httpx

    rater = job.ai_rater
    campaign = rater.campaign
    try:
        base_url, model, headers = ai_rater_call_target(rater)
    except Exception as exc:  # a URL that no longer passes the check
        raise JobInputError(f"The AI rater's URL is refused: {exc}") from exc
    done = Judgment.objects.filter(ai_rater=rater).values("item_id")
    items = campaign.items.exclude(pk__in=done).exclude(assignments__ai_rater=rater)
    items = list(items.order_by("index")[: job.max_items] if job.max_items else items)
    total = len(items)
    timeout, max_tokens = _judge_limits()
    rng = random.Random(f"{job.pk}")
    criteria = campaign_criteria(campaign) if campaign.task == "rating" else []
    judged = unreadable = call_failed = 0
    last_call_error = ""
    ctx.progress(0.0, f"Judging {total} items")
    with httpx.Client(timeout=timeout, follow_redirects=False) as client:
        for n, item in enumerate(items):
            if ctx.should_stop():
                raise JobCancelled()
            order = random_order(len(item.responses), rng)
            prompt = judge.render_prompt(
                rater.judging_prompt,
                instructions=campaign.instructions,
                prompt=item.prompt,
                shown=[item.responses[i].get("text", "") for i in order],
                criteria=criteria,
            )
            try:
                answer = judge.call_judge(
                    base_url=base_url,
                    model=model,
                    prompt=prompt,
                    headers=headers,
                    max_tokens=max_tokens,
                    timeout=timeout,
                    client=client,
                )
                value = judge.parse_answer(campaign.task, answer, n=len(order), criteria=criteria)
                ai_judgment_store(ai_rater=rater, item=item, value=value, order=order)
            except judge.OpenAICallError as exc:
                call_failed += 1
                last_call_error = str(exc)
                logger.warning("Item %s: %s", item.index, exc)
            except (judge.UnreadableAnswer, ValidationError) as exc:
                # Unreadable, or read but refused by the labeling validator (out of range).
                unreadable += 1
                logger.info("Item %s: unreadable answer: %s", item.index, _reason(exc))
            else:
                judged += 1
            ctx.progress(
                (n + 1) / max(total, 1),
                f"{judged} judged, {unreadable + call_failed} failed of {n + 1}/{total}",
            )
            ctx.record(judged=judged)
    if total and call_failed == total:
        raise JobInputError(f"Every call to the judge failed; the last: {last_call_error}")
    message = _summary(judged, unreadable, call_failed, total)
    logger.info(message)
    ctx.set_summary(message)


def _reason(exc: Exception) -> str:
    return " ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)


def _summary(judged: int, unreadable: int, call_failed: int, total: int) -> str:
    failed = unreadable + call_failed
    parts = [f"{judged} of {total} items judged"]
    if failed:
        detail = []
        if unreadable:
            detail.append(f"{unreadable} unreadable answers")
        if call_failed:
            detail.append(f"{call_failed} failed calls")
        parts.append(f"{failed} failed ({', '.join(detail)})")
    return "; ".join(parts) + "."


def _model_dir(version):
    return storage.local_directory(version.files_prefix, version.files)


def _dataset_prompts(job: GenerationJob) -> list[str]:
    import pyarrow.parquet as pq

    from datasets_app.models import DatasetVersion
    from evaluation.feedback.services.ai_raters import MAX_GENERATION_PROMPTS

    version = DatasetVersion.objects.get(pk=job.settings["dataset_version"])
    column = job.settings["column"]
    table = pq.read_table(storage.local_copy(version.file), columns=[column])
    prompts = [p for p in table.column(column).to_pylist() if isinstance(p, str) and p.strip()]
    if not prompts:
        raise JobInputError(f"The column {column!r} of {version} has no text prompts.")
    return prompts[:MAX_GENERATION_PROMPTS]


def _version_responses(job: GenerationJob, prompts: list[str], ctx: JobContext):
    """Each prompt answered by each version, loaded here in turn."""
    from evaluation.feedback.runtime.generate import generate_versions
    from training.models import ModelVersion

    by_id = ModelVersion.objects.select_related("registered_model").in_bulk(job.version_ids)
    missing = [i for i in job.version_ids if i not in by_id]
    if missing:
        raise JobInputError(f"Model version(s) {missing} no longer exist.")
    versions = [by_id[i] for i in job.version_ids]
    texts = generate_versions(
        [_model_dir(v) for v in versions],
        prompts,
        max_new_tokens=int(job.settings.get("max_tokens", 64)),
        temperature=float(job.settings.get("temperature", 0.0)),
        reporter=ctx,
    )
    responses = [
        [
            {"text": texts[v][p], "model_version_id": version.pk, "label": str(version)}
            for v, version in enumerate(versions)
        ]
        for p in range(len(prompts))
    ]
    return responses, None, f"{len(versions)} versions", []


def _endpoint_responses(job: GenerationJob, prompts: list[str], ctx: JobContext):
    """Each prompt sent to each endpoint through the inference process; each response names
    the version that answered (the x-llmhub-version header: a canary may answer some). A
    prompt that any endpoint failed to answer gets no item."""
    from evaluation.feedback.runtime.generate import EndpointTarget, generate_through_endpoints
    from serving.models import Endpoint
    from training.models import ModelVersion

    by_id = Endpoint.objects.in_bulk(job.endpoint_ids)
    missing = [i for i in job.endpoint_ids if i not in by_id]
    if missing:
        raise JobInputError(f"Endpoint(s) {missing} no longer exist.")
    endpoints = [by_id[i] for i in job.endpoint_ids]
    targets = []
    for endpoint in endpoints:
        base_url, model, headers = endpoint_call_target(endpoint)
        targets.append(EndpointTarget(base_url, model, headers, name=endpoint.name))
    timeout, _max_tokens = _judge_limits()  # the AI raters' call timeout, for any such call
    answers, errors = generate_through_endpoints(
        targets,
        prompts,
        max_new_tokens=int(job.settings.get("max_tokens", 64)),
        temperature=float(job.settings.get("temperature", 0.0)),
        timeout=timeout,
        reporter=ctx,
    )
    answered = [p for p in range(len(prompts)) if all(a[p] is not None for a in answers)]
    if not answered:
        last = errors[-1] if errors else "no answer"
        raise JobInputError(f"No prompt was answered by every endpoint; the last error: {last}")
    version_ids = {int(a.version) for row in answers for a in row if a and a.version.isdigit()}
    versions = ModelVersion.objects.select_related("registered_model").in_bulk(version_ids)
    responses: list[list[dict] | None] = [None] * len(prompts)
    origins: list[dict] = [{} for _ in prompts]
    for p in answered:
        row = [answers[t][p] for t in range(len(endpoints))]
        responses[p] = [
            _answered_by(a, endpoint, versions) for a, endpoint in zip(row, endpoints, strict=True)
        ]
        origins[p] = {
            "endpoints": [e.pk for e in endpoints],
            "canary": [a.canary for a in row],
            "response_ids": [a.response_id for a in row],
        }
    return responses, origins, f"{len(endpoints)} endpoints", errors


def _answered_by(answer, endpoint, versions: dict) -> dict:
    """A response as an item holds it: the version that answered, else (an external engine's
    model) the endpoint."""
    version = versions.get(int(answer.version)) if answer.version.isdigit() else None
    if version is not None:
        return {"text": answer.text, "model_version_id": version.pk, "label": str(version)}
    return {"text": answer.text, "model_version_id": None, "label": f"{endpoint.name} (external)"}


@job_runner(GenerationJob)
def run_generation(job: GenerationJob, ctx: JobContext) -> None:
    """Generate each prompt with each version (loaded here, or through the endpoints that
    serve them), then add one item per prompt to the campaign."""
    prompts = list(job.prompts) if job.prompts else _dataset_prompts(job)
    if not job.prompts:
        ctx.record(prompts=prompts)
    produce = _endpoint_responses if job.endpoint_ids else _version_responses
    responses, origins, compared, errors = produce(job, prompts, ctx)
    if ctx.should_stop():
        raise JobCancelled()
    try:
        made = generation_items_store(
            job=job, prompts=prompts, responses=responses, origins=origins
        )
    except ValidationError as exc:  # the campaign was closed meanwhile, an item refused
        raise JobInputError(f"The items could not be added: {_reason(exc)}") from exc
    ctx.record(made=made)
    message = f"{made} items made from {len(prompts)} prompts x {compared}."
    if errors:
        message += (
            f" {len(prompts) - made} prompts got no item: {len(errors)} calls failed "
            f"(the last: {errors[-1]})."
        )
        logger.warning(message)
    else:
        logger.info(message)
    ctx.set_summary(message)
