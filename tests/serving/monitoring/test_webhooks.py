"""Webhook deliveries against a local test server (http.server in a thread on 127.0.0.1): retries
with backoff, a server that times out, redirects not followed, a refused URL never called, the
signature checked by the server, attempts running out, retry by a person, and two senders at
once sending each delivery once (PostgreSQL).

The sender refuses to run inside a transaction, so these tests use committed rows
(``transactional_db``). Time is driven by ``now=``, never by sleeping through a backoff.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections import Counter
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone

from serving import services
from serving.monitoring import webhooks
from serving.monitoring.alerts import Observation, observe
from serving.monitoring.models import MonitorSettings, WebhookDelivery

SECRET = "s3cret-of-the-hook"


class Hook:
    """A webhook receiver: answers each request with the next of ``script`` (a status code,
    ``"hang"`` to sleep past the client's timeout, ``"redirect"``; the last one repeats), and
    keeps what it received, with whether the signature was right."""

    def __init__(self, script=(200,), *, secret: str = SECRET, delay: float = 0.0) -> None:
        self.script = list(script)
        self.secret = secret
        self.delay = delay
        self.received: list[dict] = []
        self.lock = threading.Lock()
        self.hang_seconds = 3.0
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                expected = "sha256=" + hmac.new(hook.secret.encode(), body, "sha256").hexdigest()
                with hook.lock:
                    step = hook.script[min(len(hook.received), len(hook.script) - 1)]
                    hook.received.append(
                        {
                            "path": self.path,
                            "headers": dict(self.headers),
                            "body": body,
                            "signed": self.headers.get("X-LLMHub-Signature") == expected,
                        }
                    )
                if hook.delay:
                    time.sleep(hook.delay)
                if step == "hang":
                    time.sleep(hook.hang_seconds)
                    step = 200
                if step == "redirect":
                    self.send_response(302)
                    self.send_header("Location", "http://127.0.0.1:1/elsewhere")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                payload = b'{"ok": true}'
                self.send_response(step)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/llmhub"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook_server():
    started: list[Hook] = []

    def start(*script, **kw) -> Hook:
        hook = Hook(script or (200,), **kw)
        started.append(hook)
        return hook

    yield start
    for hook in started:
        hook.stop()


@pytest.fixture
def manager(world):
    return world.users["manager"]


@pytest.fixture
def make_endpoint(transactional_db, world, manager):
    def make(url: str, *, secret: str = SECRET, name: str = "bot"):
        endpoint = services.endpoint_create(actor=manager, project=world.project, name=name)
        MonitorSettings.objects.create(endpoint=endpoint, webhook_url=url, webhook_secret=secret)
        return endpoint

    return make


def _alert(endpoint, statistic: str = "prompt_length_psi"):
    (alert,) = observe(
        endpoint=endpoint,
        observations=[
            Observation(
                kind="drift",
                statistic=statistic,
                value=0.4,
                threshold=0.2,
                breached=True,
                message="PSI 0.4 >= 0.2",
            )
        ],
    )
    return alert


def _delivery(alert) -> WebhookDelivery:
    return WebhookDelivery.objects.get(alert=alert, event="alert.opened")


def test_500_then_200_is_delivered_on_the_second_attempt_after_the_backoff(
    make_endpoint, hook_server
) -> None:
    hook = hook_server(500, 200)
    alert = _alert(make_endpoint(hook.url))
    delivery = _delivery(alert)

    before = timezone.now()
    assert webhooks.deliver_due() == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.response_status) == ("pending", 1, 500)
    assert "answered 500" in delivery.last_error
    wait = delivery.next_attempt_at - before
    assert timedelta(seconds=10) <= wait < timedelta(seconds=15), wait

    # Not due yet: nothing is sent before the backoff has passed.
    assert webhooks.deliver_due() == 0
    assert webhooks.deliver_due(now=delivery.next_attempt_at - timedelta(seconds=1)) == 0
    assert len(hook.received) == 1

    assert webhooks.deliver_due(now=delivery.next_attempt_at) == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.response_status) == ("delivered", 2, 200)
    assert delivery.delivered_at is not None and delivery.last_error == ""
    assert len(hook.received) == 2
    assert webhooks.deliver_due(now=timezone.now() + timedelta(hours=1)) == 0  # sent once

    for request in hook.received:
        headers = request["headers"]
        assert request["path"] == "/hooks/llmhub"
        assert headers["Content-Type"] == "application/json"
        assert headers["User-Agent"].startswith("LLMHub")
        assert headers["X-LLMHub-Event"] == "alert.opened"
        assert headers["X-LLMHub-Delivery"] == str(delivery.pk)
        assert request["signed"], headers.get("X-LLMHub-Signature")
        body = json.loads(request["body"])
        assert body == delivery.payload
        assert body["alert"]["id"] == alert.pk and body["event"] == "alert.opened"


def test_signature_is_the_hmac_of_the_exact_body(make_endpoint, hook_server) -> None:
    hook = hook_server(200, secret="another secret")
    _alert(make_endpoint(hook.url, secret=SECRET))  # the endpoint signs with SECRET
    webhooks.deliver_due()
    (request,) = hook.received
    assert not request["signed"]  # a receiver with the wrong secret sees the mismatch
    expected = hmac.new(SECRET.encode(), request["body"], hashlib.sha256).hexdigest()
    assert request["headers"]["X-LLMHub-Signature"] == f"sha256={expected}"


def test_no_secret_no_signature(make_endpoint, hook_server) -> None:
    hook = hook_server(200)
    alert = _alert(make_endpoint(hook.url, secret=""))
    webhooks.deliver_due()
    (request,) = hook.received
    assert "X-LLMHub-Signature" not in request["headers"]
    assert _delivery(alert).status == "delivered"


def test_a_server_that_times_out_fails_the_attempt_and_is_retried(
    make_endpoint, hook_server, settings
) -> None:
    settings.LLMHUB_WEBHOOK_TIMEOUT_SECONDS = 0.5
    hook = hook_server("hang", 200)
    alert = _alert(make_endpoint(hook.url))
    started = time.monotonic()
    assert webhooks.deliver_due() == 1
    elapsed = time.monotonic() - started
    assert elapsed < 2.0, elapsed  # the timeout, not the server's 3 s
    delivery = _delivery(alert)
    assert delivery.status == "pending" and delivery.attempts == 1
    assert "timed out" in delivery.last_error and delivery.response_status is None
    assert webhooks.deliver_due(now=delivery.next_attempt_at) == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("delivered", 2)


def test_a_loopback_url_is_refused_at_send_time_without_a_request(
    make_endpoint, hook_server, settings
) -> None:
    hook = hook_server(200)
    alert = _alert(make_endpoint(hook.url))  # saved while private URLs were allowed
    settings.LLMHUB_ALLOW_PRIVATE_URLS = False
    assert webhooks.deliver_due() == 1
    delivery = _delivery(alert)
    assert delivery.status == "failed" and delivery.attempts == 1
    assert "loopback" in delivery.last_error and "127.0.0.1" in delivery.last_error
    assert hook.received == []
    # Not retried on its own: failed stays failed (and shown) until someone retries it.
    assert webhooks.deliver_due(now=timezone.now() + timedelta(days=1)) == 0


def test_a_url_that_is_not_http_fails_at_once(make_endpoint) -> None:
    alert = _alert(make_endpoint("ftp://hooks.example.com/llmhub"))
    assert webhooks.deliver_due() == 1
    delivery = _delivery(alert)
    assert delivery.status == "failed" and "Only http:// and https://" in delivery.last_error


def test_a_host_that_does_not_resolve_is_retried_later(make_endpoint) -> None:
    alert = _alert(make_endpoint("http://no-such-host.invalid/hook"))
    assert webhooks.deliver_due() == 1
    delivery = _delivery(alert)
    assert delivery.status == "pending" and delivery.attempts == 1
    assert "cannot be resolved" in delivery.last_error
    assert delivery.next_attempt_at > timezone.now()


def test_redirects_are_not_followed(make_endpoint, hook_server) -> None:
    hook = hook_server("redirect")
    alert = _alert(make_endpoint(hook.url))
    webhooks.deliver_due()
    delivery = _delivery(alert)
    assert delivery.status == "pending" and delivery.response_status == 302
    assert "redirect" in delivery.last_error
    assert len(hook.received) == 1


def test_attempts_run_out_then_a_person_retries(make_endpoint, hook_server, world, api) -> None:
    hook = hook_server(503)
    alert = _alert(make_endpoint(hook.url))
    delivery = _delivery(alert)
    waits = []
    for attempt in range(1, webhooks.MAX_ATTEMPTS + 1):
        before = timezone.now()
        assert webhooks.deliver_due(now=delivery.next_attempt_at) == 1
        delivery.refresh_from_db()
        assert delivery.attempts == attempt
        if attempt < webhooks.MAX_ATTEMPTS:
            assert delivery.status == "pending"
            waits.append(round((delivery.next_attempt_at - before).total_seconds()))
    assert waits == [10, 20, 40, 80, 160]
    assert delivery.status == "failed" and "answered 503" in delivery.last_error
    assert len(hook.received) == webhooks.MAX_ATTEMPTS
    assert webhooks.deliver_due(now=timezone.now() + timedelta(days=1)) == 0

    # The API lists it as failed, never drops it; a viewer may not retry.
    client = api(world.users["engineer"])
    rows = client.get("/api/v1/webhook-deliveries/?status=failed").json()["results"]
    assert [row["id"] for row in rows] == [delivery.pk]
    assert rows[0]["last_error"] == delivery.last_error
    url = f"/api/v1/webhook-deliveries/{delivery.pk}/retry/"
    assert api(world.users["viewer"]).post(url, {}, format="json").status_code == 403

    hook.script = [200]
    hook.received.clear()
    response = client.post(url, {}, format="json")
    assert response.status_code == 200, response.content
    assert (response.json()["status"], response.json()["attempts"]) == ("pending", 0)
    assert webhooks.deliver_due() == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("delivered", 1)
    assert len(hook.received) == 1

    again = client.post(url, {}, format="json")  # a delivered one is not sent again
    assert again.status_code == 400
    assert "only a failed delivery" in again.json()["error"]["message"].lower()


def test_retry_goes_to_the_current_url(make_endpoint, hook_server, manager, settings) -> None:
    old = hook_server(200)
    alert = _alert(make_endpoint(old.url))
    settings.LLMHUB_ALLOW_PRIVATE_URLS = False
    webhooks.deliver_due()
    settings.LLMHUB_ALLOW_PRIVATE_URLS = True
    delivery = _delivery(alert)
    assert delivery.status == "failed"
    new = hook_server(200)
    MonitorSettings.objects.filter(endpoint=alert.endpoint).update(webhook_url=new.url)
    pending = _alert_delivery_pending(alert, manager)
    with pytest.raises(ValidationError, match="Only a failed"):
        webhooks.delivery_retry(actor=manager, delivery=pending)
    retried = webhooks.delivery_retry(actor=manager, delivery=delivery)
    assert retried.url == new.url and retried.status == "pending"
    assert webhooks.deliver_due() == 2
    assert old.received == []
    sent = sorted(int(request["headers"]["X-LLMHub-Delivery"]) for request in new.received)
    assert sent == sorted([delivery.pk, pending.pk])


def _alert_delivery_pending(alert, manager) -> WebhookDelivery:
    from serving.monitoring.alerts import alert_acknowledge

    alert_acknowledge(actor=manager, alert=alert)
    return WebhookDelivery.objects.get(alert=alert, event="alert.acknowledged")


def test_the_sender_refuses_to_run_inside_a_transaction(transactional_db) -> None:
    with pytest.raises(RuntimeError, match="never inside a transaction"), transaction.atomic():
        webhooks.deliver_due()


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="two senders at once need a real server"
)
def test_two_senders_at_once_send_each_delivery_once(make_endpoint, hook_server) -> None:
    hook = hook_server(200, delay=0.05)
    endpoint = make_endpoint(hook.url)
    alerts = [_alert(endpoint, statistic=f"stat_{i}") for i in range(12)]
    barrier = threading.Barrier(2)
    counts: list[int] = []
    errors: list[BaseException] = []

    def sender() -> None:
        try:
            barrier.wait(5)
            counts.append(webhooks.deliver_due())
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=sender) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    sent = Counter(request["headers"]["X-LLMHub-Delivery"] for request in hook.received)
    assert len(sent) == len(alerts) and set(sent.values()) == {1}, sent
    assert sum(counts) == len(alerts) and all(counts), counts  # both senders took a share
    assert set(WebhookDelivery.objects.values_list("status", flat=True)) == {"delivered"}
