"""The alert state machine: opened and repeated by observe, acknowledged and resolved by people
(every allowed and refused move), each move audited and queued for the webhook, one unresolved
alert per endpoint, kind and statistic, and a new one after a resolve; and its REST routes."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, connection, transaction
from django.http import Http404
from django.test.utils import CaptureQueriesContext

from projects.models import AuditEvent
from serving import services
from serving.monitoring import alert_selectors
from serving.monitoring.alerts import (
    NOTE_MAX_LENGTH,
    Observation,
    alert_acknowledge,
    alert_resolve,
    observe,
)
from serving.monitoring.models import Alert, AlertState, MonitorSettings, WebhookDelivery

HOOK = "https://hooks.example.com/llmhub"


@pytest.fixture
def manager(world):
    return world.users["manager"]


@pytest.fixture
def endpoint(world, manager):
    endpoint = services.endpoint_create(actor=manager, project=world.project, name="bot")
    MonitorSettings.objects.create(endpoint=endpoint, webhook_url=HOOK)
    return endpoint


def _seen(value: float = 0.31, *, statistic: str = "prompt_length_psi", breached: bool = True):
    return Observation(
        kind="drift",
        statistic=statistic,
        value=value,
        threshold=0.2,
        breached=breached,
        message=f"PSI {value} >= 0.2",
    )


def _open(endpoint, **kw) -> Alert:
    (alert,) = observe(endpoint=endpoint, observations=[_seen(**kw)])
    return alert


def _events(alert, verb: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(target_type="alert", target_id=str(alert.pk), verb=verb))


def _deliveries(alert, event: str) -> list[WebhookDelivery]:
    return list(WebhookDelivery.objects.filter(alert=alert, event=event))


def test_observe_opens_one_alert_and_repeats_it(endpoint, world) -> None:
    alert = _open(endpoint)
    assert (alert.state, alert.times_seen, alert.value) == (AlertState.OPEN, 1, 0.31)
    (event,) = _events(alert, "alert.opened")
    assert event.actor is None and event.project == world.project
    assert event.changes["statistic"] == "prompt_length_psi"
    (delivery,) = _deliveries(alert, "alert.opened")
    assert delivery.url == HOOK and delivery.status == "pending"
    assert delivery.payload["alert"]["id"] == alert.pk
    assert delivery.payload["alert"]["state"] == "open"

    (again,) = observe(endpoint=endpoint, observations=[_seen(0.45)])
    assert again.pk == alert.pk
    alert.refresh_from_db()
    assert (alert.times_seen, alert.value, alert.message) == (2, 0.45, "PSI 0.45 >= 0.2")
    assert Alert.objects.filter(endpoint=endpoint).count() == 1
    assert len(_events(alert, "alert.opened")) == 1  # a repeat is not a new event
    assert WebhookDelivery.objects.filter(alert=alert).count() == 1


def test_observations_under_their_threshold_open_nothing(endpoint) -> None:
    assert observe(endpoint=endpoint, observations=[_seen(0.1, breached=False)]) == []
    assert not Alert.objects.filter(endpoint=endpoint).exists()


def test_no_webhook_no_delivery(world, manager) -> None:
    endpoint = services.endpoint_create(actor=manager, project=world.project, name="quiet")
    alert = _open(endpoint)
    assert not WebhookDelivery.objects.filter(alert=alert).exists()
    alert_resolve(actor=manager, alert=alert)
    assert not WebhookDelivery.objects.filter(alert=alert).exists()


def test_acknowledge_then_resolve(endpoint, manager, world) -> None:
    alert = _open(endpoint)
    engineer = world.users["engineer"]
    acked = alert_acknowledge(actor=engineer, alert=alert, note="  looking at the new traffic ")
    assert acked.state == AlertState.ACKNOWLEDGED
    assert acked.acknowledged_by == engineer and acked.acknowledged_at is not None
    assert acked.resolved_at is None
    (event,) = _events(alert, "alert.acknowledged")
    assert event.actor == engineer
    assert event.changes["state"] == ["open", "acknowledged"]
    assert event.changes["note"] == "looking at the new traffic"
    (delivery,) = _deliveries(alert, "alert.acknowledged")
    assert delivery.payload["alert"]["state"] == "acknowledged"
    assert delivery.payload["note"] == "looking at the new traffic"

    # Still unresolved: a repeat raises its count, it does not open another.
    observe(endpoint=endpoint, observations=[_seen(0.5)])
    assert Alert.objects.filter(endpoint=endpoint).count() == 1

    resolved = alert_resolve(actor=manager, alert=acked, note="retrained")
    assert resolved.state == AlertState.RESOLVED
    assert resolved.resolved_by == manager and resolved.resolved_at >= resolved.acknowledged_at
    assert resolved.acknowledged_by == engineer  # the history stays
    (event,) = _events(alert, "alert.resolved")
    assert event.changes["state"] == ["acknowledged", "resolved"]
    assert event.changes["note"] == "retrained"
    assert _deliveries(alert, "alert.resolved")[0].payload["alert"]["state"] == "resolved"


def test_resolve_an_open_alert_directly(endpoint, manager) -> None:
    alert = _open(endpoint)
    resolved = alert_resolve(actor=manager, alert=alert)
    assert resolved.state == AlertState.RESOLVED
    assert resolved.acknowledged_at is None and resolved.acknowledged_by is None
    (event,) = _events(alert, "alert.resolved")
    assert event.changes["state"] == ["open", "resolved"] and "note" not in event.changes
    assert "note" not in _deliveries(alert, "alert.resolved")[0].payload


@pytest.mark.parametrize(
    ("path", "move", "reason"),
    [
        (["acknowledge"], "acknowledge", "already acknowledged"),
        (["resolve"], "acknowledge", "is resolved"),
        (["resolve"], "resolve", "already resolved"),
        (["acknowledge", "resolve"], "acknowledge", "is resolved"),
        (["acknowledge", "resolve"], "resolve", "already resolved"),
    ],
)
def test_refused_moves_say_why_and_write_nothing(endpoint, manager, path, move, reason) -> None:
    moves = {"acknowledge": alert_acknowledge, "resolve": alert_resolve}
    alert = _open(endpoint)
    for step in path:
        alert = moves[step](actor=manager, alert=alert)
    before_events = AuditEvent.objects.count()
    before_deliveries = WebhookDelivery.objects.count()
    state = alert.state
    with pytest.raises(ValidationError) as caught:
        moves[move](actor=manager, alert=alert, note="again")
    assert reason in caught.value.message_dict["state"][0]
    alert.refresh_from_db()
    assert alert.state == state
    assert AuditEvent.objects.count() == before_events
    assert WebhookDelivery.objects.count() == before_deliveries


def test_a_stale_copy_is_refused_on_the_current_state(endpoint, manager) -> None:
    # Two people with the same page open: the second resolve reads the row again and refuses.
    alert = _open(endpoint)
    stale = Alert.objects.get(pk=alert.pk)
    alert_resolve(actor=manager, alert=alert)
    with pytest.raises(ValidationError, match="already resolved"):
        alert_resolve(actor=manager, alert=stale)
    assert len(_events(alert, "alert.resolved")) == 1


def test_roles_and_outsiders(endpoint, world) -> None:
    alert = _open(endpoint)
    with pytest.raises(PermissionDenied, match="is viewer"):
        alert_acknowledge(actor=world.users["viewer"], alert=alert)
    with pytest.raises(PermissionDenied, match="is rater"):
        alert_resolve(actor=world.users["rater"], alert=alert)
    with pytest.raises(Http404):
        alert_resolve(actor=world.outsider, alert=alert)
    alert.refresh_from_db()
    assert alert.state == AlertState.OPEN
    assert not _events(alert, "alert.resolved")


def test_a_note_too_long_is_refused(endpoint, manager) -> None:
    alert = _open(endpoint)
    with pytest.raises(ValidationError) as caught:
        alert_acknowledge(actor=manager, alert=alert, note="x" * (NOTE_MAX_LENGTH + 1))
    assert "note" in caught.value.message_dict
    alert.refresh_from_db()
    assert alert.state == AlertState.OPEN


def test_a_resolved_alert_leaves_room_for_a_new_one(endpoint, manager) -> None:
    first = _open(endpoint)
    alert_resolve(actor=manager, alert=first)
    second = _open(endpoint, value=0.6)
    assert second.pk != first.pk
    assert (second.state, second.times_seen, second.value) == (AlertState.OPEN, 1, 0.6)
    first.refresh_from_db()
    assert first.state == AlertState.RESOLVED and first.times_seen == 1
    assert len(_events(second, "alert.opened")) == 1
    # The next breach repeats the new one; another statistic gets its own alert.
    (again,) = observe(endpoint=endpoint, observations=[_seen(0.7)])
    assert again.pk == second.pk
    other = _open(endpoint, statistic="classifier_auc")
    assert other.pk not in (first.pk, second.pk)
    assert Alert.objects.filter(endpoint=endpoint).exclude(state="resolved").count() == 2


def test_the_database_holds_one_unresolved_alert_per_statistic(endpoint, manager) -> None:
    first = _open(endpoint)
    fields = {
        "endpoint": endpoint,
        "kind": "drift",
        "statistic": first.statistic,
        "value": 1.0,
        "threshold": 0.2,
        "message": "m",
    }
    with pytest.raises(IntegrityError), transaction.atomic():
        Alert.objects.create(**fields, state=AlertState.ACKNOWLEDGED)
    # Resolved rows are outside the partial constraint: any number of them.
    Alert.objects.create(**fields, state=AlertState.RESOLVED)
    alert_resolve(actor=manager, alert=first)
    Alert.objects.create(**fields)  # now the one unresolved
    assert Alert.objects.filter(endpoint=endpoint, statistic=first.statistic).count() == 3


def test_unresolved_by_endpoint_in_one_query(world, manager, endpoint) -> None:
    other = services.endpoint_create(actor=manager, project=world.project, name="other")
    a = _open(endpoint)
    b = _open(endpoint, statistic="classifier_auc")
    c = _open(other)
    gone = _open(other, statistic="classifier_auc")
    alert_resolve(actor=manager, alert=gone)
    with CaptureQueriesContext(connection) as captured:
        found = alert_selectors.unresolved_by_endpoint([endpoint.pk, other.pk])
        names = [str(alert.version) for alerts in found.values() for alert in alerts]
    assert len(captured) == 1, names
    assert {k: {x.pk for x in v} for k, v in found.items()} == {
        endpoint.pk: {a.pk, b.pk},
        other.pk: {c.pk},
    }
    assert alert_selectors.unresolved_by_endpoint([]) == {}


def test_selectors_scope_alerts_to_the_team(world, endpoint) -> None:
    alert = _open(endpoint)
    assert list(alert_selectors.alerts_for_user(world.users["viewer"])) == [alert]
    assert not alert_selectors.alerts_for_user(world.users["rater"]).exists()
    assert not alert_selectors.alerts_for_user(world.outsider).exists()
    with pytest.raises(Http404):
        alert_selectors.get_alert_for_user(world.outsider, alert.pk)
    assert alert_selectors.deliveries_for_user(world.users["viewer"]).count() == 1
    assert not alert_selectors.deliveries_for_user(world.outsider).exists()


# --- REST -------------------------------------------------------------------------------------


def test_api_acknowledge_and_resolve(api, world, endpoint) -> None:
    alert = _open(endpoint)
    client = api(world.users["engineer"])
    url = f"/api/v1/alerts/{alert.pk}/"
    body = client.get(url).json()
    assert (body["state"], body["endpoint_slug"], body["project"]) == (
        "open",
        endpoint.slug,
        world.project.pk,
    )
    response = client.post(url + "acknowledge/", {"note": "on it"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["state"] == "acknowledged"
    assert response.json()["acknowledged_by"] == "engineer"
    assert _events(alert, "alert.acknowledged")[0].changes["note"] == "on it"

    again = client.post(url + "acknowledge/", {}, format="json")
    assert again.status_code == 400
    assert "already acknowledged" in again.json()["error"]["fields"]["state"][0]

    typo = client.post(url + "resolve/", {"notes": "x"}, format="json")
    assert typo.status_code == 400 and "notes" in typo.json()["error"]["fields"]
    long = client.post(url + "resolve/", {"note": "x" * 2001}, format="json")
    assert long.status_code == 400 and "note" in long.json()["error"]["fields"]
    assert Alert.objects.get(pk=alert.pk).state == "acknowledged"  # nothing written

    done = client.post(url + "resolve/", {}, format="json")
    assert done.status_code == 200 and done.json()["state"] == "resolved"
    viewer = api(world.users["viewer"]).post(url + "resolve/", {}, format="json")
    assert viewer.status_code == 403
    outsider = api(world.outsider).post(url + "resolve/", {}, format="json")
    assert outsider.status_code == 404


def test_api_list_filters(api, world, manager, endpoint) -> None:
    other = services.endpoint_create(actor=manager, project=world.project, name="other")
    drift = _open(endpoint)
    errors = observe(
        endpoint=other,
        observations=[
            Observation(
                kind="error_rate",
                statistic="error_rate",
                value=0.3,
                threshold=0.05,
                breached=True,
                message="30% errors",
            )
        ],
    )[0]
    alert_acknowledge(actor=manager, alert=errors)
    client = api(world.users["viewer"])

    def ids(query: str) -> set[int]:
        response = client.get("/api/v1/alerts/" + query)
        assert response.status_code == 200, response.content
        return {row["id"] for row in response.json()["results"]}

    assert ids("") == {drift.pk, errors.pk}
    assert ids(f"?endpoint={endpoint.pk}") == {drift.pk}
    assert ids("?state=acknowledged") == {errors.pk}
    assert ids("?kind=drift") == {drift.pk}
    assert ids(f"?project={world.project.pk}") == {drift.pk, errors.pk}
    assert ids(f"?project={world.other_project.pk}") == set()
    assert client.get("/api/v1/alerts/?state=closed").status_code == 400
    assert api(world.outsider).get("/api/v1/alerts/").json()["results"] == []
    deliveries = client.get(f"/api/v1/webhook-deliveries/?alert={drift.pk}").json()["results"]
    assert [row["event"] for row in deliveries] == ["alert.opened"]
