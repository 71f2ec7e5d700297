"""The project page's Monitor loop panel: per endpoint, what it serves, its last 24 hours of
traffic, its open alerts, the dataset version an alert's Retrain made, the training job run on
that version and the model version it made, with that version's goal-gate state and whether it
already serves (canary or main). Built on the stages' scoped selectors, in seven queries at most
whatever the project holds."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from typing import Any

from django.utils import timezone

from evaluation import selectors as evaluation_selectors
from evaluation.services import SPLIT_ALIASES
from llmhub.models import JobStatus
from projects.models import Project
from projects.selectors import User
from serving.monitoring import alert_selectors, dashboard
from training import selectors as training_selectors

# How many endpoints the panel shows (the project page's other loop shows as many).
LOOP_ENDPOINTS = 5


def gate_states(project: Project, versions: list, user: User) -> dict[int, dict[str, Any]]:
    """``{version id: {"passes": bool, "blockers": [str]}}`` for the goal gate of each
    version, as ``serving.selectors.promotion_blockers`` decides it (each goal measured by the
    version's latest succeeded evaluation on the goal's split, and no training warnings), in
    two queries for all of them instead of one per goal and version."""
    if not versions:
        return {}
    goals = list(project.goals.all().order_by("id"))
    runs: dict[int, list] = defaultdict(list)
    if goals:
        for run in (
            evaluation_selectors.evaluation_runs_for_user(user)
            .select_related(None)
            .filter(model_version__in=[v.pk for v in versions], status=JobStatus.SUCCEEDED)
            .order_by("-finished_at", "-id")
        ):
            runs[run.model_version_id].append(run)
    states = {}
    for version in versions:
        blockers = []
        for goal in goals:
            splits = SPLIT_ALIASES.get(goal.split, (goal.split,))
            value = next(
                (
                    r.value(goal.metric)
                    for r in runs[version.pk]
                    if r.split in splits and r.value(goal.metric) is not None
                ),
                None,
            )
            if value is None:
                blockers.append(f"{goal.metric_label} on {goal.split} not measured")
            elif not goal.is_met_by(value):
                blockers.append(f"{goal.metric_label} on {goal.split} is {value:.4g}")
        blockers += [
            (w.get("message") if isinstance(w, dict) else str(w)) or "training warning"
            for w in version.warnings or []
        ]
        states[version.pk] = {"passes": not blockers, "blockers": blockers}
    return states


def monitor_loop(user: User, project: Project, *, now=None) -> dict[str, Any]:
    """The panel's rows, one per endpoint (newest-named first, at most ``LOOP_ENDPOINTS``):
    ``{"endpoint", "traffic" (endpoints_overview's totals of the last 24 h), "open_alerts",
    "latest_alert", "retrain_alert", "retrain_version", "jobs" (trained on it, newest
    first), "new_version", "gate" (its goal-gate state), "serving_new" ("main", "canary" or
    "")}``; ``empty`` when the project has no endpoint."""
    now = now or timezone.now()
    endpoints = list(
        dashboard.endpoints_for_user(user)
        .filter(project=project, archived_at=None)
        .order_by("name", "pk")[:LOOP_ENDPOINTS]
    )
    if not endpoints:
        return {"rows": [], "empty": True}
    ids = [e.pk for e in endpoints]
    traffic = dashboard.endpoints_overview(endpoints, since=now - timedelta(hours=24), now=now)
    unresolved = alert_selectors.unresolved_by_endpoint(ids)
    retrain_alerts: dict[int, Any] = {}
    for alert in (
        alert_selectors.alerts_for_user(user)
        .select_related("retrain_dataset_version__dataset")
        .filter(endpoint__in=ids, retrain_dataset_version__isnull=False)
        .order_by("-last_seen_at", "-pk")[: LOOP_ENDPOINTS * 10]
    ):
        retrain_alerts.setdefault(alert.endpoint_id, alert)
    data_ids = [a.retrain_dataset_version_id for a in retrain_alerts.values()]
    jobs: dict[int, list] = defaultdict(list)
    if data_ids:
        for job in (
            training_selectors.training_jobs_for_user(user)
            .select_related("model_version__registered_model")
            .filter(project=project, train_version__in=data_ids)
            .order_by("-created_at", "-pk")
        ):
            jobs[job.train_version_id].append(job)
    new_versions = {}
    for data_id, trained in jobs.items():
        made = next((j.model_version for j in trained if j.model_version_id), None)
        if made is not None:
            new_versions[data_id] = made
    gates = gate_states(project, list(new_versions.values()), user)
    rows = []
    for endpoint in endpoints:
        alerts = unresolved.get(endpoint.pk, [])
        alert = retrain_alerts.get(endpoint.pk)
        data_id = alert.retrain_dataset_version_id if alert else None
        new = new_versions.get(data_id)
        serving_new = ""
        if new is not None:
            if endpoint.version_id == new.pk:
                serving_new = "main"
            elif endpoint.canary_version_id == new.pk:
                serving_new = "canary"
        rows.append(
            {
                "endpoint": endpoint,
                "traffic": traffic.get(endpoint.pk, {}),
                "open_alerts": len(alerts),
                "latest_alert": alerts[0] if alerts else None,
                "retrain_alert": alert,
                "retrain_version": alert.retrain_dataset_version if alert else None,
                "jobs": jobs.get(data_id, [])[:3],
                "new_version": new,
                "gate": gates.get(new.pk) if new else None,
                "serving_new": serving_new,
            }
        )
    return {"rows": rows, "empty": False}
