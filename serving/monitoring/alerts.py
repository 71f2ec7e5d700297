"""Alerts: opened by the checks (drift jobs, traffic limits), acknowledged and resolved by
people, each change recorded in the activity feed and queued for the endpoint's webhook.

The checks report what they measured as :class:`Observation` s to :func:`observe`, the one
place an alert is opened or repeated: at most one unresolved alert per endpoint, kind and
statistic (a partial unique constraint), so a check that keeps firing raises the alert's count
and latest value instead of opening another.

People move an alert along ``open -> acknowledged -> resolved`` (or ``open -> resolved``) with
:func:`alert_acknowledge` and :func:`alert_resolve`; anything else is refused with the reason.
A resolved alert frees its place: the next breach of the same statistic opens a new alert.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from projects.audit import record_event
from projects.permissions import Action
from projects.services import require
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


def alert_payload(alert: Alert, event: str, *, note: str = "") -> dict:
    """The JSON a webhook receives for ``event`` (alert.opened, alert.acknowledged, ...);
    ``note`` is what the person acknowledging or resolving wrote."""
    endpoint = alert.endpoint
    payload = {
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
    if note:
        payload["note"] = note
    return payload


def enqueue_delivery(alert: Alert, event: str, *, note: str = "") -> WebhookDelivery | None:
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
        payload=alert_payload(alert, event, note=note),
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


# --- people acknowledge and resolve -------------------------------------------------------------

NOTE_MAX_LENGTH = 2000

# state -> the states a person may move it to
TRANSITIONS: dict[str, tuple[str, ...]] = {
    AlertState.OPEN: (AlertState.ACKNOWLEDGED, AlertState.RESOLVED),
    AlertState.ACKNOWLEDGED: (AlertState.RESOLVED,),
    AlertState.RESOLVED: (),
}


def _refusal(current: str, target: str) -> str:
    if current == target:
        return f"This alert is already {current}."
    if current == AlertState.RESOLVED:
        return (
            "This alert is resolved; it cannot change any more (the next breach of the same "
            "statistic opens a new alert)."
        )
    allowed = " or ".join(str(state) for state in TRANSITIONS[current])
    return f"An {current} alert can only become {allowed}, not {target}."


def _clean_note(note: str) -> str:
    if not isinstance(note, str):
        raise ValidationError({"note": "A note is text."})
    note = note.strip()
    if len(note) > NOTE_MAX_LENGTH:
        raise ValidationError({"note": f"A note has at most {NOTE_MAX_LENGTH} characters."})
    if "\x00" in note:
        raise ValidationError({"note": "A note cannot hold a NUL character."})
    return note


def _move(*, actor, alert: Alert, target: str, note: str) -> Alert:
    require(actor, alert.endpoint.project.team, Action.RUN_JOBS)
    note = _clean_note(note)
    with transaction.atomic():
        # Locked and read again: two people clicking at once see one move and one refusal.
        current = Alert.objects.select_for_update().select_related("endpoint").get(pk=alert.pk)
        before = current.state
        if target not in TRANSITIONS[before]:
            raise ValidationError({"state": _refusal(before, target)})
        now = timezone.now()
        current.state = target
        fields = ["state"]
        if target == AlertState.ACKNOWLEDGED:
            current.acknowledged_at, current.acknowledged_by = now, actor
            fields += ["acknowledged_at", "acknowledged_by"]
        else:
            current.resolved_at, current.resolved_by = now, actor
            fields += ["resolved_at", "resolved_by"]
        current.save(update_fields=fields)
        verb = f"alert.{target}"
        changes: dict = {"state": [before, target], "statistic": current.statistic}
        if note:
            changes["note"] = note
        record_event(actor=actor, verb=verb, target=current, changes=changes)
        enqueue_delivery(current, verb, note=note)
    return current


def alert_acknowledge(*, actor, alert: Alert, note: str = "") -> Alert:
    """Someone is on it: an open alert becomes acknowledged (RUN_JOBS). It still blocks a
    second alert of the same statistic; a repeat raises its count."""
    return _move(actor=actor, alert=alert, target=AlertState.ACKNOWLEDGED, note=note)


def alert_resolve(*, actor, alert: Alert, note: str = "") -> Alert:
    """Done: an open or acknowledged alert becomes resolved (RUN_JOBS), and the next breach
    of the same statistic opens a new alert."""
    return _move(actor=actor, alert=alert, target=AlertState.RESOLVED, note=note)
