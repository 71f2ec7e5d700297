"""Turning an uploaded file into a Parquet table, streaming, with errors a user can act on.

Supported: CSV, TSV, JSON (an array of objects, or an object holding one such as
``{"data": [...]}``), JSON Lines, plain text (a document per line, or a corpus cut into
chunks) and Parquet, each optionally gzip-compressed (detected by its magic bytes); text in
UTF-8, another ASCII-compatible encoding, or UTF-16 (converted to UTF-8 first).

Nothing reads the whole file into memory: text formats are read in bounded pieces, decoded
incrementally and converted in batches, in two passes (one validates every row and settles the
schema, one writes with ``ParquetWriter``). Decompressed bytes are counted as they stream, so a
compressed bomb is stopped while it expands (by size and by expansion ratio). Every problem
with the input is a JobInputError saying where (line, row, byte) and what to do; what is
accepted but worth a word comes back as warnings. The output is written to a temporary file
and renamed at the end, so a failure leaves no output. The same input always gives the same
bytes (and so the same SHA-256).

One module per concern: ``sniff`` (names, formats, first bytes), ``streams`` (counted
decompression, decoding, lines), ``csv_reader``, ``json_reader``, ``text_reader`` (the
decoders), ``parquet_io`` (schemas, copying and writing Parquet), ``roles`` (column roles),
``findings`` (warnings) and ``convert`` (the two passes). This package re-exports the public
names.
"""

from datasets_app.cleaning.readers.convert import (
    DEFAULT_MAX_EXPANDED_BYTES,
    DEFAULT_MAX_EXPANSION_RATIO,
    convert_to_parquet,
)
from datasets_app.cleaning.readers.parquet_io import (
    ROW_GROUP_ROWS,
    IngestResult,
    type_name,
    write_rows,
    write_table,
)
from datasets_app.cleaning.readers.roles import (
    TEXT_ROLES,
    infer_column_roles,
    validate_column_roles,
)
from datasets_app.cleaning.readers.sniff import (
    FORMATS,
    GZIP_MAGIC,
    PARQUET_MAGIC,
    SNIFF_BYTES,
    detect_utf16,
    format_from_name,
    safe_filename,
    sniff_upload,
)
from datasets_app.cleaning.readers.streams import MAX_LINE_BYTES, CountingReader

__all__ = [
    "DEFAULT_MAX_EXPANDED_BYTES",
    "DEFAULT_MAX_EXPANSION_RATIO",
    "FORMATS",
    "GZIP_MAGIC",
    "MAX_LINE_BYTES",
    "PARQUET_MAGIC",
    "ROW_GROUP_ROWS",
    "SNIFF_BYTES",
    "TEXT_ROLES",
    "CountingReader",
    "IngestResult",
    "convert_to_parquet",
    "detect_utf16",
    "format_from_name",
    "infer_column_roles",
    "safe_filename",
    "sniff_upload",
    "type_name",
    "validate_column_roles",
    "write_rows",
    "write_table",
]
