"""Every write of the deploy stage: endpoints (create, change, archive), what they serve
(promote, roll back, canary), serving keys, the request log the inference process hands back,
feedback on responses, and the log's retention.

Plain functions with keyword-only arguments, as elsewhere: check the actor's role, validate
everything before writing (a bad request is a 400 with every reason, nothing half-written),
write in one short transaction, record an audit event. Checks that do slow I/O (resolving an
upstream's host, looking for a version's files in storage) run before the transaction opens.

Every change to what the inference process serves bumps ``Endpoint.revision`` and
``updated_at``; the runner polls them and rebuilds its snapshot.
"""

from __future__ import annotations

import math
import secrets
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone
from django.utils.text import slugify

from llmhub.models import JobStatus
from llmhub.net import check_public_url
from llmhub.services import update_instance
from projects.audit import record_event
from projects.models import Project
from projects.permissions import Action
from projects.services import hash_token, require
from serving.engine.types import FeedbackRecord, RequestRecord
from serving.models import (
    BUDGET_PERIOD_DAYS,
    SERVING_KEY_MAX_DAYS,
    Deployment,
    DeploymentAction,
    DeploymentRole,
    Endpoint,
    EndpointStage,
    EngineKind,
    FeedbackSource,
    KeyUsage,
    RequestLog,
    ResponseFeedback,
    ServingKey,
)
from serving.monitoring import rollups
from serving.selectors import previous_primary, promotion_blockers, serve_kind_for
from training.models import ModelVersion, Stage

KEY_PREFIX = "llmhub-sk"  # a visible label, not a secret
# Registry stages by rank: a promotion moves a version up to its endpoint's stage, never down.
STAGE_RANK = {Stage.ARCHIVED: 0, Stage.CANDIDATE: 1, Stage.STAGING: 2, Stage.PRODUCTION: 3}


def _error(field: str | None, message: str | list[str]) -> ValidationError:
    return ValidationError({field: message} if field else message)


def _bump(endpoint: Endpoint) -> list[str]:
    """Mark ``endpoint`` changed for the inference process; returns the fields to save."""
    endpoint.revision = (endpoint.revision or 0) + 1
    endpoint.updated_at = timezone.now()
    return ["revision", "updated_at"]


def _bump_project(project: Project) -> None:
    """Every endpoint of ``project`` changed (its keys did): the runner rebuilds its snapshot."""
    Endpoint.objects.filter(project=project).update(
        revision=F("revision") + 1, updated_at=timezone.now()
    )


def _locked(endpoint: Endpoint) -> Endpoint:
    return Endpoint.objects.select_for_update().select_related("project__team").get(pk=endpoint.pk)


def _fresh(endpoint: Endpoint) -> Endpoint:
    """The endpoint as stored now: the checks before the transaction must not trust an object
    the caller read earlier (another manager may have promoted since)."""
    return Endpoint.objects.select_related(
        "project__team", "version__registered_model", "canary_version__registered_model"
    ).get(pk=endpoint.pk)


# --- endpoints --------------------------------------------------------------------------------


def _check_engine(
    *, engine: str, upstream_url: str, upstream_model: str, upstream_api_key: str
) -> str:
    """The upstream URL as stored, after the checks of an engine's fields (all reported)."""
    problems: dict[str, str] = {}
    if engine == EngineKind.EXTERNAL:
        if not upstream_model.strip():
            problems["upstream_model"] = "Name the model the upstream serves (its `model`)."
        try:
            upstream_url = check_public_url(upstream_url, field="upstream_url").rstrip("/")
        except ValidationError as exc:
            problems.update({k: v[0] for k, v in exc.message_dict.items()})
    elif engine == EngineKind.LOCAL:
        for name, value in (
            ("upstream_url", upstream_url),
            ("upstream_model", upstream_model),
            ("upstream_api_key", upstream_api_key),
        ):
            if value:
                problems[name] = "Only an external engine has an upstream; leave it empty."
    else:
        problems["engine"] = f"Choose one of {', '.join(EngineKind.values)}."
    if problems:
        raise ValidationError(problems)
    return upstream_url


def endpoint_create(
    *,
    actor,
    project: Project,
    name: str,
    slug: str = "",
    stage: str = EndpointStage.STAGING,
    engine: str = EngineKind.LOCAL,
    upstream_url: str = "",
    upstream_model: str = "",
    upstream_api_key: str = "",
    store_text: bool = True,
    log_retention_days: int = 30,
) -> Endpoint:
    """Create an endpoint (serving nothing until a version is promoted to it, or forwarding to
    its upstream at once for an external engine). ``slug`` is what clients pass as ``model``;
    derived from the name when blank."""
    require(actor, project.team, Action.EDIT_PROJECT)
    name = (name or "").strip()
    upstream_url = _check_engine(
        engine=engine,
        upstream_url=(upstream_url or "").strip(),
        upstream_model=upstream_model or "",
        upstream_api_key=upstream_api_key or "",
    )
    with transaction.atomic():
        taken = Endpoint.objects.filter(project=project)
        if slug:
            if taken.filter(slug=slug).exists():
                raise _error("slug", f"The project already has an endpoint '{slug}'.")
        else:
            base = slugify(name)[:56] or "endpoint"
            slug, n = base, 2
            while taken.filter(slug=slug).exists():
                slug, n = f"{base}-{n}", n + 1
        endpoint = Endpoint(
            project=project,
            name=name,
            slug=slug,
            stage=stage,
            engine=engine,
            upstream_url=upstream_url,
            upstream_model=(upstream_model or "").strip(),
            upstream_api_key=upstream_api_key or "",
            store_text=store_text,
            log_retention_days=log_retention_days,
            created_by=actor,
        )
        endpoint.full_clean()
        try:
            with transaction.atomic():
                endpoint.save()
        except IntegrityError:  # the same slug, created a moment ago by someone else
            raise _error("slug", f"The project already has an endpoint '{slug}'.") from None
        if engine == EngineKind.EXTERNAL:
            _upstream_deployment(endpoint, actor)
        record_event(
            actor=actor,
            verb="endpoint.created",
            target=endpoint,
            changes={"slug": slug, "stage": stage, "engine": engine},
        )
    return endpoint


ENDPOINT_EDITABLE_FIELDS = (
    "name",
    "stage",
    "store_text",
    "log_retention_days",
    "upstream_url",
    "upstream_model",
    "upstream_api_key",
)
# Fields whose change the inference process must see.
UPSTREAM_FIELDS = {"upstream_url", "upstream_model", "upstream_api_key"}
SERVED_FIELDS = {"store_text", *UPSTREAM_FIELDS}


def endpoint_update(*, actor, endpoint: Endpoint, **changes: Any) -> Endpoint:
    """Change an endpoint's name, stage, privacy switch, retention or upstream. The upstream
    key is never written to the audit log (only that it changed). An endpoint moved to
    production takes the version it serves to production in the registry."""
    require(actor, endpoint.project.team, Action.EDIT_PROJECT)
    endpoint = _fresh(endpoint)
    unknown = set(changes) - set(ENDPOINT_EDITABLE_FIELDS)
    if unknown:
        raise _error(None, f"These fields cannot be changed: {', '.join(sorted(unknown))}.")
    if endpoint.archived_at is not None:
        raise _error(None, "This endpoint is archived; create a new one.")
    if "name" in changes:
        changes["name"] = (changes["name"] or "").strip()
    if UPSTREAM_FIELDS & set(changes):
        merged = {
            name: changes.get(name, getattr(endpoint, name))
            for name in ("upstream_url", "upstream_model", "upstream_api_key")
        }
        url = _check_engine(engine=endpoint.engine, **{k: v or "" for k, v in merged.items()})
        if "upstream_url" in changes:
            changes["upstream_url"] = url
    with transaction.atomic():
        endpoint = _locked(endpoint)

        def bump_if_served(instance: Endpoint, diff: dict) -> list[str]:
            return _bump(instance) if SERVED_FIELDS & set(diff) else []

        diff = update_instance(
            endpoint,
            changes,
            editable=ENDPOINT_EDITABLE_FIELDS,
            touch="updated_at",
            before_save=bump_if_served,
        )
        if {"upstream_url", "upstream_model"} & set(diff):
            # Another upstream is another thing served: a row in the history, as a promotion.
            _end(endpoint, DeploymentRole.PRIMARY, timezone.now())
            _upstream_deployment(endpoint, actor)
        if "stage" in diff and endpoint.version is not None:
            # The version it serves follows it up the registry, as a promotion there would.
            _move_registry_stage(
                actor=actor,
                endpoint=endpoint,
                version=endpoint.version,
                reason=f"{endpoint.name} became a {endpoint.stage} endpoint.",
            )
        if diff:
            if "upstream_api_key" in diff:
                diff["upstream_api_key"] = ["(hidden)", "(changed)"]
            record_event(actor=actor, verb="endpoint.updated", target=endpoint, changes=diff)
    return endpoint


def endpoint_archive(*, actor, endpoint: Endpoint) -> Endpoint:
    """Stop serving: the endpoint answers no request any more; its history, log and keys stay
    (the slug stays taken, so old clients get "archived", not another endpoint)."""
    require(actor, endpoint.project.team, Action.EDIT_PROJECT)
    with transaction.atomic():
        endpoint = _locked(endpoint)
        if endpoint.archived_at is not None:
            return endpoint
        now = timezone.now()
        Deployment.objects.filter(endpoint=endpoint, ended_at__isnull=True).update(ended_at=now)
        endpoint.archived_at = now
        endpoint.save(update_fields=["archived_at", *_bump(endpoint)])
        record_event(actor=actor, verb="endpoint.archived", target=endpoint)
    return endpoint


# --- what an endpoint serves: promote, roll back, canary --------------------------------------


def _files_missing(version: ModelVersion) -> list[str]:
    """The version's files that storage does not have (slow on remote storage: no
    transaction open)."""
    if not version.files:
        return ["(no files recorded)"]
    prefix = version.files_prefix
    return [name for name in version.files if not default_storage.exists(f"{prefix}/{name}")]


def _check_servable(endpoint: Endpoint, version: ModelVersion | None, *, field: str) -> None:
    """What no override lets through: another project's version, an archived or external
    endpoint, a version whose run failed, a kind the engine cannot serve, a version whose
    files are gone."""
    if version is None:
        raise _error(field, "Choose the model version to serve.")
    if endpoint.archived_at is not None:
        raise _error(None, f"{endpoint} is archived: it serves nothing any more.")
    if endpoint.engine == EngineKind.EXTERNAL:
        raise _error(
            field, f"{endpoint} forwards to an external engine; it serves no model version."
        )
    if version.registered_model.project_id != endpoint.project_id:
        raise _error(field, "The model version belongs to another project.")
    job = getattr(version, "produced_by", None)  # None for a version no job of ours made
    if job is not None and job.status in (JobStatus.FAILED, JobStatus.CANCELLED):
        raise _error(field, f"The run that made {version} {job.status}; it cannot be served.")
    if serve_kind_for(version) is None:
        raise _error(
            field,
            f"{version} is a '{version.get_task_kind_display()}' model, which the inference "
            "process does not serve yet.",
        )
    missing = _files_missing(version)
    if missing:
        raise _error(
            field,
            f"{version}'s files are missing from storage ({', '.join(missing[:5])}); it cannot "
            "be loaded.",
        )


def promotion_refusal(*, endpoint: Endpoint, version: ModelVersion) -> str | None:
    """Why no override lets ``version`` become ``endpoint``'s primary (for forms, before they
    post), or None. Reads storage: call it outside a transaction."""
    try:
        _check_servable(endpoint, version, field="version")
    except ValidationError as exc:
        return exc.messages[0]
    if endpoint.version_id == version.pk:
        return f"{version} is already serving on {endpoint}."
    return None


def _gate(version: ModelVersion, override_reason: str, *, field: str) -> list[str]:
    """The goal gate: the blockers, refused all at once unless an override reason is given."""
    blockers = promotion_blockers(version)
    if blockers and not (override_reason or "").strip():
        raise ValidationError({field: blockers})
    return blockers


def _deployment(
    endpoint: Endpoint,
    version: ModelVersion | None,
    role: str,
    action: str,
    actor,
    *,
    percent: int = 100,
    reason: str = "",
    gate_failures: list[str] | None = None,
    override_reason: str = "",
) -> Deployment:
    row = Deployment(
        endpoint=endpoint,
        version=version,
        role=role,
        action=action,
        traffic_percent=percent,
        reason=(reason or "").strip(),
        gate_failures=list(gate_failures or []),
        override_reason=(override_reason or "").strip() if gate_failures else "",
        started_by=actor if getattr(actor, "is_authenticated", False) else None,
    )
    row.full_clean()
    row.save()
    return row


def _upstream_deployment(endpoint: Endpoint, actor) -> Deployment:
    """The history row of an external endpoint's upstream (what it serves instead of a version)."""
    return _deployment(
        endpoint,
        None,
        DeploymentRole.PRIMARY,
        DeploymentAction.UPSTREAM,
        actor,
        reason=f"Upstream {endpoint.upstream_model} at {endpoint.upstream_url}.",
    )


def _end(endpoint: Endpoint, role: str, now) -> None:
    Deployment.objects.filter(endpoint=endpoint, role=role, ended_at__isnull=True).update(
        ended_at=now
    )


def _move_registry_stage(*, actor, endpoint: Endpoint, version: ModelVersion, reason: str) -> None:
    """Move ``version`` up to the endpoint's stage in the registry (a production endpoint makes
    it the production version, archiving the previous one); never down."""
    target = Stage.PRODUCTION if endpoint.stage == EndpointStage.PRODUCTION else Stage.STAGING
    # As stored now: another promotion may have archived it since the caller read it.
    current = ModelVersion.objects.filter(pk=version.pk).values_list("stage", flat=True).first()
    if STAGE_RANK[target] > STAGE_RANK.get(current, 0):
        from training.services import model_version_set_stage

        model_version_set_stage(actor=actor, version=version, stage=target, reason=reason)


def _make_primary(
    *,
    actor,
    endpoint: Endpoint,
    version: ModelVersion,
    action: str,
    reason: str,
    gate_failures: list[str] | None = None,
    override_reason: str = "",
) -> Deployment:
    """Inside the transaction, on the locked endpoint: end the current primary row, start one
    for ``version``; a canary of the same version ends (it is the primary now)."""
    now = timezone.now()
    _end(endpoint, DeploymentRole.PRIMARY, now)
    if endpoint.canary_version_id == version.pk:
        _end(endpoint, DeploymentRole.CANARY, now)
        endpoint.canary_version, endpoint.canary_percent = None, 0
    deployment = _deployment(
        endpoint,
        version,
        DeploymentRole.PRIMARY,
        action,
        actor,
        percent=100 - endpoint.canary_percent,
        reason=reason,
        gate_failures=gate_failures,
        override_reason=override_reason,
    )
    endpoint.version = version
    endpoint.save(update_fields=["version", "canary_version", "canary_percent", *_bump(endpoint)])
    label = f"{endpoint.name} ({endpoint.get_stage_display().lower()} endpoint)"
    _move_registry_stage(
        actor=actor,
        endpoint=endpoint,
        version=version,
        reason=(reason or "").strip() or f"Serving on {label}.",
    )
    return deployment


def endpoint_promote(
    *,
    actor,
    endpoint: Endpoint,
    version: ModelVersion,
    reason: str = "",
    override_reason: str = "",
) -> Deployment:
    """Make ``version`` the endpoint's primary version.

    Refused outright: another project's version, one the engine cannot serve, one whose files
    are missing, the version already serving. Gated: a version missing one of its project's
    goals (or unmeasured on it, or with training warnings) is refused with every reason, unless
    ``override_reason`` says why to go on; then the reasons and the override are kept on the
    deployment row and in the audit event (``endpoint.promoted_with_override``). The version
    moves up to the endpoint's stage in the registry."""
    require(actor, endpoint.project.team, Action.EDIT_PROJECT)
    endpoint = _fresh(endpoint)
    _check_servable(endpoint, version, field="version")
    if endpoint.version_id == version.pk:
        raise _error("version", f"{version} is already serving on {endpoint}.")
    blockers = _gate(version, override_reason, field="version")
    with transaction.atomic():
        endpoint = _locked(endpoint)
        if endpoint.version_id == version.pk:  # promoted a moment ago by someone else
            raise _error("version", f"{version} is already serving on {endpoint}.")
        before = str(endpoint.version) if endpoint.version_id else None
        deployment = _make_primary(
            actor=actor,
            endpoint=endpoint,
            version=version,
            action=DeploymentAction.PROMOTE,
            reason=reason,
            gate_failures=blockers,
            override_reason=override_reason,
        )
        changes: dict[str, Any] = {"version": [before, str(version)], "deployment": deployment.pk}
        if reason:
            changes["reason"] = reason.strip()
        if blockers:
            changes["gate_failures"] = blockers
            changes["override_reason"] = override_reason.strip()
        verb = "endpoint.promoted_with_override" if blockers else "endpoint.promoted"
        record_event(actor=actor, verb=verb, target=endpoint, changes=changes)
    return deployment


def endpoint_rollback(*, actor, endpoint: Endpoint, reason: str = "") -> Deployment:
    """Serve the previous primary version again (:func:`serving.selectors.previous_primary`),
    as a new deployment row (action "rollback"). The goal gate is not applied: that version
    served this endpoint before, and a rollback must work in an emergency; its files must
    still be in storage."""
    require(actor, endpoint.project.team, Action.EDIT_PROJECT)
    endpoint = _fresh(endpoint)
    target = previous_primary(endpoint)
    if target is None:
        raise _error(None, f"{endpoint} has no previous version to roll back to.")
    _check_servable(endpoint, target, field="version")
    with transaction.atomic():
        endpoint = _locked(endpoint)
        if previous_primary(endpoint) != target:
            raise _error(None, f"{endpoint} changed a moment ago; look again and retry.")
        before = str(endpoint.version) if endpoint.version_id else None
        deployment = _make_primary(
            actor=actor,
            endpoint=endpoint,
            version=target,
            action=DeploymentAction.ROLLBACK,
            reason=reason or f"Rolled back from {before}.",
        )
        record_event(
            actor=actor,
            verb="endpoint.rolled_back",
            target=endpoint,
            changes={
                "version": [before, str(target)],
                "deployment": deployment.pk,
                "reason": (reason or "").strip(),
            },
        )
    return deployment


def endpoint_set_canary(
    *,
    actor,
    endpoint: Endpoint,
    version: ModelVersion | None = None,
    percent: int = 0,
    reason: str = "",
    override_reason: str = "",
) -> Deployment | None:
    """Send ``percent`` (1-99) of the endpoint's requests to ``version``, gated like a promotion
    (override allowed); ``version`` None or ``percent`` 0 stops the canary (returns None).
    The canary must answer what the primary answers (the same serve kind)."""
    require(actor, endpoint.project.team, Action.EDIT_PROJECT)
    endpoint = _fresh(endpoint)
    stopping = version is None or percent == 0
    blockers: list[str] = []
    if not stopping:
        if isinstance(percent, bool) or not isinstance(percent, int) or not 1 <= percent <= 99:
            raise _error("percent", "Give a share of 1 to 99 percent (0 stops the canary).")
        _check_servable(endpoint, version, field="version")
        if endpoint.version is None:
            raise _error("version", "Promote a primary version first; a canary runs beside it.")
        if version.pk == endpoint.version_id:
            raise _error("version", f"{version} is the primary version already.")
        if serve_kind_for(version) != serve_kind_for(endpoint.version):
            raise _error(
                "version",
                f"{version} answers '{serve_kind_for(version)}' requests but the primary "
                f"{endpoint.version} answers '{serve_kind_for(endpoint.version)}'.",
            )
        blockers = _gate(version, override_reason, field="version")
    with transaction.atomic():
        endpoint = _locked(endpoint)
        before = [
            str(endpoint.canary_version) if endpoint.canary_version_id else None,
            endpoint.canary_percent,
        ]
        if stopping and endpoint.canary_version_id is None:
            return None  # nothing to stop
        if not stopping and version.pk == endpoint.version_id:
            raise _error("version", f"{version} is the primary version already.")
        now = timezone.now()
        _end(endpoint, DeploymentRole.CANARY, now)
        deployment = None
        if stopping:
            endpoint.canary_version, endpoint.canary_percent = None, 0
        else:
            deployment = _deployment(
                endpoint,
                version,
                DeploymentRole.CANARY,
                DeploymentAction.CANARY,
                actor,
                percent=percent,
                reason=reason,
                gate_failures=blockers,
                override_reason=override_reason,
            )
            endpoint.canary_version, endpoint.canary_percent = version, percent
        endpoint.save(update_fields=["canary_version", "canary_percent", *_bump(endpoint)])
        changes: dict[str, Any] = {
            "canary": [before, [str(version) if not stopping else None, endpoint.canary_percent]]
        }
        if reason:
            changes["reason"] = reason.strip()
        if blockers:
            changes["gate_failures"] = blockers
            changes["override_reason"] = override_reason.strip()
        record_event(actor=actor, verb="endpoint.canary_changed", target=endpoint, changes=changes)
    return deployment


# --- serving keys -----------------------------------------------------------------------------


def _check_limit(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _error(name, "Give a positive whole number, or leave it empty for no limit.")
    return value


def serving_key_create(
    *,
    actor,
    project: Project,
    name: str,
    endpoint: Endpoint | None = None,
    expires_in_days: int | None = None,
    requests_per_minute: int | None = None,
    tokens_per_minute: int | None = None,
    token_budget: int | None = None,
    budget_period: str = "month",
) -> tuple[ServingKey, str]:
    """Create a key for the whole project or one of its endpoints; returns it with its
    plaintext ("llmhub-sk-<prefix>-<secret>"), which is never stored (a sha256) or shown
    again."""
    require(actor, project.team, Action.EDIT_PROJECT)
    problems: dict[str, str] = {}
    if endpoint is not None and endpoint.project_id != project.pk:
        problems["endpoint"] = "The endpoint belongs to another project."
    # Bounded: a date past year 9999 is an OverflowError (timedelta), not a key.
    if expires_in_days is not None and (
        isinstance(expires_in_days, bool)
        or not isinstance(expires_in_days, int)
        or not 1 <= expires_in_days <= SERVING_KEY_MAX_DAYS
    ):
        problems["expires_in_days"] = f"Give 1 to {SERVING_KEY_MAX_DAYS} days (or empty: never)."
    limits = {}
    for field, value in (
        ("requests_per_minute", requests_per_minute),
        ("tokens_per_minute", tokens_per_minute),
        ("token_budget", token_budget),
    ):
        try:
            limits[field] = _check_limit(field, value)
        except ValidationError as exc:
            problems[field] = exc.message_dict[field][0]
    if budget_period not in BUDGET_PERIOD_DAYS:
        problems["budget_period"] = f"Choose one of {', '.join(BUDGET_PERIOD_DAYS)}."
    if problems:
        raise ValidationError(problems)
    prefix = secrets.token_hex(4)
    plaintext = f"{KEY_PREFIX}-{prefix}-{secrets.token_urlsafe(32)}"
    now = timezone.now()
    with transaction.atomic():
        key = ServingKey(
            project=project,
            endpoint=endpoint,
            name=(name or "").strip(),
            prefix=prefix,
            key_hash=hash_token(plaintext),
            budget_period=budget_period,
            created_by=actor,
            created_at=now,
            expires_at=now + timedelta(days=expires_in_days) if expires_in_days else None,
            **limits,
        )
        key.full_clean()
        key.save()
        _bump_project(project)
        record_event(
            actor=actor,
            verb="serving_key.created",
            target=key,
            changes={"prefix": prefix, "endpoint": endpoint.slug if endpoint else None},
        )
    return key, plaintext


def serving_key_revoke(*, actor, key: ServingKey) -> ServingKey:
    """Revoke a key at once (the inference process answers 401 "revoked" within a poll)."""
    require(actor, key.project.team, Action.EDIT_PROJECT)
    with transaction.atomic():
        key = ServingKey.objects.select_for_update().select_related("project__team").get(pk=key.pk)
        if key.revoked_at is None:
            key.revoked_at = timezone.now()
            key.save(update_fields=["revoked_at"])
            _bump_project(key.project)
            record_event(actor=actor, verb="serving_key.revoked", target=key)
    return key


# --- what the inference process hands back: the request log and API feedback ------------------


def _aware(epoch: float | None) -> datetime:
    if epoch is None or not isinstance(epoch, int | float) or not math.isfinite(epoch):
        return timezone.now()
    try:
        return datetime.fromtimestamp(epoch, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return timezone.now()


def _text(value: Any, limit: int | None = None) -> str:
    # PostgreSQL refuses NUL in text; a bad string from a client must not fail the batch.
    text = str(value or "").replace("\x00", "\ufffd")
    return text[:limit] if limit else text


def _optional_text(value: str | None) -> str | None:
    return None if value is None else _text(value)


def _count(value: Any, high: int = 2**31 - 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return 0
    return int(min(max(value, 0), high))


def _ms(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(max(value, 0.0))


def request_logs_ingest(*, records: list) -> int:
    """Write a batch from the inference process (a system write: no actor): request-log rows
    in one ``bulk_create``, each key's usage per UTC day (added with F() increments, so
    concurrent processes add up), ``last_used_at``, and feedback sent through the API.

    Never fails the batch for one record: a record naming an endpoint that no longer exists is
    dropped; a version or key that no longer exists is kept as null. Returns the number of
    request-log rows written."""
    requests = [r for r in records if isinstance(r, RequestRecord)]
    feedback = [r for r in records if isinstance(r, FeedbackRecord)]
    endpoint_ids = {r.endpoint_id for r in [*requests, *feedback] if r.endpoint_id}
    version_ids = {r.version_id for r in requests if r.version_id}
    key_ids = {r.key_id for r in [*requests, *feedback] if r.key_id}
    endpoints = set(Endpoint.objects.filter(pk__in=endpoint_ids).values_list("pk", flat=True))
    versions = set(ModelVersion.objects.filter(pk__in=version_ids).values_list("pk", flat=True))
    keys = set(ServingKey.objects.filter(pk__in=key_ids).values_list("pk", flat=True))

    rows, usage, last_used = [], defaultdict(lambda: [0, 0, 0]), {}
    for record in requests:
        if record.endpoint_id not in endpoints:
            continue
        created = _aware(record.created_at)
        key_id = record.key_id if record.key_id in keys else None
        row = RequestLog(
            response_id=_text(record.response_id, 64),
            created_at=created,
            endpoint_id=record.endpoint_id,
            version_id=record.version_id if record.version_id in versions else None,
            key_id=key_id,
            source=_text(record.source, 10) or "api",
            route=_text(record.route, 12),
            status_code=_count(record.status_code, 32767),
            error_code=_text(record.error_code, 64),
            latency_ms=_ms(record.latency_ms) or 0.0,
            ttft_ms=_ms(record.ttft_ms),
            prompt_tokens=_count(record.prompt_tokens),
            completion_tokens=_count(record.completion_tokens),
            cache_hit=bool(record.cache_hit),
            stream=bool(record.stream),
            canary=bool(record.canary),
            aborted=bool(record.aborted),
            finish_reason=_text(record.finish_reason, 16),
            prompt_text=_optional_text(record.prompt_text),
            completion_text=_optional_text(record.completion_text),
        )
        rows.append(row)
        if key_id is not None:
            day = usage[(key_id, created.date())]
            day[0] += 1
            day[1] += row.prompt_tokens
            day[2] += row.completion_tokens
            last_used[key_id] = max(last_used.get(key_id, created), created)
    thumbs = [
        ResponseFeedback(
            endpoint_id=record.endpoint_id,
            response_id=_text(record.response_id, 64),
            score=record.score,
            comment=_text(record.comment, 10_000),
            source=FeedbackSource.API,
            key_id=record.key_id if record.key_id in keys else None,
            created_at=_aware(record.created_at) if record.created_at else timezone.now(),
        )
        for record in feedback
        if record.endpoint_id in endpoints and record.score in (1, -1) and record.response_id
    ]
    with transaction.atomic():
        RequestLog.objects.bulk_create(rows, batch_size=500)
        rollups.add(rollups.deltas(rows, rollups.thumb_rows(thumbs)))
        for (key_id, day), (count, prompt, completion) in sorted(usage.items()):
            _add_usage(key_id, day, count, prompt, completion)
        for key_id, when in last_used.items():
            ServingKey.objects.filter(pk=key_id).filter(
                Q(last_used_at__isnull=True) | Q(last_used_at__lt=when)
            ).update(last_used_at=when)
        ResponseFeedback.objects.bulk_create(thumbs, batch_size=500)
    return len(rows)


def _add_usage(key_id: int, day, requests: int, prompt: int, completion: int) -> None:
    """Add to a key's usage of ``day``: an increment in the database, the row created on first
    use (another process creating it at the same moment: increment that one)."""
    increments = {
        "requests": F("requests") + requests,
        "prompt_tokens": F("prompt_tokens") + prompt,
        "completion_tokens": F("completion_tokens") + completion,
    }
    if KeyUsage.objects.filter(key_id=key_id, day=day).update(**increments):
        return
    try:
        with transaction.atomic():
            KeyUsage.objects.create(
                key_id=key_id,
                day=day,
                requests=requests,
                prompt_tokens=prompt,
                completion_tokens=completion,
            )
    except IntegrityError:
        KeyUsage.objects.filter(key_id=key_id, day=day).update(**increments)


def feedback_record(
    *,
    actor,
    endpoint: Endpoint,
    response_id: str,
    score: int,
    comment: str = "",
    source: str = FeedbackSource.PLAYGROUND,
) -> ResponseFeedback:
    """A thumbs up (+1) or down (-1) from a team member on one response (the playground, the
    REST API). The same person rating the same response again changes their rating."""
    require(actor, endpoint.project.team, Action.RUN_JOBS)
    problems = {}
    response_id = (response_id or "").strip()
    if not response_id:
        problems["response_id"] = "Give the id of the response (the `id` of the answer)."
    elif len(response_id) > 64:
        problems["response_id"] = "A response id has at most 64 characters."
    if isinstance(score, bool) or score not in (1, -1):
        problems["score"] = "Give 1 (thumbs up) or -1 (thumbs down)."
    if source not in FeedbackSource.values:
        problems["source"] = f"Choose one of {', '.join(FeedbackSource.values)}."
    if problems:
        raise ValidationError(problems)
    with transaction.atomic():
        feedback = (
            ResponseFeedback.objects.select_for_update()
            .filter(endpoint=endpoint, response_id=response_id, user=actor, source=source)
            .first()
        )
        created = feedback is None
        withdrawn = [] if created else rollups.thumb_rows([feedback])
        if created:
            feedback = ResponseFeedback(
                endpoint=endpoint, response_id=response_id, user=actor, source=source
            )
        feedback.score, feedback.comment = score, (comment or "").strip()
        feedback.created_at = timezone.now()
        feedback.full_clean()
        feedback.save()
        rollups.add(rollups.deltas(thumbs=rollups.thumb_rows([feedback]), withdrawn=withdrawn))
        record_event(
            actor=actor,
            verb="response_feedback.recorded",
            target=feedback,
            changes={"response_id": response_id, "score": score, "updated": not created},
        )
    return feedback


def request_logs_purge(*, now: datetime | None = None) -> int:
    """Delete request-log rows older than their endpoint's retention, and rollup rows older
    than their resolution's (a system write, run by the inference process's runner or a
    periodic task). Returns the number of log rows deleted."""
    now = now or timezone.now()
    by_days: dict[int, list[int]] = defaultdict(list)
    for pk, days in Endpoint.objects.values_list("pk", "log_retention_days"):
        by_days[days].append(pk)
    deleted = 0
    for days, ids in sorted(by_days.items()):
        count, _ = RequestLog.objects.filter(
            endpoint_id__in=ids, created_at__lt=now - timedelta(days=days)
        ).delete()
        deleted += count
    rollups.purge(now=now)  # rollups outlive the log: the dashboard's 90 days
    return deleted
