"""Reads of alerts and webhook deliveries, scoped to the user's teams.

An alert (and a delivery) belongs to the team of its endpoint's project, as the request log
does (``serving.selectors.VIA_ENDPOINT``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from django.db.models import QuerySet

from projects.selectors import User, get_visible, visible_to
from serving.monitoring.models import Alert, AlertState, WebhookDelivery

VIA_ENDPOINT = "endpoint__project__team"


def alerts_for_user(user: User) -> QuerySet[Alert]:
    """The user's alerts, newest first, with what a list shows (endpoint, version, people)."""
    return visible_to(
        Alert.objects.select_related(
            "endpoint__project__team",
            "version__registered_model",
            "acknowledged_by",
            "resolved_by",
        ),
        user,
        team_path=VIA_ENDPOINT,
    )


def get_alert_for_user(user: User, pk) -> Alert:
    return get_visible(alerts_for_user(user), user, pk, team_path=VIA_ENDPOINT)


def unresolved_by_endpoint(endpoint_ids: Iterable[int]) -> dict[int, list[Alert]]:
    """{endpoint id: its open and acknowledged alerts, newest first} in one query. Not scoped:
    pass ids of endpoints the caller already read through a selector."""
    ids = list(endpoint_ids)
    grouped: dict[int, list[Alert]] = defaultdict(list)
    if not ids:
        return {}
    rows = (
        Alert.objects.filter(endpoint_id__in=ids)
        .exclude(state=AlertState.RESOLVED)
        .select_related("version__registered_model")
        .order_by("-opened_at", "-id")
    )
    for alert in rows:
        grouped[alert.endpoint_id].append(alert)
    return dict(grouped)


def deliveries_for_user(user: User) -> QuerySet[WebhookDelivery]:
    """The user's webhook deliveries (pending, delivered and failed), newest first."""
    return visible_to(
        WebhookDelivery.objects.select_related("endpoint__project__team", "alert"),
        user,
        team_path=VIA_ENDPOINT,
    )


def get_delivery_for_user(user: User, pk) -> WebhookDelivery:
    return get_visible(deliveries_for_user(user), user, pk, team_path=VIA_ENDPOINT)
