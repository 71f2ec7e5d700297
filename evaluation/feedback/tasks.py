"""Job runners of the feedback stage on the cpu queue: exports of a campaign's labels.

(The AI raters' and generation runners live in ``evaluation/feedback/ai_tasks.py``.) Loaded by
``llmhub.apps`` and Celery's autodiscovery, which list ``evaluation.feedback``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from evaluation.feedback.models import FeedbackExport
from evaluation.feedback.services import exports
from llmhub.jobs import JobContext, job_runner
from llmhub.reporting import JobCancelled, JobInputError


def write_export(export: FeedbackExport, output: Path, ctx: JobContext | None = None):
    """Write the export's rows to the Parquet file ``output``, a chunk at a time; returns the
    data stage's ``IngestResult`` (hash, size, columns) and the row count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from datasets_app.cleaning.readers import parquet_io

    columns = exports.COLUMNS[export.format]
    last = pa.bool_() if export.format == exports.UNPAIRED else pa.string()
    schema = pa.schema([(columns[0], pa.string()), (columns[1], pa.string()), (columns[2], last)])
    partial = parquet_io.partial_path(output)
    rows = 0
    pending: list[dict] = []
    try:
        with pq.ParquetWriter(partial, schema, compression="zstd") as writer:
            for chunk, done, total in exports.export_rows(export):
                pending += chunk
                if len(pending) >= parquet_io.ROW_GROUP_ROWS:
                    writer.write_table(pa.Table.from_pylist(pending, schema=schema))
                    rows, pending = rows + len(pending), []
                if ctx is not None:
                    if ctx.should_stop():
                        raise JobCancelled
                    ctx.progress(0.9 * done / max(total, 1), f"Read {done:,} of {total:,} items")
            if pending:
                writer.write_table(pa.Table.from_pylist(pending, schema=schema))
                rows += len(pending)
        result = parquet_io.finish(partial, output, rows, [])
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return result, rows


@job_runner(FeedbackExport)
def run_feedback_export(export: FeedbackExport, ctx: JobContext) -> None:
    """Export a campaign's labels as a new dataset version (its recipe names the campaign)."""
    with tempfile.TemporaryDirectory(prefix=f"llmhub-export-{export.pk}-") as scratch:
        result, rows = write_export(export, Path(scratch) / "export.parquet", ctx)
        if rows == 0:
            raise JobInputError(
                "No item of the campaign gives a row in this format (no judgments, or only "
                "ties, 'both bad', middling ratings, items without a majority, or as "
                "preference pairs, ratings of one response per item or equal ones): no "
                "version was created."
            )
        ctx.progress(0.95, f"Registering {rows:,} rows")
        version = exports.export_register(export=export, result=result, rows=rows)
    ctx.record(dataset_version=version, rows=rows)
