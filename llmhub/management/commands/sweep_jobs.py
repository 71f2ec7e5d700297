"""Run the stale-job sweep once (for cron, or when no Celery beat runs)."""

from django.core.management.base import BaseCommand

from llmhub.jobs import sweep_stale_jobs


class Command(BaseCommand):
    help = "Fail or re-queue running jobs whose worker stopped sending heartbeats."

    def handle(self, *args, **options) -> None:
        counts = sweep_stale_jobs()
        self.stdout.write(f"failed: {counts['failed']}, re-queued: {counts['requeued']}")
