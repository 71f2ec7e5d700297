"""Remove what interrupted uploads and killed data jobs left behind (older than a limit)."""

from django.core.management.base import BaseCommand

from datasets_app.uploads import sweep_upload_leftovers


class Command(BaseCommand):
    help = (
        "Delete stored uploads no queued or running ingest job will read, empty upload folders,"
        " Django's temporary upload files and data-job scratch folders, once older than"
        " LLMHUB_UPLOAD_LEFTOVER_SECONDS (or --older-than seconds)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--older-than", type=int, default=None, metavar="SECONDS")

    def handle(self, *args, **options) -> None:
        removed = sweep_upload_leftovers(max_age_seconds=options["older_than"])
        self.stdout.write(", ".join(f"{kind}: {count}" for kind, count in removed.items()))
