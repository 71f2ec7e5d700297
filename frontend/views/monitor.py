"""The Monitor stage pages: the tab (every endpoint's last 24 hours, its open alerts and latest
drift result), an endpoint's monitor page (traffic charts read from the rollups over a chosen
range, live while the range ends now; drift statistics over time with their thresholds and the
latest report; alerts with acknowledge, resolve and retrain; webhook deliveries; the monitor
settings) and its request log (filtered, paginated)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from datasets_app import selectors as data_selectors
from frontend import charts
from frontend.forms_monitor import MonitorSettingsForm, RangeForm, RequestLogFilterForm
from frontend.views.helpers import project_context, run_action
from projects.models import Project
from projects.permissions import Action
from projects.selectors import get_visible, projects_for_user
from serving import selectors as serving_selectors
from serving.models import Endpoint
from serving.monitoring import alert_selectors, alerts, dashboard, retrain, webhooks
from serving.monitoring import selectors as monitor_selectors
from serving.monitoring import services as monitor_services
from serving.monitoring.models import AlertState

# The Monitor tab's figures cover the last day, as the Deploy tab's.
OVERVIEW_WINDOW = timedelta(hours=24)
LOG_PAGE_SIZE = 50
RESOLVED_SHOWN = 20
DELIVERIES_SHOWN = 20
RECENT_CHECKS = 5
# The monitor page redraws its charts this often while its range ends now (milliseconds).
LIVE_INTERVAL_MS = 5000


def _work_project(request: HttpRequest, pk: int) -> Project:
    return get_visible(
        projects_for_user(request.user), request.user, pk, team_path="team", action=Action.VIEW_WORK
    )


def _endpoint(request: HttpRequest, pk: int, endpoint_pk: int) -> Endpoint:
    """The endpoint, among those the user sees, in project ``pk`` (else 404)."""
    endpoint = serving_selectors.get_endpoint_for_user(request.user, endpoint_pk)
    if endpoint.project_id != pk:
        raise Http404("No such endpoint in this project.")
    return endpoint


# --- the Monitor tab -------------------------------------------------------------------------


@login_required
def monitor_stage(request: HttpRequest, pk: int) -> HttpResponse:
    project = _work_project(request, pk)
    endpoints = list(
        serving_selectors.endpoints_for_user(request.user).filter(project=project, archived_at=None)
    )
    # Every endpoint's totals, alerts and latest drift job: three queries, however many.
    totals = dashboard.endpoints_overview(endpoints, since=timezone.now() - OVERVIEW_WINDOW)
    unresolved = alert_selectors.unresolved_by_endpoint([e.pk for e in endpoints])
    drift = monitor_selectors.latest_drift_jobs(request.user, endpoints)
    for endpoint in endpoints:
        endpoint.totals = totals.get(endpoint.pk) or {}
        endpoint.open_alerts = unresolved.get(endpoint.pk, [])
        endpoint.latest_drift = drift.get(endpoint.pk)
    context = project_context(request, project, "monitor")
    context.update(endpoints=endpoints)
    return render(request, "frontend/monitor/stage.html", context)


# --- an endpoint's monitor page --------------------------------------------------------------


def _served_versions(user, endpoint: Endpoint) -> list[tuple[int, str]]:
    """The versions that served the endpoint (its deployments' and the current ones)."""
    seen: dict[int, str] = {}
    for version in (endpoint.version, endpoint.canary_version):
        if version is not None:
            seen[version.pk] = str(version)
    deployed = (
        serving_selectors.deployments_for_user(user)
        .filter(endpoint=endpoint)
        .select_related("version__registered_model")
        .order_by("-started_at")
    )
    for deployment in deployed:
        seen.setdefault(deployment.version_id, str(deployment.version))
    return list(seen.items())


def _traffic_figures(data: dict[str, Any]) -> dict[str, dict]:
    """The page's traffic charts from ``dashboard.endpoint_dashboard``'s answer."""
    series, time_range = data["series"], data["range"]
    empty = data.get("message") or "No requests in this range"
    if data.get("empty"):
        # Every bucket is a point, zeros included: with no request at all, say so instead.
        series = []
    common = {"time_range": time_range, "empty_text": empty}
    return {
        "requests": charts.monitor_chart(
            series,
            [("requests_per_minute", "requests/min")],
            title="Requests per minute",
            y_title="requests/min",
            **common,
        ),
        "latency": charts.monitor_chart(
            series,
            [("latency_p50", "p50"), ("latency_p95", "p95"), ("latency_p99", "p99")],
            title="Latency (p50, p95, p99)",
            y_title="ms",
            **common,
        ),
        "ttft": charts.monitor_chart(
            series,
            [("ttft_p50", "p50"), ("ttft_p95", "p95")],
            title="Time to first token (p50, p95)",
            y_title="ms",
            **{**common, "empty_text": "No streamed answers in this range"},
        ),
        "tokens": charts.monitor_chart(
            series,
            [("tokens_per_second", "tokens/s")],
            title="Tokens per second",
            y_title="tokens/s",
            **common,
        ),
        "errors": charts.monitor_status_chart(
            series, title="Errors, rate-limited and rejected", time_range=time_range
        ),
        "cache": charts.monitor_chart(
            series,
            [("cache_hit_rate", "cache hit rate")],
            title="Cache hit rate",
            share=True,
            **common,
        ),
        "feedback": charts.monitor_chart(
            series,
            [("feedback_score", "thumbs up")],
            title="Feedback score (share of thumbs up)",
            share=True,
            **{**common, "empty_text": "No thumbs in this range"},
        ),
    }


def _dashboard(endpoint: Endpoint, form: RangeForm) -> dict[str, Any]:
    time_range = dashboard.resolve_range(range_name=form.range_name())
    return dashboard.endpoint_dashboard(
        endpoint, time_range=time_range, version_id=form.version_id()
    )


def _drift_figures(history: dict[str, list[dict]]) -> list[dict[str, Any]]:
    return [
        {"name": name, "figure": charts.drift_chart(name, points), "last": points[-1]}
        for name, points in sorted(history.items())
        if points
    ]


def _reference_choices(user, endpoint: Endpoint) -> list[tuple[int, str]]:
    versions = data_selectors.versions_for_user(user).filter(
        dataset__project__team=endpoint.project.team_id
    )
    return [(v.pk, f"{v.dataset.project.name} / {v}") for v in versions]


def _settings_form(request: HttpRequest, endpoint: Endpoint, data=None) -> MonitorSettingsForm:
    monitor = monitor_services.monitor_settings_get(endpoint=endpoint)
    # The default reference (the serving version's training data), named in the select.
    reference, reason = monitor_selectors.reference_for(endpoint, default=True)
    default = f"Default: {reference}, the training data" if reference else "Default: none"
    if reason:
        default += f" ({reason})"
    return MonitorSettingsForm(
        data,
        settings=monitor,
        references=_reference_choices(request.user, endpoint),
        default_label=default,
        # The defaults a drift job really uses, as the API's drift-settings-schema gives them.
        schema=monitor_services.drift_settings_schema(),
    )


def _endpoint_page(
    request: HttpRequest,
    endpoint: Endpoint,
    *,
    settings_form: MonitorSettingsForm | None = None,
    status: int = 200,
) -> HttpResponse:
    project = endpoint.project
    versions = _served_versions(request.user, endpoint)
    range_form = RangeForm(request.GET or None, versions=versions)
    data = _dashboard(endpoint, range_form)
    since = datetime.fromisoformat(data["range"]["start"])
    endpoint_alerts = (
        alert_selectors.alerts_for_user(request.user)
        .filter(endpoint=endpoint)
        .select_related("retrain_dataset_version__dataset")  # each row links its retrain data
    )
    deliveries = alert_selectors.deliveries_for_user(request.user).filter(endpoint=endpoint)
    latest = monitor_selectors.latest_drift_job(endpoint)
    # The newest checks whatever their state: a queued or running one is followed live (the
    # page reloads when it ends), a failed one shows why.
    recent_checks = monitor_selectors.drift_jobs_for_user(request.user).filter(endpoint=endpoint)
    context = project_context(request, project, "monitor")
    figures = _traffic_figures(data)
    context.update(
        endpoint=endpoint,
        range_form=range_form,
        dashboard=data,
        figures=figures,
        figure_ids=list(figures),
        drift=_drift_figures(monitor_selectors.drift_history(endpoint, since=since)),
        latest_drift=latest,
        recent_checks=list(recent_checks.order_by("-created_at", "-id")[:RECENT_CHECKS]),
        drift_checks=(latest.report or {}).get("checks", []) if latest else [],
        unresolved=list(endpoint_alerts.exclude(state=AlertState.RESOLVED)),
        resolved=list(endpoint_alerts.filter(state=AlertState.RESOLVED)[:RESOLVED_SHOWN]),
        deliveries=list(deliveries[:DELIVERIES_SHOWN]),
        settings_form=settings_form or _settings_form(request, endpoint),
        settings_open=settings_form is not None,
        # Live while the range ends now (every named range does).
        live=True,
        live_interval_ms=LIVE_INTERVAL_MS,
        data_url=reverse("monitor-endpoint-data", args=[project.pk, endpoint.pk]),
        log_url=reverse("monitor-request-log", args=[project.pk, endpoint.pk]),
    )
    return render(request, "frontend/monitor/endpoint.html", context, status=status)


@login_required
@require_GET
def endpoint_monitor(request: HttpRequest, pk: int, endpoint_pk: int) -> HttpResponse:
    return _endpoint_page(request, _endpoint(request, pk, endpoint_pk))


@login_required
@require_GET
def endpoint_monitor_data(request: HttpRequest, pk: int, endpoint_pk: int) -> JsonResponse:
    """The page's traffic figures and totals for the same ``?range=&version=`` (monitor.js
    redraws the charts from it while the range ends now)."""
    endpoint = _endpoint(request, pk, endpoint_pk)
    form = RangeForm(request.GET or None, versions=_served_versions(request.user, endpoint))
    data = _dashboard(endpoint, form)
    return JsonResponse(
        {
            "figures": _traffic_figures(data),
            "totals": data["totals"],
            "empty": data["empty"],
            "message": data.get("message", ""),
            "range": data["range"],
        }
    )


def _back(request: HttpRequest, endpoint: Endpoint, anchor: str = "") -> HttpResponse:
    url = reverse("monitor-endpoint", args=[endpoint.project_id, endpoint.pk])
    return redirect(url + (f"#{anchor}" if anchor else ""))


@login_required
@require_POST
def drift_check(request: HttpRequest, pk: int, endpoint_pk: int) -> HttpResponse:
    endpoint = _endpoint(request, pk, endpoint_pk)
    if run_action(
        request, monitor_services.drift_job_create, actor=request.user, endpoint=endpoint
    ):
        messages.success(request, "Drift check queued: the page follows it.")
    return _back(request, endpoint, "drift")


@login_required
@require_POST
def monitor_settings(request: HttpRequest, pk: int, endpoint_pk: int) -> HttpResponse:
    endpoint = _endpoint(request, pk, endpoint_pk)
    from projects.services import require

    require(request.user, endpoint.project.team, Action.EDIT_PROJECT)
    form = _settings_form(request, endpoint, request.POST)
    if form.is_valid():
        changes = form.changes()
        reference = changes.pop("reference_version")
        if reference is not None:
            reference = data_selectors.versions_for_user(request.user).filter(pk=reference).first()
        try:
            monitor_services.monitor_settings_update(
                actor=request.user, endpoint=endpoint, reference_version=reference, **changes
            )
        except ValidationError as exc:
            form.add_service_errors(exc)
        else:
            messages.success(request, f"{endpoint.name}: monitor settings saved.")
            return _back(request, endpoint, "monitor-settings")
    return _endpoint_page(request, endpoint, settings_form=form, status=400)


def _alert(request: HttpRequest, pk: int, alert_pk: int):
    alert = alert_selectors.get_alert_for_user(request.user, alert_pk)
    if alert.endpoint.project_id != pk:
        raise Http404("No such alert in this project.")
    return alert


@login_required
@require_POST
def alert_acknowledge(request: HttpRequest, pk: int, alert_pk: int) -> HttpResponse:
    alert = _alert(request, pk, alert_pk)
    note = request.POST.get("note", "")
    if run_action(request, alerts.alert_acknowledge, actor=request.user, alert=alert, note=note):
        messages.success(request, f"Alert acknowledged: {alert.message}")
    return _back(request, alert.endpoint, "alerts")


@login_required
@require_POST
def alert_resolve(request: HttpRequest, pk: int, alert_pk: int) -> HttpResponse:
    alert = _alert(request, pk, alert_pk)
    note = request.POST.get("note", "")
    if run_action(request, alerts.alert_resolve, actor=request.user, alert=alert, note=note):
        messages.success(request, f"Alert resolved: {alert.message}")
    return _back(request, alert.endpoint, "alerts")


@login_required
@require_POST
def alert_retrain(request: HttpRequest, pk: int, alert_pk: int) -> HttpResponse:
    """Drift to retraining: a dataset version of the alert's window, then the training launch
    form pre-filled from the serving version's own job."""
    alert = _alert(request, pk, alert_pk)
    if not run_action(request, retrain.retrain_propose, actor=request.user, alert=alert):
        return _back(request, alert.endpoint, "alerts")
    alert.refresh_from_db()
    messages.success(
        request,
        "A dataset version of the window's requests is ready: check the launch form and start "
        "the training.",
    )
    return redirect(retrain.retrain_launch_url(alert))


@login_required
@require_POST
def delivery_retry(request: HttpRequest, pk: int, delivery_pk: int) -> HttpResponse:
    delivery = alert_selectors.get_delivery_for_user(request.user, delivery_pk)
    if delivery.endpoint.project_id != pk:
        raise Http404("No such delivery in this project.")
    if run_action(request, webhooks.delivery_retry, actor=request.user, delivery=delivery):
        messages.success(request, "The delivery is queued again.")
    return _back(request, delivery.endpoint, "deliveries")


# --- the request log -------------------------------------------------------------------------


@login_required
@require_GET
def request_log(request: HttpRequest, pk: int, endpoint_pk: int) -> HttpResponse:
    endpoint = _endpoint(request, pk, endpoint_pk)
    keys = serving_selectors.serving_keys_for_user(request.user).filter(project=endpoint.project)
    params = request.GET.copy()
    page_number = params.pop("page", ["1"])[-1]
    form = RequestLogFilterForm(
        params or None,
        keys=[(k.pk, f"{k.name} ({k.prefix})") for k in keys],
        versions=_served_versions(request.user, endpoint),
    )
    logs = (
        serving_selectors.request_logs_for_user(request.user)
        .filter(endpoint=endpoint)
        .select_related("version__registered_model", "key")
    )
    logs = form.filter(logs) if form.is_bound else logs
    page = Paginator(logs, LOG_PAGE_SIZE).get_page(page_number)
    context = project_context(request, endpoint.project, "monitor")
    context.update(
        endpoint=endpoint,
        form=form,
        page=page,
        filters=form.query_string() if form.is_bound else "",
        status=400 if form.is_bound and not form.is_valid() else 200,
    )
    return render(request, "frontend/monitor/requests.html", context, status=context["status"])
