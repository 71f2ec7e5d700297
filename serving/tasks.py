"""Periodic maintenance of the deploy stage: the request log's retention.

The inference process's runner purges on a timer of its own (every process may: deleting what
is past retention twice is harmless); this task lets a Celery beat or cron do it instead
(``celery -A llmhub.celery call serving.purge_request_logs``).
"""

from __future__ import annotations

from llmhub.celery import app
from serving.services import request_logs_purge


@app.task(name="serving.purge_request_logs", ignore_result=True)
def purge_request_logs_task() -> int:
    """Delete request-log rows older than their endpoint's retention; returns how many."""
    return request_logs_purge()


# The Monitor stage's drift runner: imported here, which Celery's autodiscovery loads.
from serving.monitoring import tasks as monitoring_tasks  # noqa: E402, F401
