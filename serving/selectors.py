"""Reads of the deploy stage: endpoints, their history, serving keys with their usage, the
request log and feedback, scoped to the user's teams; plus the promotion gate and the figures
the endpoint page compares (primary against canary).

:func:`active_endpoints_for_serving` is the one unscoped read: the system (the inference
process's runner) reading what it must serve.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.db.models import (
    Case,
    Count,
    F,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
    Window,
)
from django.db.models.functions import Ceil, Coalesce, RowNumber
from django.utils import timezone

from projects.selectors import User, get_visible, visible_to
from serving.engine.types import SERVE_CLASSIFY, SERVE_EMBED, SERVE_GENERATE
from serving.models import (
    BUDGET_PERIOD_DAYS,
    Deployment,
    DeploymentRole,
    Endpoint,
    EngineKind,
    KeyUsage,
    RequestLog,
    ResponseFeedback,
    ServingKey,
)
from training.models import ModelVersion, TrainingKind

TEAM_PATH = "project__team"
VIA_ENDPOINT = "endpoint__project__team"

# What each training kind's versions answer; None: not served (yet). The one place this lives:
# the services refuse what is not servable, the runner picks the engine's backend from it.
SERVE_KINDS: dict[str, str | None] = {
    TrainingKind.PRETRAIN_CLM: SERVE_GENERATE,
    TrainingKind.SFT_CAUSAL: SERVE_GENERATE,
    # The generate backend decodes causal LMs only: a seq2seq version would be promoted and then
    # fail to load, so it is refused at promotion instead ("not served yet").
    TrainingKind.SEQ2SEQ: None,
    TrainingKind.CLASSIFICATION: SERVE_CLASSIFY,
    TrainingKind.PRETRAIN_MLM: SERVE_EMBED,
    TrainingKind.QA: None,  # extractive QA: no OpenAI-shaped route answers spans yet
    # Trained from feedback: DPO and KTO keep the causal LM they tuned; a reward model scores
    # a text (one output, no classes), which no OpenAI-shaped route answers.
    TrainingKind.DPO: SERVE_GENERATE,
    TrainingKind.KTO: SERVE_GENERATE,
    TrainingKind.REWARD_MODEL: None,
}


def serve_kind_for(version: ModelVersion) -> str | None:
    """``generate``, ``classify`` or ``embed`` for what ``version`` can answer; None when the
    inference process cannot serve its kind (seq2seq, extractive QA)."""
    return SERVE_KINDS.get(version.task_kind)


# --- endpoints and their history ----------------------------------------------------------------


def _requests_since(since: datetime, *, errors: bool = False) -> Subquery:
    logs = RequestLog.objects.filter(endpoint=OuterRef("pk"), created_at__gte=since)
    if errors:
        logs = logs.filter(status_code__gte=400)
    counted = logs.order_by().values("endpoint").annotate(n=Count("pk")).values("n")
    return Coalesce(Subquery(counted, output_field=IntegerField()), Value(0))


def endpoints_for_user(user: User) -> QuerySet[Endpoint]:
    """The user's endpoints, with ``requests_24h`` and ``errors_24h`` (the last 24 hours) and
    ``key_count`` (keys of the endpoint itself, revoked ones included) for lists."""
    since = timezone.now() - timedelta(hours=24)
    keys = (
        ServingKey.objects.filter(endpoint=OuterRef("pk"))
        .order_by()
        .values("endpoint")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return visible_to(
        Endpoint.objects.select_related(
            "project__team",
            "version__registered_model",
            "canary_version__registered_model",
            "created_by",
        ).annotate(
            requests_24h=_requests_since(since),
            errors_24h=_requests_since(since, errors=True),
            key_count=Coalesce(Subquery(keys, output_field=IntegerField()), Value(0)),
        ),
        user,
    )


def get_endpoint_for_user(user: User, pk) -> Endpoint:
    return get_visible(endpoints_for_user(user), user, pk)


def deployments_for_user(user: User) -> QuerySet[Deployment]:
    return visible_to(
        Deployment.objects.select_related(
            "endpoint__project__team", "version__registered_model", "started_by"
        ),
        user,
        team_path=VIA_ENDPOINT,
    )


def previous_primary(endpoint: Endpoint) -> ModelVersion | None:
    """The version a rollback would restore: that of the primary deployment before the current
    one (skipping rows of the same version and the upstream rows of an external engine)."""
    rows = (
        Deployment.objects.filter(endpoint=endpoint, role=DeploymentRole.PRIMARY)
        .select_related("version__registered_model__project")
        .order_by("-started_at", "-id")
    )
    current = endpoint.version_id
    for row in rows[:50]:  # a bounded look back: history rows of one version repeat rarely
        if row.version_id is not None and row.version_id != current:
            return row.version
    return None


def active_endpoints_for_serving() -> QuerySet[Endpoint]:
    """Every endpoint the inference process must serve: not archived, and with a version or an
    upstream. Not scoped to a user: the system (serving/runner.py) reads it for the inference
    process; never hand it to a view."""
    return (
        Endpoint.objects.filter(archived_at__isnull=True)
        .filter(
            Q(engine=EngineKind.LOCAL, version__isnull=False)
            | (Q(engine=EngineKind.EXTERNAL) & ~Q(upstream_url=""))
        )
        .select_related(
            "project__team",
            "version__registered_model",
            "canary_version__registered_model",
        )
        .order_by("id")
    )


# --- the promotion gate -----------------------------------------------------------------------


def _number(value: float, other: float) -> str:
    """``value`` to two decimals, or four where two would read the same as ``other``."""
    text = f"{value:.2f}"
    if value != other and text == f"{other:.2f}":
        text = f"{value:.4f}"
    return text


def promotion_blockers(version: ModelVersion) -> list[str]:
    """Why ``version`` may not be promoted without an override, all at once: each goal of its
    project that no evaluation of it measures, or that its latest measuring evaluation misses,
    and the warnings of its training run (a diverged loss). No goals: nothing blocks."""
    from evaluation.services import latest_run_for

    blockers = []
    for goal in version.project.goals.all().order_by("id"):
        run = latest_run_for(goal, version)
        value = run.value(goal.metric) if run is not None else None
        if value is None:
            blockers.append(
                f"No evaluation of {version} measures {goal.metric_label} on {goal.split}."
            )
        elif not goal.is_met_by(value):
            blockers.append(
                f"{goal.metric_label} on {goal.split} is {_number(value, goal.target)}; "
                f"the goal is {goal.comparison} {_number(goal.target, value)}."
            )
    for warning in version.warnings or []:
        message = warning.get("message") if isinstance(warning, dict) else str(warning)
        blockers.append(f"{version} finished training with a warning: {message}")
    return blockers


# --- serving keys and their usage -------------------------------------------------------------

# Budget periods are fixed windows in UTC days: a day; a week from Monday; 30 days counted from
# 1970-01-01. The same for every key, so one query sums every key's current period.
_EPOCH = date(1970, 1, 1)
_MONDAY = date(1970, 1, 5)


def budget_window(period: str, *, today: date | None = None) -> tuple[date, date]:
    """(first day, day after the last) of the current ``period`` ("day", "week", "month")."""
    today = today or timezone.now().date()
    days = BUDGET_PERIOD_DAYS[period]
    origin = _MONDAY if period == "week" else _EPOCH
    start = origin + timedelta(days=((today - origin).days // days) * days)
    return start, start + timedelta(days=days)


def budget_resets_at(period: str, *, today: date | None = None) -> datetime:
    """When the current ``period`` ends (midnight UTC)."""
    _start, end = budget_window(period, today=today)
    return datetime(end.year, end.month, end.day, tzinfo=UTC)


def _usage_sum(expression, *, since: date | None = None) -> Coalesce:
    usage = KeyUsage.objects.filter(key=OuterRef("pk"))
    if since is not None:
        usage = usage.filter(day__gte=since)
    summed = usage.order_by().values("key").annotate(total=Sum(expression)).values("total")
    return Coalesce(Subquery(summed, output_field=IntegerField()), Value(0))


def annotate_key_usage(queryset: QuerySet[ServingKey], *, today: date | None = None):
    """``queryset`` with ``period_tokens`` and ``period_requests`` (the key's current budget
    period) and ``total_tokens`` and ``total_requests`` (all time), in the same query."""
    tokens = F("prompt_tokens") + F("completion_tokens")

    def by_period(expression) -> Case:
        return Case(
            *[
                When(
                    budget_period=period,
                    then=_usage_sum(expression, since=budget_window(period, today=today)[0]),
                )
                for period in BUDGET_PERIOD_DAYS
            ],
            default=Value(0),
            output_field=IntegerField(),
        )

    return queryset.annotate(
        period_tokens=by_period(tokens),
        period_requests=by_period(F("requests")),
        total_tokens=_usage_sum(tokens),
        total_requests=_usage_sum(F("requests")),
    )


def serving_keys_for_user(user: User) -> QuerySet[ServingKey]:
    return visible_to(
        annotate_key_usage(
            ServingKey.objects.select_related("project__team", "endpoint", "created_by")
        ),
        user,
    )


def get_serving_key_for_user(user: User, pk) -> ServingKey:
    return get_visible(serving_keys_for_user(user), user, pk)


def key_usage(key: ServingKey, *, days: int = 90) -> list[dict[str, Any]]:
    """What ``key`` used per UTC day, newest first, for the last ``days`` days."""
    since = timezone.now().date() - timedelta(days=days - 1)
    return [
        {**row, "total_tokens": row["prompt_tokens"] + row["completion_tokens"]}
        for row in KeyUsage.objects.filter(key=key, day__gte=since)
        .order_by("-day")
        .values("day", "requests", "prompt_tokens", "completion_tokens")
    ]


# --- the request log, feedback and the endpoint's figures --------------------------------------


def request_logs_for_user(user: User) -> QuerySet[RequestLog]:
    return visible_to(
        RequestLog.objects.select_related(
            "endpoint__project__team", "version__registered_model", "key"
        ),
        user,
        team_path=VIA_ENDPOINT,
    )


def feedback_for_user(user: User) -> QuerySet[ResponseFeedback]:
    return visible_to(
        ResponseFeedback.objects.select_related("endpoint__project__team", "user", "key"),
        user,
        team_path=VIA_ENDPOINT,
    )


def _percentiles(logs: QuerySet[RequestLog], partition: str, fraction: float) -> dict[Any, float]:
    """The nearest-rank ``fraction`` percentile of ``latency_ms`` per value of ``partition``,
    in one query: no database here has a portable percentile function, so rows are numbered
    by latency within their group (a window) and the one at rank ceil(fraction * n) is read."""
    ranked = (
        logs.order_by()
        .annotate(
            rank=Window(RowNumber(), partition_by=[F(partition)], order_by=F("latency_ms").asc()),
            n=Window(Count("pk"), partition_by=[F(partition)]),
        )
        .filter(rank=Ceil(F("n") * fraction))
        .values_list(partition, "latency_ms")
    )
    return dict(ranked)


def version_stats(endpoint: Endpoint, *, since: datetime) -> list[dict[str, Any]]:
    """Per version that served ``endpoint`` since ``since`` (and its current primary and canary,
    even without traffic): requests, errors (status >= 400), p50/p95 latency, mean time to first
    token, tokens, cache hits, thumbs up and down. Primary first, then canary, then the rest.
    Five queries whatever the traffic: the grouped aggregate, two percentiles, feedback and
    the versions' names."""
    logs = RequestLog.objects.filter(endpoint=endpoint, created_at__gte=since)
    grouped = {
        row["version_id"]: row
        for row in logs.order_by()
        .values("version_id")
        .annotate(
            requests=Count("pk"),
            errors=Count("pk", filter=Q(status_code__gte=400)),
            cache_hits=Count("pk", filter=Q(cache_hit=True)),
            prompt_tokens=Coalesce(Sum("prompt_tokens"), 0),
            completion_tokens=Coalesce(Sum("completion_tokens"), 0),
            ttft_sum=Sum("ttft_ms"),
            ttft_n=Count("ttft_ms"),
        )
    }
    p50 = _percentiles(logs, "version_id", 0.50)
    p95 = _percentiles(logs, "version_id", 0.95)
    thumbs: dict[int | None, list[int]] = {}
    feedback = ResponseFeedback.objects.filter(endpoint=endpoint, created_at__gte=since)
    version_of = dict(
        logs.filter(response_id__in=feedback.values("response_id"))
        .order_by()
        .values_list("response_id", "version_id")
    )
    for response_id, score in feedback.values_list("response_id", "score"):
        if response_id in version_of:
            up_down = thumbs.setdefault(version_of[response_id], [0, 0])
            up_down[0 if score > 0 else 1] += 1

    roles: dict[int | None, str] = {}
    if endpoint.version_id:
        roles[endpoint.version_id] = DeploymentRole.PRIMARY
    if endpoint.canary_version_id:
        roles[endpoint.canary_version_id] = DeploymentRole.CANARY
    ids = list(roles) + [v for v in grouped if v not in roles]
    labels = {
        v.pk: str(v)
        for v in ModelVersion.objects.filter(pk__in=[i for i in ids if i]).select_related(
            "registered_model"
        )
    }
    stats = []
    for version_id in ids:
        row = grouped.get(version_id, {})
        count = row.get("requests", 0)
        up, down = thumbs.get(version_id, [0, 0])
        stats.append(
            {
                "version_id": version_id,
                "label": labels.get(version_id, "upstream" if version_id is None else "deleted"),
                "role": roles.get(version_id, "previous"),
                "requests": count,
                "errors": row.get("errors", 0),
                "error_rate": row.get("errors", 0) / count if count else None,
                "p50_latency_ms": p50.get(version_id),
                "p95_latency_ms": p95.get(version_id),
                "mean_ttft_ms": row["ttft_sum"] / row["ttft_n"] if row.get("ttft_n") else None,
                "prompt_tokens": row.get("prompt_tokens", 0),
                "completion_tokens": row.get("completion_tokens", 0),
                "cache_hits": row.get("cache_hits", 0),
                "thumbs_up": up,
                "thumbs_down": down,
            }
        )
    return stats


def endpoint_summaries(endpoints: list[Endpoint], *, since: datetime) -> dict[int, dict]:
    """For a list page: per endpoint id, its requests, errors and p95 latency since ``since``,
    in two queries whatever the number of endpoints."""
    ids = [e.pk for e in endpoints]
    logs = RequestLog.objects.filter(endpoint_id__in=ids, created_at__gte=since)
    summaries = {
        pk: {"requests": 0, "errors": 0, "error_rate": None, "p95_latency_ms": None} for pk in ids
    }
    p95 = _percentiles(logs, "endpoint_id", 0.95) if ids else {}
    for row in (
        logs.order_by()
        .values("endpoint_id")
        .annotate(requests=Count("pk"), errors=Count("pk", filter=Q(status_code__gte=400)))
    ):
        pk, count = row["endpoint_id"], row["requests"]
        summaries[pk] = {
            "requests": count,
            "errors": row["errors"],
            "error_rate": row["errors"] / count if count else None,
            "p95_latency_ms": p95.get(pk),
        }
    return summaries
