"""The Monitor tab's pages (Django test client): the tab with every endpoint's day, the endpoint
monitor page (range and version, charts from the rollups with the request-log link of each
point, drift, alerts with acknowledge / resolve / retrain, deliveries, the settings form with
every error at once), the request log (filters, bad values as form errors, text only where
stored), roles, and query counts that do not grow with the rows."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from serving import services
from serving.models import Endpoint
from serving.monitoring import alerts as alert_services
from serving.monitoring.models import Alert, AlertState, DriftJob, DriftStatistic, WebhookDelivery
from tests.serving.builders import request_record, stored_version

pytestmark = pytest.mark.django_db


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _endpoint(world, tmp_path, *, slug="support", canary=False) -> Endpoint:
    manager = world.users["manager"]
    endpoint = services.endpoint_create(
        actor=manager, project=world.project, name=f"Bot {slug}", slug=slug
    )
    version = stored_version(world.project, tmp_path)
    services.endpoint_promote(
        actor=manager, endpoint=endpoint, version=version, override_reason="tests"
    )
    if canary:
        other = stored_version(world.project, tmp_path)
        services.endpoint_set_canary(
            actor=manager, endpoint=endpoint, version=other, percent=20, override_reason="tests"
        )
    endpoint.refresh_from_db()
    return endpoint


def _traffic(endpoint: Endpoint, *, ok=10, errors=2, limited=1, canary=0, ago=0.0) -> None:
    now = time.time() - ago
    records = [request_record(endpoint, latency_ms=10.0 + i, created_at=now) for i in range(ok)]
    records += [
        request_record(endpoint, status_code=500, latency_ms=50.0, created_at=now)
        for _ in range(errors)
    ]
    records += [
        request_record(endpoint, status_code=429, latency_ms=1.0, created_at=now)
        for _ in range(limited)
    ]
    records += [
        request_record(
            endpoint,
            version_id=endpoint.canary_version_id,
            canary=True,
            latency_ms=30.0,
            created_at=now,
        )
        for _ in range(canary)
    ]
    services.request_logs_ingest(records=records)


def _open_alert(endpoint: Endpoint, *, statistic="classifier_auc", value=0.9) -> Alert:
    return alert_services.observe(
        endpoint=endpoint,
        observations=[
            alert_services.Observation(
                kind="drift",
                statistic=statistic,
                value=value,
                threshold=0.55,
                breached=True,
                message=f"{statistic} is {value}, past 0.55",
            )
        ],
    )[0]


def _monitor_url(world, endpoint, suffix="") -> str:
    return f"/projects/{world.project.pk}/monitor/endpoints/{endpoint.pk}/{suffix}"


# --- the tab -----------------------------------------------------------------------------------


def test_the_tab_shows_each_endpoint_with_its_day_alerts_and_drift(world, tmp_path) -> None:
    endpoint = _endpoint(world, tmp_path)
    _traffic(endpoint, ok=7, errors=2, limited=1)
    alert = _open_alert(endpoint)
    response = _client(world.users["viewer"]).get(f"/projects/{world.project.pk}/monitor/")
    assert response.status_code == 200 and response.context["stage"] == "monitor"
    html = response.content.decode()
    row = html[html.index('data-endpoint="support"') :]
    row = row[: row.index("</tr>")]
    assert f"/monitor/endpoints/{endpoint.pk}/" in row
    assert '<td class="num" data-total="requests">10</td>' in row
    assert '<td class="num" data-total="errors">2</td>' in row
    assert '<td class="num" data-total="rate_limited">1</td>' in row
    assert 'data-alerts="1"' in row and alert.message in row
    assert "not checked yet" in row


def test_the_tab_without_endpoints_says_where_to_start(world) -> None:
    html = _client(world.users["viewer"]).get(f"/projects/{world.project.pk}/monitor/")
    assert html.status_code == 200
    assert "Nothing deployed yet" in html.content.decode()


def test_the_tab_query_count_does_not_grow_with_endpoints(world, tmp_path) -> None:
    client = _client(world.users["viewer"])
    url = f"/projects/{world.project.pk}/monitor/"
    first = _endpoint(world, tmp_path, slug="one")
    _traffic(first)
    _open_alert(first)
    client.get(url)  # warm the session and the content types
    with CaptureQueriesContext(connection) as one:
        assert client.get(url).status_code == 200
    for slug in ("two", "three", "four"):
        endpoint = _endpoint(world, tmp_path, slug=slug)
        _traffic(endpoint)
        _open_alert(endpoint)
        DriftJob.objects.create(
            project=world.project,
            endpoint=endpoint,
            window_start=timezone.now() - timedelta(hours=1),
            window_end=timezone.now(),
            status="succeeded",
            result="stable",
        )
    with CaptureQueriesContext(connection) as many:
        response = client.get(url)
    assert response.content.decode().count('badge-success">stable') == 3
    assert len(many) == len(one), [q["sql"] for q in many.captured_queries]


# --- the endpoint's monitor page ---------------------------------------------------------------


def test_the_page_draws_the_traffic_per_version_with_the_log_link_of_each_point(
    world, tmp_path
) -> None:
    endpoint = _endpoint(world, tmp_path, canary=True)
    _traffic(endpoint, ok=8, errors=1, limited=1, canary=3)
    response = _client(world.users["viewer"]).get(_monitor_url(world, endpoint) + "?range=1h")
    assert response.status_code == 200
    figures = response.context["figures"]
    assert set(figures) == {
        "requests",
        "latency",
        "ttft",
        "tokens",
        "errors",
        "cache",
        "feedback",
    }
    requests = figures["requests"]["data"]
    names = [trace["name"] for trace in requests]
    assert names == [str(endpoint.version), f"{endpoint.canary_version} (canary)"]
    # Each trace says what the request log of a point's bucket is: its version, the buckets.
    main = requests[0]
    span = response.context["dashboard"]["range"]
    assert main["meta"]["version"] == endpoint.version_id and main["meta"]["bucket"] == 60
    assert main["meta"]["start"] == main["x0"] and main["dx"] == 60_000
    assert len(main["y"]) == len(response.context["dashboard"]["series"][0]["points"])
    assert main["meta"]["start"] >= span["start"][:16]
    # 8 + 1 + 1 main requests, in the last minute or two.
    assert sum(p for p in main["y"] if p) > 0
    errors = {t["name"]: t for t in figures["errors"]["data"]}
    assert f"{endpoint.version} 500 error" in errors
    error_meta = errors[f"{endpoint.version} 500 error"]["meta"]
    assert (error_meta["filter"], error_meta["value"]) == ("status", "500")
    assert sum(errors[f"{endpoint.version} 500 error"]["y"]) == 1
    assert f"{endpoint.version} 429 rate limited" in errors
    html = response.content.decode()
    assert 'data-total="requests">13<' in html
    assert 'id="figure-requests"' in html and 'data-live="true"' in html


def test_the_data_url_gives_the_same_figures_for_live_redrawing(world, tmp_path) -> None:
    endpoint = _endpoint(world, tmp_path)
    client = _client(world.users["viewer"])
    empty = client.get(_monitor_url(world, endpoint, "data/") + "?range=1h").json()
    assert empty["empty"] is True
    assert empty["figures"]["requests"]["layout"]["meta"]["empty"] is True
    _traffic(endpoint, ok=5, errors=0, limited=0)
    data = client.get(_monitor_url(world, endpoint, "data/") + "?range=1h").json()
    assert data["empty"] is False and data["totals"]["requests"] == 5
    assert data["figures"]["requests"]["data"][0]["name"] == str(endpoint.version)


def test_the_version_filter_keeps_one_series(world, tmp_path) -> None:
    endpoint = _endpoint(world, tmp_path, canary=True)
    _traffic(endpoint, ok=4, errors=0, limited=0, canary=2)
    response = _client(world.users["viewer"]).get(
        _monitor_url(world, endpoint) + f"?range=6h&version={endpoint.canary_version_id}"
    )
    names = [t["name"] for t in response.context["figures"]["requests"]["data"]]
    assert names == [f"{endpoint.canary_version} (canary)"]
    assert response.context["dashboard"]["totals"]["requests"] == 2


@pytest.mark.parametrize("query", ["range=2w", "version=abc", "range=%00", "version=999999"])
def test_bad_range_or_version_is_a_form_error_not_a_crash(world, tmp_path, query) -> None:
    endpoint = _endpoint(world, tmp_path)
    response = _client(world.users["viewer"]).get(_monitor_url(world, endpoint) + "?" + query)
    assert response.status_code in (200, 400)
    if response.status_code == 200:
        assert response.context["range_form"].errors
        assert 'id="range-errors"' in response.content.decode()


def test_the_drift_section_charts_each_statistic_with_its_threshold(world, tmp_path) -> None:
    endpoint = _endpoint(world, tmp_path)
    now = timezone.now()
    job = DriftJob.objects.create(
        project=world.project,
        endpoint=endpoint,
        window_start=now - timedelta(hours=1),
        window_end=now,
        status="succeeded",
        result="drifted",
        window_rows=300,
        reference_rows=500,
        report={
            "status": "drifted",
            "checks": [
                {
                    "name": "domain_classifier",
                    "status": "computed",
                    "reason": "",
                    "drifted": True,
                    "statistics": [
                        {
                            "name": "classifier_auc",
                            "value": 0.93,
                            "threshold": 0.55,
                            "rule": ">=",
                            "drifted": True,
                            "noise_floor": 0.58,
                        }
                    ],
                    "top": [{"side": "current", "text": "how do I bake bread", "p_current": 0.99}],
                    "notes": [],
                },
                {
                    "name": "completions",
                    "status": "skipped",
                    "reason": "The window has no completions.",
                    "drifted": False,
                    "statistics": [],
                    "top": [],
                    "notes": [],
                },
            ],
        },
    )
    for value, at in ((0.5, now - timedelta(minutes=30)), (0.93, now)):
        DriftStatistic.objects.create(
            job=job,
            endpoint=endpoint,
            check_name="domain_classifier",
            name="classifier_auc",
            value=value,
            threshold=0.55,
            rule=">=",
            drifted=value >= 0.55,
            computed_at=at,
        )
    response = _client(world.users["viewer"]).get(_monitor_url(world, endpoint))
    html = response.content.decode()
    drift = response.context["drift"]
    assert [d["name"] for d in drift] == ["classifier_auc"]
    (values,) = drift[0]["figure"]["data"]
    assert values["y"] == [0.5, 0.93]
    # One threshold throughout: a dashed line across the chart.
    (line,) = drift[0]["figure"]["layout"]["shapes"]
    assert line["y0"] == line["y1"] == 0.55 and line["line"]["dash"] == "dash"
    assert 'data-drift-result="drifted"' in html
    assert 'data-statistic="classifier_auc"' in html
    assert "how do I bake bread" in html
    assert "skipped: The window has no completions." in html
    # A viewer sees no "Check drift now"; an engineer (RUN_JOBS) does.
    assert 'id="check-drift"' not in html
    engineer = _client(world.users["engineer"]).get(_monitor_url(world, endpoint))
    assert 'id="check-drift"' in engineer.content.decode()


# --- alerts --------------------------------------------------------------------------------------


def test_an_alert_is_acknowledged_then_resolved_from_the_page(world, tmp_path) -> None:
    endpoint = _endpoint(world, tmp_path)
    alert = _open_alert(endpoint)
    client = _client(world.users["engineer"])
    page = client.get(_monitor_url(world, endpoint)).content.decode()
    row = page[page.index(f'data-alert="{alert.pk}"') :]
    row = row[: row.index("</tr>")]
    assert 'data-action="acknowledge"' in row and 'data-action="resolve"' in row
    base = f"/projects/{world.project.pk}/monitor/alerts/{alert.pk}/"
    response = client.post(base + "acknowledge/")
    assert response.status_code == 302 and response["Location"].endswith("#alerts")
    alert.refresh_from_db()
    assert alert.state == AlertState.ACKNOWLEDGED
    assert alert.acknowledged_by == world.users["engineer"]
    # Acknowledging twice is refused with the service's reason, shown as a message.
    again = client.post(base + "acknowledge/", follow=True)
    assert list(again.context["messages"])
    client.post(base + "resolve/")
    alert.refresh_from_db()
    assert alert.state == AlertState.RESOLVED
    page = client.get(_monitor_url(world, endpoint)).content.decode()
    assert 'id="resolved-alerts"' in page and "No open alerts." in page


def test_a_viewer_sees_alerts_without_buttons_and_is_refused(world, tmp_path) -> None:
    endpoint = _endpoint(world, tmp_path)
    alert = _open_alert(endpoint)
    client = _client(world.users["viewer"])
    page = client.get(_monitor_url(world, endpoint)).content.decode()
    assert f'data-alert="{alert.pk}"' in page
    assert 'data-action="acknowledge"' not in page and 'data-action="retrain"' not in page
    response = client.post(f"/projects/{world.project.pk}/monitor/alerts/{alert.pk}/resolve/")
    assert response.status_code == 403
    alert.refresh_from_db()
    assert alert.state == AlertState.OPEN


def test_another_projects_alert_is_not_found(world, tmp_path) -> None:
    endpoint = _endpoint(world, tmp_path)
    alert = _open_alert(endpoint)
    client = _client(world.outsider)
    url = f"/projects/{world.other_project.pk}/monitor/alerts/{alert.pk}/resolve/"
    assert client.post(url).status_code == 404
    assert client.get(_monitor_url(world, endpoint)).status_code == 404


def test_a_failed_delivery_shows_its_error_and_can_be_retried(world, tmp_path) -> None:
    endpoint = _endpoint(world, tmp_path)
    alert = _open_alert(endpoint)
    delivery = WebhookDelivery.objects.create(
        alert=alert,
        endpoint=endpoint,
        event="alert.opened",
        url="https://hooks.example.com/x",
        payload={},
        status="failed",
        attempts=5,
        last_error="timed out after 5 s",
    )
    client = _client(world.users["engineer"])
    page = client.get(_monitor_url(world, endpoint)).content.decode()
    row = page[page.index(f'data-delivery="{delivery.pk}"') :]
    row = row[: row.index("</tr>")]
    assert "timed out after 5 s" in row and 'data-action="retry"' in row
    response = client.post(f"/projects/{world.project.pk}/monitor/deliveries/{delivery.pk}/retry/")
    assert response.status_code == 302
    delivery.refresh_from_db()
    assert delivery.status == "pending"


# --- settings ------------------------------------------------------------------------------------


def test_the_settings_form_shows_every_error_at_once(world, tmp_path) -> None:
    endpoint = _endpoint(world, tmp_path)
    client = _client(world.users["manager"])
    page = client.get(_monitor_url(world, endpoint))
    form = page.context["settings_form"]
    data = {name: "" if value is None else value for name, value in form.initial.items()}
    data = {k: v for k, v in data.items() if v is not False}
    data.update(
        {
            "threshold_classifier_auc": "0.2",  # below its range (0.5..1)
            "threshold_token_js_distance": "7",  # above 1
            "webhook_url": "ftp://example.com/hook",
        }
    )
    response = client.post(_monitor_url(world, endpoint, "settings/"), data)
    assert response.status_code == 400
    errors = response.context["settings_form"].errors
    assert {"threshold_classifier_auc", "threshold_token_js_distance", "webhook_url"} <= set(
        errors
    ), errors
    assert 'id="monitor-settings" open' in response.content.decode()


def test_the_settings_are_saved(world, tmp_path) -> None:
    endpoint = _endpoint(world, tmp_path)
    client = _client(world.users["manager"])
    form = client.get(_monitor_url(world, endpoint)).context["settings_form"]
    data = {name: "" if value is None else value for name, value in form.initial.items()}
    data = {k: v for k, v in data.items() if v is not False}
    data.update(
        {
            "threshold_classifier_auc": "0.6",
            "threshold_min_current_rows": "50",
            "window_hours": "6",
            "drift_enabled": "on",
        }
    )
    response = client.post(_monitor_url(world, endpoint, "settings/"), data)
    assert response.status_code == 302, response.context["settings_form"].errors
    settings = endpoint.monitor_settings
    settings.refresh_from_db()
    assert settings.thresholds == {"classifier_auc": 0.6, "min_current_rows": 50}
    assert settings.window_hours == 6
    page = client.get(_monitor_url(world, endpoint)).content.decode()
    assert "Default:" in page and "Sample sizes and noise" in page
    assert 'name="threshold_classifier_auc" value="0.6"' in page


def test_a_viewer_cannot_change_the_settings(world, tmp_path) -> None:
    endpoint = _endpoint(world, tmp_path)
    client = _client(world.users["viewer"])
    page = client.get(_monitor_url(world, endpoint)).content.decode()
    assert 'id="save-monitor-settings"' not in page
    response = client.post(_monitor_url(world, endpoint, "settings/"), {"window_hours": "2"})
    assert response.status_code == 403


def _drift_rows(world, endpoint, *, statistics: int, result="stable") -> DriftJob:
    """A finished drift job of ``endpoint`` with ``statistics`` DriftStatistic rows."""
    now = timezone.now()
    job = DriftJob.objects.create(
        project=world.project,
        endpoint=endpoint,
        window_start=now - timedelta(hours=1),
        window_end=now,
        status="succeeded",
        result=result,
        reference_version=_window_version(world),
        report={"status": result, "checks": []},
    )
    for i in range(statistics):
        DriftStatistic.objects.create(
            job=job,
            endpoint=endpoint,
            check_name="tokens",
            name=f"statistic_{i}",
            value=0.1 * i,
            threshold=0.5,
            rule=">=",
            drifted=False,
            computed_at=now - timedelta(minutes=i),
        )
    return job


def _window_version(world):
    import pyarrow as pa

    from tests.datasets_app.tables import make_version

    return make_version(
        world, pa.table({"text": ["a b", "c d"]}), name=f"window {uuid.uuid4().hex[:8]}"
    )


def _delivery(alert, status="failed") -> WebhookDelivery:
    return WebhookDelivery.objects.create(
        alert=alert,
        endpoint=alert.endpoint,
        event="alert.opened",
        url="https://hooks.example.com/x",
        payload={},
        status=status,
        attempts=6,
        last_error="HTTP 500",
    )


def test_the_page_query_count_does_not_grow_with_rows(world, tmp_path) -> None:
    endpoint = _endpoint(world, tmp_path, canary=True)
    client = _client(world.users["manager"])
    url = _monitor_url(world, endpoint)
    _traffic(endpoint, ok=1, errors=0, limited=0)
    alert = _open_alert(endpoint)
    Alert.objects.filter(pk=alert.pk).update(retrain_dataset_version=_window_version(world))
    _delivery(alert)
    _drift_rows(world, endpoint, statistics=1)
    client.get(url)
    with CaptureQueriesContext(connection) as one:
        assert client.get(url).status_code == 200
    _traffic(endpoint, ok=30, errors=5, limited=3, canary=10, ago=600)
    _traffic(endpoint, ok=30, errors=5, limited=3, canary=10, ago=7200)
    for name in ("psi", "token_js_distance", "label_psi"):
        other = _open_alert(endpoint, statistic=name)
        Alert.objects.filter(pk=other.pk).update(retrain_dataset_version=_window_version(world))
        _delivery(other)
        _delivery(other, status="delivered")
    alert_services.alert_resolve(actor=world.users["manager"], alert=alert)
    for _ in range(3):
        _drift_rows(world, endpoint, statistics=4, result="drifted")
    with CaptureQueriesContext(connection) as many:
        response = client.get(url)
    assert response.status_code == 200
    assert len(response.context["drift"]) == 4 and len(response.context["resolved"]) == 1
    assert len(response.context["recent_checks"]) == 4
    assert len(many) == len(one), [q["sql"] for q in many.captured_queries]


def test_retrain_refused_says_why_on_the_page(world, tmp_path) -> None:
    """A drift alert whose window holds no request with text: the service's reason is shown,
    nothing is made."""
    endpoint = _endpoint(world, tmp_path)
    alert = _open_alert(endpoint)
    client = _client(world.users["engineer"])
    page = client.get(_monitor_url(world, endpoint)).content.decode()
    assert 'data-action="retrain"' in page
    response = client.post(
        f"/projects/{world.project.pk}/monitor/alerts/{alert.pk}/retrain/", follow=True
    )
    assert response.redirect_chain[-1][0].endswith("#alerts")
    assert [str(m) for m in response.context["messages"]]
    alert.refresh_from_db()
    assert alert.retrain_dataset_version is None


# --- the request log -----------------------------------------------------------------------------


def test_the_request_log_filters_by_status_version_and_time(world, tmp_path) -> None:
    endpoint = _endpoint(world, tmp_path, canary=True)
    _traffic(endpoint, ok=3, errors=2, limited=1, canary=2)
    client = _client(world.users["viewer"])
    url = _monitor_url(world, endpoint, "requests/")
    everything = client.get(url)
    assert everything.context["page"].paginator.count == 8
    errors = client.get(url + "?status_class=5xx")
    assert errors.context["page"].paginator.count == 2
    assert all(r.status_code == 500 for r in errors.context["page"])
    canary = client.get(url + f"?version={endpoint.canary_version_id}")
    assert canary.context["page"].paginator.count == 2
    since = (timezone.now() + timedelta(minutes=5)).isoformat()
    later = client.get(url, {"since": since})
    assert later.context["page"].paginator.count == 0
    slow = client.get(url + "?min_latency_ms=40&status=500")
    assert slow.context["page"].paginator.count == 2
    html = everything.content.decode()
    assert "Hello" in html  # the endpoint stores text by default


def test_a_point_click_url_opens_its_bucket(world, tmp_path) -> None:
    """The URL monitor.js builds from a point (its trace's meta and its index) is a valid log
    filter holding that bucket's requests."""
    endpoint = _endpoint(world, tmp_path)
    _traffic(endpoint, ok=3, errors=1, limited=0)
    client = _client(world.users["viewer"])
    page = client.get(_monitor_url(world, endpoint) + "?range=1h")
    trace = page.context["figures"]["errors"]["data"][0]
    index = next(i for i, y in enumerate(trace["y"]) if y)
    meta = trace["meta"]
    since = datetime.fromisoformat(meta["start"]) + timedelta(seconds=index * meta["bucket"])
    until = since + timedelta(seconds=meta["bucket"])
    response = client.get(
        _monitor_url(world, endpoint, "requests/"),
        {
            "version": meta["version"],
            "canary": "true" if meta["canary"] else "false",
            # As the browser writes them (Date.toISOString).
            "since": since.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "until": until.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            meta["filter"]: meta["value"],
        },
    )
    assert response.status_code == 200, response.context["form"].errors
    assert response.context["page"].paginator.count == 1


@pytest.mark.parametrize(
    "query",
    [
        "status=abc",
        "status=99999",
        "min_latency_ms=-1",
        "since=yesterday",
        "version=1e99",
        "key=12345678901234567890",
        "status_class=3xx",
        "min_latency_ms=50&max_latency_ms=10",
        "canary=maybe",
    ],
)
def test_bad_filter_values_are_form_errors(world, tmp_path, query) -> None:
    endpoint = _endpoint(world, tmp_path)
    _traffic(endpoint, ok=1, errors=0, limited=0)
    response = _client(world.users["viewer"]).get(
        _monitor_url(world, endpoint, "requests/") + "?" + query
    )
    assert response.status_code == 400
    assert response.context["form"].errors
    assert 'class="errors"' in response.content.decode()


def test_text_is_shown_only_where_stored(world, tmp_path) -> None:
    endpoint = _endpoint(world, tmp_path)
    services.request_logs_ingest(
        records=[request_record(endpoint, prompt_text=None, completion_text=None)]
    )
    html = _client(world.users["viewer"]).get(_monitor_url(world, endpoint, "requests/"))
    assert html.content.decode().count("not stored") == 2


def test_the_request_log_query_count_does_not_grow_with_rows(world, tmp_path) -> None:
    endpoint = _endpoint(world, tmp_path)
    key, _ = services.serving_key_create(
        actor=world.users["manager"], project=world.project, name="app"
    )
    client = _client(world.users["viewer"])
    url = _monitor_url(world, endpoint, "requests/")
    services.request_logs_ingest(records=[request_record(endpoint, key_id=key.pk)])
    client.get(url)
    with CaptureQueriesContext(connection) as one:
        client.get(url)
    services.request_logs_ingest(
        records=[request_record(endpoint, key_id=key.pk) for _ in range(60)]
    )
    with CaptureQueriesContext(connection) as many:
        response = client.get(url + "?page=2")
    assert response.context["page"].number == 2
    assert len(many) == len(one)


def test_raters_never_reach_the_monitor_pages(world, tmp_path) -> None:
    endpoint = _endpoint(world, tmp_path)
    alert = _open_alert(endpoint)
    client = _client(world.users["rater"])
    base = f"/projects/{world.project.pk}/monitor/"
    for url in (
        base,
        _monitor_url(world, endpoint),
        _monitor_url(world, endpoint, "data/"),
        _monitor_url(world, endpoint, "requests/"),
    ):
        assert client.get(url).status_code == 404, url
    assert client.post(f"{base}alerts/{alert.pk}/resolve/").status_code == 404


def test_check_drift_now_queues_a_job_the_page_follows(world, tmp_path) -> None:
    endpoint = _endpoint(world, tmp_path)
    url = _monitor_url(world, endpoint, "drift/")
    assert _client(world.users["viewer"]).post(url).status_code == 403
    assert not DriftJob.objects.exists()
    client = _client(world.users["engineer"])
    response = client.post(url)
    assert response.status_code == 302 and response["Location"].endswith("#drift")
    job = DriftJob.objects.get(endpoint=endpoint)
    assert job.status == "queued" and job.created_by == world.users["engineer"]
    html = client.get(_monitor_url(world, endpoint)).content.decode()
    row = html[html.index(f'data-drift-job="{job.pk}"') :]
    row = row[: row.index(">")]
    assert f'data-job-url="/api/v1/drift-jobs/{job.pk}/"' in row
    assert 'data-job-active="true"' in row


def test_a_changed_threshold_is_drawn_as_a_step_line() -> None:
    from frontend.charts import drift_chart

    points = [
        {"t": "2026-01-01T10:00:00+00:00", "value": 0.5, "threshold": 0.55, "drifted": False},
        {"t": "2026-01-01T11:00:00+00:00", "value": 0.58, "threshold": 0.6, "drifted": False},
        {"t": "2026-01-01T12:00:00+00:00", "value": 0.7, "threshold": 0.6, "drifted": True},
    ]
    values, threshold = drift_chart("classifier_auc", points)["data"]
    assert threshold["y"] == [0.55, 0.6, 0.6] and threshold["line"]["shape"] == "hv"
    assert values["marker"]["color"][-1] == "#b42318"  # the drifted check in red
    assert drift_chart("classifier_auc", [])["layout"]["meta"]["empty"] is True


def test_thumbs_draw_the_feedback_score(world, tmp_path) -> None:
    endpoint = _endpoint(world, tmp_path)
    records = [request_record(endpoint) for _ in range(4)]
    services.request_logs_ingest(records=records)
    for record, score in zip(records, (1, 1, 1, -1), strict=True):
        services.feedback_record(
            actor=world.users["engineer"],
            endpoint=endpoint,
            response_id=record.response_id,
            score=score,
            source="playground",
        )
    response = _client(world.users["viewer"]).get(_monitor_url(world, endpoint) + "?range=1h")
    (trace,) = response.context["figures"]["feedback"]["data"]
    assert [y for y in trace["y"] if y is not None] == [0.75]
    assert 'data-total="feedback_score" data-unit="%">75%<' in response.content.decode()


def test_the_data_view_query_count_does_not_grow_with_rows(world, tmp_path) -> None:
    endpoint = _endpoint(world, tmp_path, canary=True)
    client = _client(world.users["viewer"])
    url = _monitor_url(world, endpoint, "data/")
    _traffic(endpoint, ok=1, errors=0, limited=0)
    client.get(url)
    with CaptureQueriesContext(connection) as one:
        client.get(url)
    _traffic(endpoint, ok=20, errors=3, limited=2, canary=5, ago=900)
    _traffic(endpoint, ok=20, errors=3, limited=2, canary=5, ago=5000)
    with CaptureQueriesContext(connection) as many:
        assert client.get(url).json()["totals"]["requests"] == 61
    assert len(many) == len(one)
