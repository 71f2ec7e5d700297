"""Run the job sweep once (for cron, or when the in-process sweeps are turned off)."""

from django.core.management.base import BaseCommand

from llmhub.jobs import sweep_stale_jobs


class Command(BaseCommand):
    help = (
        "Fail or re-queue running jobs whose worker stopped sending heartbeats, and re-send"
        " queued jobs whose message may have been lost."
    )

    def handle(self, *args, **options) -> None:
        counts = sweep_stale_jobs()
        self.stdout.write(
            f"failed: {counts['failed']}, re-queued: {counts['requeued']},"
            f" re-sent: {counts['resent']}"
        )
