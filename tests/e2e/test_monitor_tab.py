"""The Monitor tab in the browser after real traffic: the official ``openai`` client calls a tiny
served model (a canary beside the main version) through the inference process; the tab and the
endpoint's monitor page show that traffic (charts drawn by Plotly with points, totals equal to
the request log), the page redraws itself as more traffic arrives, a click on a chart's point
opens the requests of its bucket, and an alert is acknowledged and then resolved."""

from __future__ import annotations

from datetime import datetime

import pytest
from playwright.sync_api import expect

from llmhub.jobs import wait_until
from serving.models import RequestLog
from serving.monitoring import alerts as alert_services
from serving.monitoring.models import Alert, AlertState
from serving.services import endpoint_set_canary
from tests.e2e.test_data_stage import _login, _shot
from tests.serving import conftest as serving_fixtures

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
tiny_lm_dir = serving_fixtures.tiny_lm_dir
serving_stack = serving_fixtures.serving_stack
deployed = serving_fixtures.deployed

# Where a chart's point is on the screen: plotly's own axis conversions, so the test clicks
# the point a person would.
POINT_POSITION = """([id, index]) => {
  const gd = document.getElementById(id);
  const trace = gd.data[index.trace];
  const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
  const box = gd.querySelector('.nsewdrag').getBoundingClientRect();
  const at = trace.x ? xa.d2l(trace.x[index.point]) : xa.d2l(trace.x0) + index.point * trace.dx;
  const x = xa.l2p(at);
  const y = ya.l2p(ya.d2l(trace.y[index.point]));
  return [box.left + x, box.top + y];
}"""


def _send(client, count: int, model: str = "chat") -> None:
    for i in range(count):
        client.completions.create(model=model, prompt=f"Hello number {i}", max_tokens=2)


def _logged(endpoint, count: int, stack) -> None:
    stack.flush()
    assert wait_until(
        lambda: RequestLog.objects.filter(endpoint=endpoint).count() >= count, timeout=15
    ), RequestLog.objects.filter(endpoint=endpoint).count()


def test_the_monitor_tab_shows_real_traffic_live_and_alerts_are_handled(
    page, deployed, serving_stack, monkeypatch
) -> None:
    from frontend.views import monitor

    monkeypatch.setattr(monitor, "LIVE_INTERVAL_MS", 1000)
    world, endpoint, manager = deployed.world, deployed.endpoint, deployed.manager
    canary = deployed.new_version()
    endpoint_set_canary(actor=manager, endpoint=endpoint, version=canary, percent=30)
    endpoint.refresh_from_db()
    stack = serving_stack(sync_seconds=0.1)
    client = stack.client(deployed.plaintext)
    _send(client, 20)
    _logged(endpoint, 20, stack)
    logged = RequestLog.objects.filter(endpoint=endpoint)
    canary_count = logged.filter(canary=True).count()
    assert 0 < canary_count < 20  # 30% of 20: the canary answered some, not all

    _login(page, manager)
    page.goto(f"/projects/{world.project.pk}/monitor/")
    row = page.locator("#monitor-endpoints tr[data-endpoint='chat']")
    expect(row.locator("[data-total='requests']")).to_have_text("20")
    expect(row.locator("[data-total='errors']")).to_have_text("0")
    row.locator(f"a[href$='/monitor/endpoints/{endpoint.pk}/']").click()
    page.wait_for_url(f"**/monitor/endpoints/{endpoint.pk}/")

    # The charts are drawn by Plotly, one series per version; their points add up to the log.
    chart = page.locator("#chart-requests")
    expect(chart).to_have_attribute("data-empty", "false")
    expect(page.locator("#traffic-totals [data-total='requests']")).to_have_text("20")
    traces = page.evaluate(
        "() => document.getElementById('chart-requests').data.map(t => ({name: t.name,"
        " n: t.y.filter(y => y > 0).length}))"
    )
    assert [t["name"] for t in traces] == [str(endpoint.version), f"{canary} (canary)"]
    assert all(t["n"] > 0 for t in traces)
    for name in ("latency", "tokens"):
        expect(page.locator(f"#chart-{name}")).to_have_attribute("data-empty", "false")
    expect(page.locator("#chart-feedback")).to_have_attribute("data-empty", "true")
    # Each trace names its version, for the request log behind its points.
    versions = page.evaluate(
        "() => document.getElementById('chart-requests').data.map(t => t.meta.version)"
    )
    assert versions == [endpoint.version_id, canary.pk]

    # Live: more traffic, and the open page shows it without a reload.
    page.evaluate("() => { window.beforeMore = true; }")
    _send(client, 5)
    _logged(endpoint, 25, stack)
    expect(page.locator("#traffic-totals [data-total='requests']")).to_have_text(
        "25", timeout=15_000
    )
    assert page.evaluate("() => window.beforeMore") is True
    _shot(page, "monitor-endpoint.png")

    # A click on the main version's busiest point opens the requests of that bucket.
    page.goto(f"/projects/{world.project.pk}/monitor/endpoints/{endpoint.pk}/?range=1h")
    expect(chart).to_have_attribute("data-empty", "false")
    ys = page.evaluate("() => document.getElementById('chart-requests').data[0].y")
    point = max(range(len(ys)), key=lambda i: ys[i] or 0)
    x, y = page.evaluate(POINT_POSITION, ["chart-requests", {"trace": 0, "point": point}])
    page.mouse.move(x, y)
    page.mouse.click(x, y)
    page.wait_for_url("**/requests/?*")
    params = page.evaluate("() => Object.fromEntries(new URL(location).searchParams)")
    assert int(params["version"]) in (endpoint.version_id, canary.pk)
    assert params["canary"] == ("true" if int(params["version"]) == canary.pk else "false")
    since = datetime.fromisoformat(params["since"])
    until = datetime.fromisoformat(params["until"])
    assert (until - since).total_seconds() == 60  # the 1-hour range's minute buckets
    expected = logged.filter(
        version_id=int(params["version"]),
        canary=params["canary"] == "true",
        created_at__gte=since,
        created_at__lt=until,
    ).count()
    assert expected > 0
    expect(page.locator("#log-count")).to_have_text(
        f"{expected} request{'s' if expected > 1 else ''}"
    )
    expect(page.locator("#request-log tbody tr[data-response]")).to_have_count(expected)
    _shot(page, "monitor-requests.png")

    # An alert, acknowledged and then resolved in the browser.
    alert = alert_services.observe(
        endpoint=endpoint,
        observations=[
            alert_services.Observation(
                kind="latency_p95",
                statistic="latency_p95",
                value=900.0,
                threshold=500.0,
                breached=True,
                message="p95 latency 900 ms is over the limit of 500 ms",
            )
        ],
    )[0]
    page.goto(f"/projects/{world.project.pk}/monitor/")
    expect(row.locator("[data-alerts]")).to_have_attribute("data-alerts", "1")
    _shot(page, "monitor-tab.png")
    page.goto(f"/projects/{world.project.pk}/monitor/endpoints/{endpoint.pk}/")
    alert_row = page.locator(f"#unresolved-alerts tr[data-alert='{alert.pk}']")
    expect(alert_row).to_contain_text("p95 latency 900 ms")
    alert_row.locator("button[data-action='acknowledge']").click()
    expect(alert_row.locator("[data-alert-state]")).to_have_text("Acknowledged")
    assert Alert.objects.get(pk=alert.pk).state == AlertState.ACKNOWLEDGED
    alert_row.locator("button[data-action='resolve']").click()
    expect(page.locator("#unresolved-alerts")).to_contain_text("No open alerts.")
    page.click("#resolved-alerts summary")
    expect(page.locator(f"#resolved-alerts li[data-alert='{alert.pk}']")).to_contain_text(
        "p95 latency 900 ms"
    )
    resolved = Alert.objects.get(pk=alert.pk)
    assert resolved.state == AlertState.RESOLVED and resolved.resolved_by == manager

    # The monitor settings: every error at once, next to its field; then saved.
    page.click("#monitor-settings summary")
    expect(page.locator("#monitor_reference_version option").first).to_contain_text("Default:")
    page.fill("#monitor_threshold_classifier_auc", "0.2")  # under its range (0.5 to 1)
    page.fill("#monitor_webhook_url", "ftp://hooks.example.com/llmhub")
    page.click("#save-monitor-settings")
    errors = page.locator("#monitor-settings .field .errors")
    expect(errors).to_have_count(2)
    expect(page.locator("#monitor-settings")).to_have_attribute("open", "")
    _shot(page, "monitor-settings.png")
    page.fill("#monitor_threshold_classifier_auc", "0.6")
    page.fill("#monitor_webhook_url", "")
    page.fill("#monitor_window_hours", "6")
    page.click("#save-monitor-settings")
    expect(page.locator("ul.messages")).to_contain_text("monitor settings saved")
    endpoint.monitor_settings.refresh_from_db()
    assert endpoint.monitor_settings.thresholds == {"classifier_auc": 0.6}
    assert endpoint.monitor_settings.window_hours == 6
