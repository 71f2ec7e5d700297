"""Sending alert events to the endpoints' webhook URLs, with retries and backoff.

Alerts queue a :class:`WebhookDelivery` row (``alerts.enqueue_delivery``); nothing is sent
while a request, a check or a transaction waits. :func:`deliver_due` is the one sender, a
periodic function (``serving/apps.py``) that runs in every process:

- it claims one due delivery at a time (pending, ``next_attempt_at <= now``) with a
  conditional UPDATE moving ``next_attempt_at`` past the send's longest time: a lease, so two
  processes never send one delivery at once, and a process that dies mid-send leaves the
  delivery due again when its lease runs out (at least once, never lost);
- it sends outside any transaction, with a short timeout, no redirects followed, and the URL
  checked again (``llmhub.net.check_public_url``: DNS may have changed since it was saved);
- a 2xx answer marks it delivered; anything else counts an attempt, keeps the error and the
  status, and waits ``backoff(attempts)`` for the next; after ``MAX_ATTEMPTS`` it is failed,
  and stays, shown in the API and on the page, until someone retries it
  (:func:`delivery_retry`).

The body is the payload as compact JSON; ``X-LLMHub-Signature: sha256=<hex>`` is the HMAC-SHA256
of those exact bytes with the endpoint's webhook secret, when it has one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from llmhub.net import check_public_url
from projects.audit import record_event
from projects.permissions import Action
from projects.services import require
from serving.monitoring.models import DeliveryStatus, MonitorSettings, WebhookDelivery

logger = logging.getLogger(__name__)

# Each phase of the call (connect, write, read); settings.LLMHUB_WEBHOOK_TIMEOUT_SECONDS wins.
TIMEOUT_SECONDS = 5.0
MAX_ATTEMPTS = 6
BACKOFF_SECONDS = 10.0  # 10 s, 20 s, 40 s, 80 s, 160 s between the six attempts
# How long one run keeps claiming: the sweeper thread that runs it also sweeps jobs.
RUN_BUDGET_SECONDS = 20.0
BATCH = 50
USER_AGENT = "LLMHub-Webhook/1"
ERROR_LENGTH = 500


def timeout_seconds() -> float:
    return float(getattr(settings, "LLMHUB_WEBHOOK_TIMEOUT_SECONDS", TIMEOUT_SECONDS))


def lease_seconds() -> float:
    """How long a claim holds: past the slowest send (connect + write + read timeouts)."""
    return 4 * timeout_seconds() + 30.0


def backoff(attempts: int) -> timedelta:
    """The wait after the ``attempts``-th failed attempt."""
    return timedelta(seconds=BACKOFF_SECONDS * 2 ** max(attempts - 1, 0))


def body_of(payload: dict) -> bytes:
    """The exact bytes sent (and signed)."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


def signature(body: bytes, secret: str) -> str:
    """The ``X-LLMHub-Signature`` header value of ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Outcome:
    delivered: bool
    status: int | None = None
    error: str = ""
    refused: bool = False  # the URL is refused: no request was sent, no retry will help


def send(delivery: WebhookDelivery, *, secret: str, client) -> Outcome:
    """POST one delivery (no database access, no transaction: this is the slow part)."""
    try:
        url = check_public_url(delivery.url, field="url")
    except ValidationError as exc:
        reason = " ".join(exc.message_dict.get("url", exc.messages))
        # A host that does not resolve now may resolve later (DNS down): retried; a URL the
        # policy refuses (scheme, private address) never passes: failed at once.
        transient = "cannot be resolved" in reason or "resolves to no address" in reason
        return Outcome(delivered=False, error=f"URL refused: {reason}", refused=not transient)
    body = body_of(delivery.payload)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-LLMHub-Event": delivery.event,
        "X-LLMHub-Delivery": str(delivery.pk),
    }
    if secret:
        headers["X-LLMHub-Signature"] = signature(body, secret)
    import httpx

    try:
        # A stream, closed unread: the answer's body is never downloaded.
        with client.stream("POST", url, content=body, headers=headers) as response:
            status = response.status_code
    except httpx.TimeoutException as exc:
        return Outcome(
            delivered=False,
            error=f"The webhook timed out after {timeout_seconds():g} s ({type(exc).__name__}).",
        )
    except httpx.HTTPError as exc:
        return Outcome(delivered=False, error=f"The call failed: {type(exc).__name__}: {exc}")
    if 200 <= status < 300:
        return Outcome(delivered=True, status=status)
    if 300 <= status < 400:
        error = f"The webhook answered {status} (a redirect, which is not followed)."
    else:
        error = f"The webhook answered {status}."
    return Outcome(delivered=False, status=status, error=error)


def _claim(pk: int, now: datetime) -> datetime | None:
    """The lease's end if this process claimed delivery ``pk``, else None."""
    until = now + timedelta(seconds=lease_seconds())
    claimed = WebhookDelivery.objects.filter(
        pk=pk, status=DeliveryStatus.PENDING, next_attempt_at__lte=now
    ).update(next_attempt_at=until)
    return until if claimed else None


def _record(delivery: WebhookDelivery, outcome: Outcome, *, lease: datetime) -> None:
    """Store the outcome, if the lease is still ours (a conditional update)."""
    now = timezone.now()
    attempts = delivery.attempts + 1
    changes: dict = {"attempts": attempts, "response_status": outcome.status}
    if outcome.delivered:
        changes.update(status=DeliveryStatus.DELIVERED, delivered_at=now, last_error="")
    else:
        changes["last_error"] = outcome.error[:ERROR_LENGTH]
        if outcome.refused or attempts >= MAX_ATTEMPTS:
            changes["status"] = DeliveryStatus.FAILED
        else:
            changes["next_attempt_at"] = now + backoff(attempts)
    stored = WebhookDelivery.objects.filter(
        pk=delivery.pk, status=DeliveryStatus.PENDING, next_attempt_at=lease
    ).update(**changes)
    if not stored:
        logger.warning("Webhook delivery %s: the lease ran out before its outcome", delivery.pk)
    elif not outcome.delivered:
        logger.info("Webhook delivery %s, attempt %s: %s", delivery.pk, attempts, outcome.error)


def deliver_due(*, now: datetime | None = None, limit: int = BATCH) -> int:
    """Send the deliveries that are due (periodic; any number of processes at once). Returns
    how many this call attempted. Must not run inside a transaction: it calls out."""
    if transaction.get_connection().in_atomic_block:
        raise RuntimeError("deliver_due calls out over HTTP: never inside a transaction.")
    now = now or timezone.now()
    due = list(
        WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING, next_attempt_at__lte=now)
        .order_by("next_attempt_at", "id")
        .values_list("pk", flat=True)[:limit]
    )
    if not due:
        return 0
    import httpx

    started = time.monotonic()
    attempted = 0
    timeout = timeout_seconds()
    with httpx.Client(timeout=timeout, follow_redirects=False) as client:
        for pk in due:
            if time.monotonic() - started > RUN_BUDGET_SECONDS:
                break  # the rest waits for the next run (or another process)
            lease = _claim(pk, now)
            if lease is None:
                continue  # another process has it
            delivery = WebhookDelivery.objects.filter(pk=pk).first()
            if delivery is None:
                continue
            secret = (
                MonitorSettings.objects.filter(endpoint_id=delivery.endpoint_id)
                .values_list("webhook_secret", flat=True)
                .first()
            ) or ""
            try:
                outcome = send(delivery, secret=secret, client=client)
            except Exception as exc:  # counted as an attempt, never a delivery stuck on a lease
                logger.exception("Webhook delivery %s could not be sent", pk)
                outcome = Outcome(delivered=False, error=f"{type(exc).__name__}: {exc}")
            _record(delivery, outcome, lease=lease)
            attempted += 1
    return attempted


def delivery_retry(*, actor, delivery: WebhookDelivery) -> WebhookDelivery:
    """Send a failed delivery again (RUN_JOBS): back to pending, attempts from zero, due now,
    to the endpoint's current webhook URL (the one it failed on if none is set now)."""
    require(actor, delivery.endpoint.project.team, Action.RUN_JOBS)
    with transaction.atomic():
        current = WebhookDelivery.objects.select_for_update().get(pk=delivery.pk)
        if current.status != DeliveryStatus.FAILED:
            raise ValidationError(
                {"status": f"Only a failed delivery can be retried; this one is {current.status}."}
            )
        url = (
            MonitorSettings.objects.filter(endpoint_id=current.endpoint_id)
            .values_list("webhook_url", flat=True)
            .first()
        ) or current.url
        changes = {"status": [current.status, DeliveryStatus.PENDING], "attempts": current.attempts}
        if url != current.url:
            changes["url"] = [current.url, url]
        current.status = DeliveryStatus.PENDING
        current.attempts = 0
        current.next_attempt_at = timezone.now()
        current.url = url
        current.save(update_fields=["status", "attempts", "next_attempt_at", "url"])
        record_event(actor=actor, verb="webhook.retried", target=current, changes=changes)
    return current
