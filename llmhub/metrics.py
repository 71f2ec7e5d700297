"""``GET /metrics`` of the web app: job queue depths and job outcomes by kind, for Prometheus.

Counted from the database on each scrape (one grouped query per job model), so every web
process reports the same figures and nothing is lost when one restarts; that is why outcomes
are gauges of the rows' counts rather than per-process counters (in PromQL,
``delta(llmhub:job_outcomes[1h])`` is how many ended in the hour; a deleted job lowers them).
Names follow the
inference process's (``llmhub:`` prefix, ``serving/engine/metrics.py``):

- ``llmhub:job_queue_depth{kind, status}``: jobs queued or running now;
- ``llmhub:job_outcomes{kind, outcome}``: jobs that ended succeeded, failed or cancelled;
- ``llmhub:job_oldest_queued_age_seconds{kind}``: how long the oldest queued job has waited
  (0 with none), the sign of a queue no worker takes from.

``kind`` is the job model's name in snake case (``training_job``, ``data_job``,
``evaluation_run``, ``drift_job``...), from the job registry (``llmhub.jobs``): the core imports
no stage app.

Who may scrape: with ``LLMHUB_METRICS_TOKEN`` set, requests carrying
``Authorization: Bearer <token>`` (any other is a 401); without it, only DEBUG, or a request
straight from a loopback or private address that no proxy relayed (no ``X-Forwarded-For`` or
``Forwarded`` header: behind a reverse proxy every client would look local), else a 403 saying
to set the token.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from collections.abc import Iterator

from django.conf import settings
from django.db.models import Count, Min
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

from llmhub.jobs import registered_job_models
from llmhub.models import ACTIVE_STATUSES, TERMINAL_STATUSES, JobStatus

QUEUE_DEPTH = "llmhub:job_queue_depth"
OUTCOMES = "llmhub:job_outcomes"
OLDEST_QUEUED = "llmhub:job_oldest_queued_age_seconds"
# Every name this module exports (the Grafana dashboard's test reads it).
METRIC_NAMES = (QUEUE_DEPTH, OUTCOMES, OLDEST_QUEUED)


def kind_name(model) -> str:
    """``TrainingJob`` -> ``training_job``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", model.__name__).lower()


class JobCollector:
    """Reads the job tables at each collection."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily(
            QUEUE_DEPTH, "Jobs queued or running now, by kind.", labels=["kind", "status"]
        )
        outcomes = GaugeMetricFamily(
            OUTCOMES, "Jobs that ended, by kind and outcome.", labels=["kind", "outcome"]
        )
        oldest = GaugeMetricFamily(
            OLDEST_QUEUED, "Seconds the oldest queued job has waited, by kind.", labels=["kind"]
        )
        now = timezone.now()
        for model in sorted(registered_job_models(), key=lambda m: m.__name__):
            kind = kind_name(model)
            counts = {status: 0 for status in JobStatus.values}
            first_queued = None
            for row in (
                model.objects.order_by()
                .values("status")
                .annotate(n=Count("pk"), first=Min("created_at"))
            ):
                counts[row["status"]] = row["n"]
                if row["status"] == JobStatus.QUEUED:
                    first_queued = row["first"]
            for status in ACTIVE_STATUSES:
                depth.add_metric([kind, status], counts[status])
            for status in TERMINAL_STATUSES:
                outcomes.add_metric([kind, status], counts[status])
            age = (now - first_queued).total_seconds() if first_queued else 0.0
            oldest.add_metric([kind], max(age, 0.0))
        yield depth
        yield outcomes
        yield oldest


def render() -> bytes:
    """The text exposition of the job metrics (a registry of its own per call: nothing global
    to clash with the engine's or a test's)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(JobCollector())
    return generate_latest(registry)


def _direct_private(request: HttpRequest) -> bool:
    if "HTTP_X_FORWARDED_FOR" in request.META or "HTTP_FORWARDED" in request.META:
        return False
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_loopback or address.is_private


def allowed(request: HttpRequest) -> tuple[bool, int, str]:
    """Whether ``request`` may read the metrics, and the status and reason when not."""
    token = getattr(settings, "LLMHUB_METRICS_TOKEN", "") or ""
    if token:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), token):
            return True, 200, ""
        return False, 401, "Send Authorization: Bearer <LLMHUB_METRICS_TOKEN>.\n"
    if settings.DEBUG or _direct_private(request):
        return True, 200, ""
    return (
        False,
        403,
        "Metrics are served to loopback and private addresses only; set LLMHUB_METRICS_TOKEN "
        "to scrape from elsewhere or through a proxy.\n",
    )


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    ok, status, reason = allowed(request)
    if not ok:
        response = HttpResponse(reason, status=status, content_type="text/plain")
        if status == 401:
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(render(), content_type=CONTENT_TYPE_LATEST)
