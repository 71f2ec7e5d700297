"""Converting an uploaded file into our Parquet table: the two streaming passes."""

from __future__ import annotations

import codecs
from collections.abc import Callable, Iterator
from pathlib import Path

from datasets_app.cleaning import layouts
from datasets_app.cleaning.options import IngestOptions
from datasets_app.cleaning.readers import parquet_io, streams
from datasets_app.cleaning.readers.csv_reader import CsvTypes, csv_batches
from datasets_app.cleaning.readers.findings import Findings
from datasets_app.cleaning.readers.json_reader import json_batches, jsonl_batches
from datasets_app.cleaning.readers.parquet_io import IngestResult
from datasets_app.cleaning.readers.sniff import (
    FORMATS,
    SNIFF_BYTES,
    check_content,
    detect_utf16,
    format_from_name,
)
from datasets_app.cleaning.readers.text_reader import txt_batches
from llmhub.reporting import JobCancelled, JobInputError, Reporter

DEFAULT_MAX_EXPANDED_BYTES = 2 * 1024**3
DEFAULT_MAX_EXPANSION_RATIO = 100.0


def convert_to_parquet(
    source: Path,
    *,
    output: Path,
    file_format: str | None = None,
    encoding: str = "utf-8",
    encoding_errors: str = "strict",
    txt_mode: str = "lines",
    chunk_chars: int = 2000,
    max_uncompressed_bytes: int = DEFAULT_MAX_EXPANDED_BYTES,
    max_expansion_ratio: float | None = DEFAULT_MAX_EXPANSION_RATIO,
    reporter: Reporter | None = None,
    filename: str | None = None,
    layout: str | None = None,
    column_roles: dict[str, str] | None = None,
) -> IngestResult:
    """Convert the uploaded file ``source`` into the Parquet table ``output``, streaming.

    The options are those of :class:`IngestOptions` (validated by it). ``file_format`` None
    infers it from ``filename`` (default: the source's name; gzip is also detected by its
    magic bytes). UTF-16 text (with a byte order mark, or told by its zero bytes) is
    converted to UTF-8 first. ``max_uncompressed_bytes`` bounds the decompressed data and
    ``max_expansion_ratio`` how many times gzip (or Parquet) data may expand. All rows go in
    one column ``text`` for txt. ``layout`` (with the ``column_roles`` naming its columns):
    every row is checked by ``datasets_app.cleaning.layouts.check_rows``.

    Raises JobInputError, with no output left behind, for anything wrong with the input; what
    was accepted but is worth a word (NUL removed, NaN, long lines, no text column) is in the
    result's ``warnings``.
    """
    options = IngestOptions(
        file_format=file_format,
        encoding=encoding,
        encoding_errors=encoding_errors,
        txt_mode=txt_mode,
        chunk_chars=chunk_chars,
        column_roles=column_roles,
        layout=layout,
    )
    source, output = Path(source), Path(output)
    name = filename or source.name
    file_format = options.file_format or format_from_name(name)[0]
    if file_format not in FORMATS:
        raise JobInputError(f"Unknown format {file_format!r}; use one of {', '.join(FORMATS)}.")
    if options.layout and file_format not in ("csv", "tsv", "json", "jsonl"):
        raise JobInputError(f"{options.layout.capitalize()} data is read from JSONL or CSV.")
    if not source.is_file():
        raise JobInputError(f"The upload {name!r} is missing.")
    if source.stat().st_size == 0:
        raise JobInputError("The file is empty.")
    gzipped = streams.is_gzipped(source)
    if name.lower().endswith(".gz") and not gzipped:
        raise JobInputError(f"{name!r} ends in .gz but is not gzip-compressed.")
    limit, ratio = max_uncompressed_bytes, max_expansion_ratio
    with streams.open_binary(source, limit, ratio) as stream:
        head = stream.read(SNIFF_BYTES)
    check_content(file_format, head, name)

    def report(fraction: float, message: str) -> None:
        if reporter is not None:
            if reporter.should_stop():
                raise JobCancelled
            reporter.progress(fraction, message)

    output.parent.mkdir(parents=True, exist_ok=True)
    partial = parquet_io.partial_path(output)
    findings = Findings()
    temporary: list[Path] = []
    try:
        if file_format == "parquet":
            if gzipped:
                # Parquet needs random access: expand it first (counted, like any gzip stream).
                temporary.append(partial.with_suffix(".gunzip"))  # removed even on failure
                source = _expanded(source, temporary[-1], limit, ratio)
            rows = parquet_io.copy_parquet(
                source, partial, limit, report, max_ratio=ratio, findings=findings
            )
        else:
            codec = options.codec
            utf16 = detect_utf16(head) if codec in ("utf-8", "utf-16") else None
            if codec.startswith("utf-16") or utf16:
                # The line and CSV readers split bytes at b"\n": give them UTF-8.
                temporary.append(partial.with_suffix(".utf8"))  # removed even on failure
                source = _transcoded(source, temporary[-1], utf16 or codec, options, limit, ratio)
                codec, ratio = "utf-8", None  # already counted while converting
            rows = _convert_text(
                source, partial, file_format, codec, options, limit, ratio, report, findings
            )
        result = parquet_io.finish(partial, output, rows, [])
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        for path in temporary:
            path.unlink(missing_ok=True)
    if not any(c["type"] == "string" for c in result.columns):
        findings.note(
            "The table has no text column: cleaning, tokenizers, profiles of text and "
            "language-model training need one. Check the format and the header, or upload "
            "a table with text."
        )
    result.warnings = findings.messages() + result.warnings
    report(1.0, f"Read {rows:,} rows")
    return result


def _expanded(source: Path, target: Path, limit: int, ratio: float | None) -> Path:
    with streams.open_binary(source, limit, ratio) as stream, open(target, "wb") as handle:
        while chunk := stream.read(streams.READ_BYTES):
            handle.write(chunk)
    return target


def _transcoded(
    source: Path,
    target: Path,
    encoding: str,
    options: IngestOptions,
    limit: int,
    ratio: float | None,
) -> Path:
    """``source`` (decompressed) decoded from UTF-16 and written as UTF-8 to ``target``."""
    decoder = codecs.getincrementaldecoder(encoding)(options.encoding_errors)
    written = 0
    with streams.open_binary(source, limit, ratio) as stream, open(target, "wb") as handle:
        while True:
            raw = stream.read(streams.READ_BYTES)
            try:
                text = decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as exc:
                at = written + exc.start
                raise JobInputError(
                    f"Invalid {encoding} near byte {at + 1:,} of the file: the file is not "
                    "UTF-16 text throughout. Save it as UTF-8 and upload it again, or choose to "
                    "replace invalid bytes."
                ) from None
            handle.write(text.lstrip("\ufeff").encode("utf-8") if not written else text.encode())
            written += len(raw)
            if not raw:
                return target


def _convert_text(
    source: Path,
    partial: Path,
    file_format: str,
    codec: str,
    options: IngestOptions,
    limit: int,
    ratio: float | None,
    report: Callable[[float, str], None],
    findings: Findings,
) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    def batches(progress: Callable[[float], None], notes: Findings | None) -> Iterator[list[dict]]:
        decoder = streams.Decoder(codec, options.encoding_errors)
        with streams.open_binary(source, limit, ratio) as stream:
            if file_format in ("csv", "tsv"):
                delimiter = "," if file_format == "csv" else "\t"
                rows = csv_batches(stream, decoder, delimiter=delimiter, findings=notes)
            elif file_format == "jsonl":
                rows = jsonl_batches(stream, decoder, findings=notes)
            elif file_format == "json":
                rows = json_batches(stream, decoder, findings=notes)
            else:
                rows = txt_batches(
                    stream,
                    decoder,
                    mode=options.txt_mode,
                    chunk_chars=options.chunk_chars,
                    findings=notes,
                )
            for batch in rows:
                progress(stream.raw.fraction())
                yield batch

    # Pass one: read and check every row, settle the schema. Only this pass counts findings
    # (the second reads the same bytes again).
    csv_types = CsvTypes(findings) if file_format in ("csv", "tsv") else None
    schemas, names, rows, repeated = [], {}, 0, 0
    for batch in batches(lambda f: report(0.05 + 0.4 * f, "Checking rows"), findings):
        if options.layout:
            repeated += layouts.check_rows(
                batch, layout=options.layout, column_roles=options.column_roles, first_row=rows + 1
            )
        if csv_types is not None:
            csv_types.observe(batch)
            names = names or dict.fromkeys(batch[0])
        else:
            # The schema is inferred from the values stored (labels as booleans).
            layouts.convert_rows(batch, layout=options.layout, column_roles=options.column_roles)
            for row in batch:
                names.update(dict.fromkeys(row))
            schemas.append(parquet_io.batch_schema(batch, rows + 1))
        rows += len(batch)
    if rows == 0:
        raise JobInputError("The file has no rows.")
    if repeated:
        columns = layouts.layout_columns(options.layout, options.column_roles)
        findings.note(layouts.repeated_prompt_warning(repeated, columns))
    if not names:
        raise JobInputError("The file has no columns: its rows are empty objects.")
    if csv_types is not None:
        schema = csv_types.schema(list(names))
    else:
        unified = parquet_io.unify(schemas, "across the file")
        schema = pa.schema([unified.field(n) for n in names])
        empty = [f.name for f in schema if pa.types.is_null(f.type)]
        if empty:
            findings.note(f"Columns with no values at all: {', '.join(empty)}.")
    schema = layouts.table_schema(schema, layout=options.layout, column_roles=options.column_roles)
    # Pass two: write.
    written = 0
    with pq.ParquetWriter(partial, schema, compression="zstd") as writer:
        for batch in batches(lambda f: report(0.45 + 0.5 * f, "Writing Parquet"), None):
            if csv_types is not None:
                batch = csv_types.convert(batch)
            layouts.convert_rows(batch, layout=options.layout, column_roles=options.column_roles)
            try:
                table = pa.Table.from_pylist(batch, schema=schema)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                raise JobInputError(
                    f"Rows {written + 1}-{written + len(batch)} do not fit the columns' "
                    f"types: {exc}."
                ) from None
            writer.write_table(table, row_group_size=parquet_io.ROW_GROUP_ROWS)
            written += len(batch)
    return rows
