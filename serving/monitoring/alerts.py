"""Alerts: opened by the checks (drift jobs, traffic limits), acknowledged and resolved by
people, each change recorded in the activity feed and queued for the endpoint's webhook.

The checks report what they measured as :class:`Observation` s to :func:`observe`, the one
place an alert is opened or repeated: at most one unresolved alert per endpoint, kind and
statistic (a partial unique constraint), so a check that keeps firing raises the alert's count
and latest value instead of opening another.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.utils import timezone

from projects.audit import record_event
from serving.models import Endpoint
from serving.monitoring.models import Alert, AlertState, MonitorSettings, WebhookDelivery


@dataclass(frozen=True)
class Observation:
    """One measured value and whether it crossed its threshold."""

    kind: str  # AlertKind
    statistic: str  # e.g. "classifier_auc", "error_rate"
    value: float
    threshold: float
    breached: bool
    message: str  # a sentence for people: what crossed what
    version_id: int | None = None
    drift_job_id: int | None = None


def alert_payload(alert: Alert, event: str) -> dict:
    """The JSON a webhook receives for ``event`` (alert.opened, alert.acknowledged, ...)."""
    endpoint = alert.endpoint
    return {
        "event": event,
        "alert": {
            "id": alert.pk,
            "kind": alert.kind,
            "statistic": alert.statistic,
            "state": alert.state,
            "value": alert.value,
            "threshold": alert.threshold,
            "message": alert.message,
            "times_seen": alert.times_seen,
            "opened_at": alert.opened_at.isoformat(),
            "version": alert.version_id,
        },
        "endpoint": {"id": endpoint.pk, "slug": endpoint.slug, "name": endpoint.name},
        "project": {"id": endpoint.project_id},
    }


def enqueue_delivery(alert: Alert, event: str) -> WebhookDelivery | None:
    """Queue ``event`` for the endpoint's webhook, if it has one (sent by the periodic sender,
    never while a request or a check waits)."""
    url = (
        MonitorSettings.objects.filter(endpoint_id=alert.endpoint_id)
        .values_list("webhook_url", flat=True)
        .first()
    )
    if not url:
        return None
    return WebhookDelivery.objects.create(
        alert=alert,
        endpoint_id=alert.endpoint_id,
        event=event,
        url=url,
        payload=alert_payload(alert, event),
    )


def observe(*, endpoint: Endpoint, observations: list[Observation]) -> list[Alert]:
    """Open an alert for each breached observation that has no unresolved one, or repeat the
    unresolved one (count, latest value, last seen). A system write: no actor. Returns the
    alerts opened or repeated."""
    touched = []
    now = timezone.now()
    for seen in observations:
        if not seen.breached:
            continue
        with transaction.atomic():
            current = (
                Alert.objects.select_for_update()
                .filter(endpoint=endpoint, kind=seen.kind, statistic=seen.statistic)
                .exclude(state=AlertState.RESOLVED)
                .first()
            )
            if current is not None:
                current.times_seen += 1
                current.value, current.threshold = seen.value, seen.threshold
                current.message, current.last_seen_at = seen.message[:500], now
                current.drift_job_id = seen.drift_job_id or current.drift_job_id
                current.save(
                    update_fields=[
                        "times_seen",
                        "value",
                        "threshold",
                        "message",
                        "last_seen_at",
                        "drift_job",
                    ]
                )
                touched.append(current)
                continue
            alert = Alert(
                endpoint=endpoint,
                version_id=seen.version_id,
                kind=seen.kind,
                statistic=seen.statistic,
                value=seen.value,
                threshold=seen.threshold,
                message=seen.message[:500],
                drift_job_id=seen.drift_job_id,
                opened_at=now,
                last_seen_at=now,
            )
            alert.full_clean(validate_constraints=False)
            try:
                with transaction.atomic():
                    alert.save()
            except IntegrityError:
                # Another process opened it a moment ago: this observation repeats it.
                continue
            record_event(
                actor=None,
                verb="alert.opened",
                target=alert,
                changes={
                    "endpoint": endpoint.slug,
                    "kind": alert.kind,
                    "statistic": alert.statistic,
                    "value": alert.value,
                    "threshold": alert.threshold,
                },
            )
            enqueue_delivery(alert, "alert.opened")
            touched.append(alert)
    return touched
