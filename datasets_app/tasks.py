"""The data job runner: ingest, profile, clean, split and tokenizer training on the cpu queue.

Each kind materializes its inputs locally, calls the plain runtime in ``datasets_app.cleaning``
in a scratch directory, then hands the outputs to a ``*_register`` service, which stores files
and creates rows in one transaction. A failure anywhere leaves no version behind.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from django.conf import settings

from datasets_app import services
from datasets_app.cleaning import options as opts
from datasets_app.models import DataJob, DataJobKind, Tokenizer
from datasets_app.uploads import SCRATCH_PREFIX, delete_upload
from llmhub import storage
from llmhub.jobs import JobContext, job_runner
from llmhub.reporting import JobInputError

logger = logging.getLogger(__name__)


@job_runner(DataJob)
def run_data_job(job: DataJob, ctx: JobContext) -> None:
    """Run one data job of any kind."""
    handler = {
        DataJobKind.INGEST: _ingest,
        DataJobKind.PROFILE: _profile,
        DataJobKind.CLEAN: _clean,
        DataJobKind.SPLIT: _split,
        DataJobKind.TOKENIZER: _tokenizer,
    }[job.kind]
    with tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}{job.pk}-") as scratch:
        handler(job, ctx, Path(scratch))


def _ingest(job: DataJob, ctx: JobContext, scratch: Path) -> None:
    from datasets_app.cleaning.readers import (
        convert_to_parquet,
        infer_column_roles,
        validate_column_roles,
    )

    params = job.params
    output = scratch / "table.parquet"
    try:
        options = opts.IngestOptions.from_params(params)  # the service's validator, again
        ctx.progress(0.02, f"Reading {params['filename']}")
        result = convert_to_parquet(
            storage.local_copy(params["upload"]),
            output=output,
            file_format=options.file_format,
            encoding=options.encoding,
            encoding_errors=options.encoding_errors,
            txt_mode=options.txt_mode,
            chunk_chars=options.chunk_chars,
            max_uncompressed_bytes=settings.LLMHUB_MAX_EXPANDED_BYTES,
            max_expansion_ratio=settings.LLMHUB_MAX_EXPANSION_RATIO,
            reporter=ctx,
            filename=params["filename"],
            layout=options.layout,
            column_roles=options.column_roles,
        )
        columns = [c["name"] for c in result.columns]
        roles = options.column_roles or infer_column_roles(result.columns)
        validate_column_roles(roles, columns)
        has_strings = any(c["type"] == "string" for c in result.columns)
        if has_strings and services.lacks_text_role(roles):
            # A table without strings is already warned about by the reader.
            result.warnings.append(services.no_text_role_warning(columns))
        version = services.version_register(
            dataset=job.dataset,
            local_path=output,
            sha256=result.content_sha256,
            row_count=result.row_count,
            size_bytes=result.size_bytes,
            schema=result.columns,
            column_roles=roles,
            recipe={
                "kind": "upload",
                "filename": params["filename"],
                "file_format": options.file_format or "inferred",
                "encoding": options.encoding,
                "encoding_errors": options.encoding_errors,
            },
            parent=None,
            actor=job.created_by,
            note=f"Uploaded {params['filename']}",
            warnings=result.warnings,
        )
    finally:
        # The raw upload has served its purpose (or failed): never keep half-ingested data,
        # nor the folder it came in.
        delete_upload(params["upload"])
    ctx.record(
        result_version=version, result={"rows": result.row_count, "warnings": result.warnings}
    )
    services.profile_queue(job=job, version=version)


def _profile(job: DataJob, ctx: JobContext, scratch: Path) -> None:
    from datasets_app.cleaning.profile import profile_table

    version = job.source_version
    params = opts.ProfileParams.from_params(job.params)
    tokenizer_dir = None
    if params.tokenizer:
        tokenizer = Tokenizer.objects.get(pk=params.tokenizer)
        tokenizer_dir = storage.local_directory(tokenizer.files_prefix, tokenizer.files)
    ctx.progress(0.05, "Profiling")
    profile = profile_table(
        storage.local_copy(version.file),
        column_roles=version.column_roles,
        tokenizer_dir=tokenizer_dir,
        reporter=ctx,
    )
    ctx.record(result=profile)


def _clean(job: DataJob, ctx: JobContext, scratch: Path) -> None:
    from datasets_app.cleaning.recipe import run_recipe

    version = job.source_version
    params = opts.CleanParams.from_params(job.params)
    opts.check_columns("text_columns", params.text_columns, version.columns)
    output = scratch / "cleaned.parquet"
    report = run_recipe(
        storage.local_copy(version.file),
        output=output,
        steps=params.steps,
        text_columns=params.text_columns,
        num_proc=params.num_proc,
        reporter=ctx,
    )
    report_data = report.to_dict()
    if report.rows_out == 0:
        raise JobInputError(
            "The recipe removed every row; no version was created. See the report of each step."
        )
    columns = [c["name"] for c in report.columns]
    roles = {role: col for role, col in version.column_roles.items() if col in columns}
    new_version = services.version_register(
        dataset=job.dataset,
        local_path=output,
        sha256=report.content_sha256,
        row_count=report.rows_out,
        size_bytes=report.size_bytes,
        schema=report.columns,
        column_roles=roles,
        recipe={
            "kind": "clean",
            "recipe": params.recipe_name,
            "steps": params.steps,
            "text_columns": params.text_columns,
        },
        parent=version,
        actor=job.created_by,
        note=f"Cleaned with {params.recipe_name or 'ad-hoc steps'}: "
        f"{report.rows_in} -> {report.rows_out} rows",
        warnings=version.warnings,
    )
    ctx.record(result=report_data, result_version=new_version)
    services.profile_queue(job=job, version=new_version)


def _split(job: DataJob, ctx: JobContext, scratch: Path) -> None:
    from datasets_app.cleaning.splits import split_table

    version = job.source_version
    options = opts.SplitParams.from_params(job.params)
    options.check_columns(version.columns)
    params = options.to_params()
    ctx.progress(0.1, "Splitting")
    splits = split_table(
        storage.local_copy(version.file),
        output_dir=scratch,
        ratios=options.ratios,
        seed=options.seed,
        stratify_column=options.stratify_column,
        by_column=options.by_column,
        strategy=options.strategy,
    )
    ctx.progress(0.8, "Storing splits")
    new_version = services.version_register(
        dataset=job.dataset,
        local_path=storage.local_copy(version.file),
        sha256=version.content_sha256,
        row_count=version.row_count,
        size_bytes=version.size_bytes,
        schema=version.schema,
        column_roles=version.column_roles,
        recipe={"kind": "split", **params},
        parent=version,
        actor=job.created_by,
        warnings=version.warnings,
        note="Split into " + ", ".join(f"{name} ({s.rows})" for name, s in splits.items()),
        splits=[
            {"name": name, "path": s.path, "sha256": s.sha256, "rows": s.rows}
            for name, s in splits.items()
        ],
    )
    ctx.record(
        result_version=new_version,
        result={"splits": {name: s.rows for name, s in splits.items()}},
    )


def _tokenizer(job: DataJob, ctx: JobContext, scratch: Path) -> None:
    from datasets_app.cleaning.tokenizer_training import token_stats, train_tokenizer

    version = job.source_version
    params = opts.TokenizerParams.from_params(job.params)
    text_columns = params.text_columns or opts.default_text_columns(
        version.schema, version.column_roles
    )
    opts.check_columns("text_columns", text_columns, version.columns)
    source = storage.local_copy(version.file)
    output_dir = scratch / "tokenizer"
    result = train_tokenizer(
        source,
        output_dir=output_dir,
        text_columns=text_columns,
        algorithm=params.algorithm,
        vocab_size=params.vocab_size,
        min_frequency=params.min_frequency,
        special_tokens=params.special_tokens,
        lowercase=params.lowercase,
        reporter=ctx,
    )
    ctx.progress(0.85, "Counting tokens")
    stats = token_stats(source, tokenizer_dir=output_dir, text_columns=text_columns)
    tokenizer = services.tokenizer_register(
        job=job, local_dir=output_dir, result=result.to_dict(), stats=stats
    )
    ctx.record(result_tokenizer=tokenizer, result={"vocab_size": result.vocab_size, "stats": stats})
