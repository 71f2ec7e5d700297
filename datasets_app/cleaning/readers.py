"""Turning an uploaded file into a Parquet table, streaming, with errors a user can act on.

Supported: CSV, TSV, JSON (an array of objects, or an object holding one such as
``{"data": [...]}``), JSON Lines, plain text (a document per line, or a corpus cut into
chunks) and Parquet, each optionally gzip-compressed (detected by its magic bytes).

Nothing reads the whole file into memory: text formats are read in bounded pieces, decoded
incrementally and converted in batches, in two passes (one validates every row and settles the
schema, one writes with ``ParquetWriter``). Decompressed bytes are counted as they stream, so a
compressed bomb is stopped while it expands. Every problem with the input is a JobInputError
saying where (line, row, byte) and what to do; the output is written to a temporary file and
renamed at the end, so a failure leaves no output. The same input always gives the same bytes
(and so the same SHA-256).
"""

from __future__ import annotations

import codecs
import csv
import gzip
import hashlib
import io
import json
import os
import re
import unicodedata
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from datasets_app.columns import ROLE_HINTS, ROLES
from llmhub.reporting import JobCancelled, JobInputError, Reporter

FORMATS = ("csv", "tsv", "json", "jsonl", "txt", "parquet")
_EXTENSIONS = {
    "csv": "csv",
    "tsv": "tsv",
    "tab": "tsv",
    "json": "json",
    "jsonl": "jsonl",
    "ndjson": "jsonl",
    "txt": "txt",
    "text": "txt",
    "parquet": "parquet",
    "pq": "parquet",
}
GZIP_MAGIC = b"\x1f\x8b"
PARQUET_MAGIC = b"PAR1"
BATCH_ROWS = 10_000  # rows converted to Arrow at a time
ROW_GROUP_ROWS = 50_000
MAX_LINE_BYTES = 64 * 1024 * 1024  # one line (a CSV field, a JSON Lines record) at most
SNIFF_BYTES = 64 * 1024
_READ_BYTES = 1 << 20

csv.field_size_limit(MAX_LINE_BYTES)  # the default (128 KiB) refuses long documents


@dataclass
class IngestResult:
    """What was written: ``row_count``, ``columns`` (``[{"name", "type"}]`` with type one of
    string, integer, float, boolean, list, struct, map, binary, date, timestamp, null...),
    ``content_sha256`` and ``size_bytes`` of the Parquet file at ``path``, and ``notes`` worth
    showing the user (e.g. columns with no values)."""

    path: Path
    row_count: int
    columns: list[dict[str, str]]
    content_sha256: str
    size_bytes: int
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable, without the local path (it means nothing to other machines)."""
        data = asdict(self)
        del data["path"]
        return data


# --- names and sniffing ---------------------------------------------------------------------


def safe_filename(filename: str) -> str:
    """The upload's name, stripped, if it is safe to store; else JobInputError saying why.

    Refused: empty names, path separators, "..", control or invisible characters, names of
    more than 200 characters."""
    name = unicodedata.normalize("NFC", (filename or "").strip())
    if not name:
        raise JobInputError("The file has no name.")
    if "/" in name or "\\" in name or ".." in name:
        raise JobInputError(
            f"The file name {name!r} contains a path separator or '..': give a plain file name "
            "such as data.csv."
        )
    if any(unicodedata.category(ch)[0] in "CZ" and ch != " " for ch in name):
        raise JobInputError(
            "The file name contains control or invisible characters: rename the file."
        )
    if name.startswith("."):
        raise JobInputError(f"The file name {name!r} starts with a dot: rename the file.")
    if len(name) > 200:
        raise JobInputError("The file name is longer than 200 characters: rename the file.")
    return name


def format_from_name(filename: str) -> tuple[str, bool]:
    """``(format, gzipped)`` from a file name such as ``data.jsonl.gz``."""
    lower = filename.lower()
    gzipped = lower.endswith(".gz")
    if gzipped:
        lower = lower[:-3]
    extension = lower.rsplit(".", 1)[-1] if "." in lower else ""
    if extension not in _EXTENSIONS:
        raise JobInputError(
            f"Cannot tell the format of {filename!r} from its extension. Use one of "
            ".csv, .tsv, .json, .jsonl, .txt, .parquet (optionally with .gz), or say the format."
        )
    return _EXTENSIONS[extension], gzipped


def _looks_binary(sample: bytes) -> bool:
    if b"\x00" in sample:
        return True
    control = sum(1 for b in sample if b < 9 or 13 < b < 32 or b == 127)
    return len(sample) > 0 and control / len(sample) > 0.05


def _check_content(file_format: str, sample: bytes, filename: str) -> None:
    """JobInputError if the first bytes (decompressed) do not look like ``file_format``."""
    if not sample.strip():
        raise JobInputError("The file is empty.")
    if file_format == "parquet":
        if not sample.startswith(PARQUET_MAGIC):
            raise JobInputError(
                f"{filename!r} is not a Parquet file (it does not start with the PAR1 "
                "signature). Check the file, or upload it with its real extension."
            )
        return
    if sample.startswith(PARQUET_MAGIC):
        raise JobInputError(
            f"{filename!r} is a Parquet file, not {file_format.upper()}: name it .parquet."
        )
    if _looks_binary(sample[:8192]):
        raise JobInputError(
            f"{filename!r} looks like a binary file (a spreadsheet, an archive, an image?), "
            f"not {file_format.upper()} text. Export it as {file_format.upper()} first."
        )
    text = sample.decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    if file_format == "json" and not text.startswith(("[", "{")):
        raise JobInputError(
            f"{filename!r} is not JSON: it should start with '[' (an array of objects) or "
            "'{' (an object holding one)."
        )
    if file_format == "jsonl" and not text.startswith("{"):
        raise JobInputError(
            f"{filename!r} is not JSON Lines: the first line should be a JSON object "
            '({"text": ...}), one object per line.'
        )


def sniff_upload(
    head: bytes | str | os.PathLike, *, filename: str, file_format: str | None = None
) -> str:
    """Cheap checks on an upload before it is stored: a safe name, a known format, and first
    bytes (decompressed when gzip) that look like that format. Reads at most 64 KiB.

    ``head`` is the first bytes of the upload, or a path to read them from. Returns the safe
    name; raises JobInputError with the reason (the web process answers 400 with it)."""
    name = safe_filename(filename)
    if not isinstance(head, bytes | bytearray):
        with open(head, "rb") as handle:
            head = handle.read(SNIFF_BYTES)
    head = bytes(head[:SNIFF_BYTES])
    if file_format is None:
        detected, gzipped = format_from_name(name)
    elif file_format in FORMATS:
        detected, gzipped = file_format, name.lower().endswith(".gz")
    else:
        raise JobInputError(f"Unknown format {file_format!r}; use one of {', '.join(FORMATS)}.")
    if head.startswith(GZIP_MAGIC):
        try:
            head = zlib.decompressobj(wbits=31).decompress(head, SNIFF_BYTES)
        except zlib.error as exc:
            raise JobInputError(f"{name!r} is not a valid gzip file: {exc}.") from None
    elif gzipped:
        raise JobInputError(f"{name!r} ends in .gz but is not gzip-compressed.")
    _check_content(detected, head, name)
    return name


# --- byte streams ---------------------------------------------------------------------------


class _CountingReader(io.RawIOBase):
    """Counts the (decompressed) bytes read and stops at the limit, so a compressed bomb is
    refused while it expands; turns corrupt gzip data into a JobInputError."""

    def __init__(self, inner: BinaryIO, limit: int, compressed: bool, size: int) -> None:
        self.inner, self.limit, self.compressed, self.size = inner, limit, compressed, size
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        try:
            data = self.inner.read(len(buffer))
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            where = f" after {self.count:,} bytes" if self.count else ""
            raise JobInputError(
                f"The gzip data is corrupt or truncated{where} ({exc}). Compress the file "
                "again and re-upload it."
            ) from None
        self.count += len(data)
        if self.count > self.limit:
            what = "expands to more than" if self.compressed else "is larger than"
            raise JobInputError(
                f"The file {what} {self.limit:,} bytes, the limit: refusing it"
                + (" (a compressed bomb?)." if self.compressed else ".")
                + " Split it into smaller files."
            )
        buffer[: len(data)] = data
        return len(data)

    def fraction(self) -> float:
        """How far through the file (by compressed position for gzip)."""
        if self.size <= 0:
            return 0.0
        position = self.inner.fileobj.tell() if self.compressed else self.count
        return min(1.0, position / self.size)

    def close(self) -> None:
        self.inner.close()
        super().close()


def _open_binary(path: Path, limit: int) -> io.BufferedReader:
    with open(path, "rb") as probe:
        compressed = probe.read(2) == GZIP_MAGIC
    raw: BinaryIO = gzip.open(path, "rb") if compressed else open(path, "rb")  # noqa: SIM115
    counting = _CountingReader(raw, limit, compressed, path.stat().st_size)
    return io.BufferedReader(counting, buffer_size=_READ_BYTES)


def _ascii_compatible(encoding: str) -> bool:
    try:
        return "a,\n".encode(encoding) == b"a,\n"
    except (LookupError, UnicodeError):
        return False


class _Decoder:
    """Incremental decoding with the position of an invalid byte: line, byte of that line,
    byte of the file."""

    def __init__(self, encoding: str, errors: str) -> None:
        self.encoding = encoding
        self.decoder = codecs.getincrementaldecoder(encoding)(errors)
        self.offset = 0  # bytes of the file consumed before the current piece
        self.lines = 0  # newlines seen before the current piece
        self.line_start = 0  # file offset where the current line started
        self.first = True

    def decode(self, raw: bytes, final: bool = False) -> str:
        if self.first:
            self.first = False
            if raw.startswith(codecs.BOM_UTF8) and self.encoding.lower().replace("_", "-") in (
                "utf-8",
                "utf8",
                "utf-8-sig",
            ):
                raw = raw[len(codecs.BOM_UTF8) :]
                self.offset += len(codecs.BOM_UTF8)
        pending = len(self.decoder.getstate()[0])
        try:
            text = self.decoder.decode(raw, final)
        except UnicodeDecodeError as exc:
            data = exc.object
            at = self.offset - pending + exc.start  # byte of the file
            before = data[: exc.start]
            line = self.lines + before.count(b"\n") + 1
            newline = before.rfind(b"\n")
            line_start = self.offset - pending + newline + 1 if newline >= 0 else self.line_start
            raise JobInputError(
                f"Invalid {self.encoding} at line {line}, byte {at - line_start + 1} of that "
                f"line (byte {at + 1:,} of the file): {data[exc.start : exc.start + 4]!r}. "
                "Upload it again with the right encoding (for example latin-1 or cp1252), or "
                "choose to replace invalid bytes."
            ) from None
        newlines = raw.count(b"\n")
        if newlines:
            self.line_start = self.offset + raw.rfind(b"\n") + 1
        self.lines += newlines
        self.offset += len(raw)
        return text


def _lines(
    stream: io.BufferedReader, decoder: _Decoder, *, allow_long: bool = False
) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of each line, with its line break. A line longer than
    MAX_LINE_BYTES is an error, or (``allow_long``) comes in several pieces."""
    number = 0
    continued = False
    while True:
        raw = stream.readline(MAX_LINE_BYTES)
        if not raw:
            tail = decoder.decode(b"", final=True)
            if tail:
                yield number + 1, tail
            return
        if not continued:
            number += 1
        complete = raw.endswith(b"\n")
        if not complete and len(raw) >= MAX_LINE_BYTES and not allow_long:
            raise JobInputError(
                f"Line {number} is longer than {MAX_LINE_BYTES // 2**20} MB: the file has no "
                "line breaks where it should, or one record is far too large."
            )
        continued = not complete
        yield number, decoder.decode(raw)


# --- format readers: each yields lists of row dicts -----------------------------------------


def _csv_batches(stream, decoder: _Decoder, *, delimiter: str) -> Iterator[list[dict]]:
    line_numbers = _lines(stream, decoder)
    reader = csv.reader((text for _number, text in line_numbers), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise JobInputError("The file is empty.") from None
    except csv.Error as exc:
        raise JobInputError(f"The header row is not valid CSV: {exc}.") from None
    names = _header_names(header)
    batch: list[dict] = []
    row_number = 1
    try:
        for row in reader:
            row_number += 1
            if not row or (len(row) == 1 and not row[0].strip() and len(names) > 1):
                continue  # a blank line
            if len(row) != len(names):
                raise JobInputError(
                    f"Row {row_number} (line {reader.line_num}) has {len(row)} fields but the "
                    f"header has {len(names)}: the file is ragged, or a field holds an "
                    f"unquoted {'tab' if delimiter == chr(9) else 'comma'} or unbalanced "
                    "quotes."
                )
            batch.append(dict(zip(names, row, strict=True)))
            if len(batch) >= BATCH_ROWS:
                yield batch
                batch = []
    except csv.Error as exc:
        raise JobInputError(f"Line {reader.line_num} is not valid CSV: {exc}.") from None
    if batch:
        yield batch


def _header_names(header: list[str]) -> list[str]:
    names, seen = [], set()
    for index, raw in enumerate(header, start=1):
        name = raw.strip() or f"column_{index}"
        if name in seen:
            raise JobInputError(
                f"The header names the column {name!r} twice: give each column its own name."
            )
        seen.add(name)
        names.append(name)
    if not names or names == ["column_1"]:
        raise JobInputError("The header row has no column names.")
    return names


def _jsonl_batches(stream, decoder: _Decoder) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for number, line in _lines(stream, decoder):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise JobInputError(
                f"Line {number} is not valid JSON: {exc.msg} at column {exc.colno}. Each line "
                "must be one complete JSON object."
            ) from None
        if not isinstance(value, dict):
            raise JobInputError(
                f"Line {number} is a JSON {_json_kind(value)}, not an object: each line must "
                'be an object such as {"text": "..."}.'
            )
        batch.append(value)
        if len(batch) >= BATCH_ROWS:
            yield batch
            batch = []
    if batch:
        yield batch


def _json_kind(value: Any) -> str:
    return {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )


class _JsonText:
    """A sliding window over the decoded text of a JSON file, for parsing one value at a time
    without holding the whole file."""

    _SPACE = re.compile(r"[ \t\r\n]*")

    def __init__(self, stream, decoder: _Decoder) -> None:
        self.stream, self.decoder = stream, decoder
        self.buffer, self.position, self.line_base = "", 0, 0
        self.done = False

    def fill(self, at_least: int = _READ_BYTES) -> bool:
        """Read more text; False at the end of the file (and then nothing moved)."""
        if self.done:
            return False
        raw = self.stream.read(max(at_least, _READ_BYTES))
        if not raw:
            self.done = True
            tail = self.decoder.decode(b"", final=True)
            self.buffer += tail
            return bool(tail)
        if self.position > _READ_BYTES:  # drop what was parsed
            self.line_base += self.buffer.count("\n", 0, self.position)
            self.buffer = self.buffer[self.position :]
            self.position = 0
        self.buffer += self.decoder.decode(raw)
        return True

    def line(self) -> int:
        return self.line_base + self.buffer.count("\n", 0, self.position) + 1

    def peek(self) -> str:
        """The next non-space character ('' at the end), without consuming it."""
        while True:
            self.position = self._SPACE.match(self.buffer, self.position).end()
            if self.position < len(self.buffer) or not self.fill():
                return self.buffer[self.position : self.position + 1]

    def expect(self, char: str, what: str) -> None:
        if self.peek() != char:
            found = self.peek() or "the end of the file"
            raise JobInputError(
                f"The JSON is not valid at line {self.line()}: expected {what}, found "
                f"{found!r}. The file may be truncated or not JSON."
            )
        self.position += 1

    def value(self, what: str) -> Any:
        """The next complete JSON value."""
        decoder = json.JSONDecoder()
        self.peek()
        while True:
            try:
                value, end = decoder.raw_decode(self.buffer, self.position)
            except json.JSONDecodeError as exc:
                # Incomplete in the window? Read more (doubling, so a large value is linear).
                if self.fill(len(self.buffer)):
                    continue
                line = self.line_base + self.buffer.count("\n", 0, exc.pos) + 1
                raise JobInputError(
                    f"{what} is not valid JSON (line {line}): {exc.msg}. The file may be "
                    "truncated or not JSON."
                ) from None
            if end == len(self.buffer) and not self.done and isinstance(value, int | float):
                self.fill()  # a number cut by the window's end: parse it again whole
                continue
            self.position = end
            return value


def _json_batches(stream, decoder: _Decoder) -> Iterator[list[dict]]:
    """The objects of a top-level JSON array, or of the first array inside a top-level
    object (``{"data": [...]}``), one at a time."""
    text = _JsonText(stream, decoder)
    first = text.peek()
    if not first:
        raise JobInputError("The file is empty.")
    if first == "{":
        text.position += 1
        found = False
        while text.peek() != "}":
            if found:  # the rows were read: the rest of the object is only checked
                text.expect(",", "',' or '}'")
            elif text.peek() == ",":
                text.position += 1
            key = text.value("A key of the top-level JSON object")
            text.expect(":", "':'")
            if not found and text.peek() == "[":
                yield from _json_array(text, where=f"{key!r}")
                found = True
            else:
                text.value(f"The value of {key!r}")
        text.position += 1
        if not found:
            raise JobInputError(
                "The JSON object holds no array of rows: use an array of objects, or an object "
                'such as {"data": [{...}, {...}]}.'
            )
    elif first == "[":
        yield from _json_array(text, where="the file")
    else:
        raise JobInputError(
            "The file is not a JSON array of objects: it should start with '[' or '{'."
        )
    if text.peek():
        raise JobInputError(
            f"Unexpected content after the JSON value at line {text.line()}: the file should "
            "hold one JSON array (or object)."
        )


def _json_array(text: _JsonText, *, where: str) -> Iterator[list[dict]]:
    text.expect("[", "'['")
    batch: list[dict] = []
    index = 0
    while True:
        if text.peek() == "]":
            text.position += 1
            break
        if index:
            text.expect(",", f"',' or ']' after item {index} of the array in {where}")
        if not text.peek():
            raise JobInputError("The JSON array is not closed: the file is truncated.")
        line = text.line()
        value = text.value(f"Item {index + 1} of the array in {where}")
        index += 1
        if not isinstance(value, dict):
            raise JobInputError(
                f"Item {index} of the array in {where} (line {line}) is a JSON "
                f"{_json_kind(value)}, not an object: rows must be objects such as "
                '{"text": "..."}.'
            )
        batch.append(value)
        if len(batch) >= BATCH_ROWS:
            yield batch
            batch = []
    if batch:
        yield batch


def _txt_batches(stream, decoder: _Decoder, *, mode: str, chunk_chars: int) -> Iterator[list[dict]]:
    batch: list[dict] = []
    if mode == "lines":
        for _number, line in _lines(stream, decoder):
            line = line.rstrip("\r\n")
            if line.strip():
                batch.append({"text": line})
                if len(batch) >= BATCH_ROWS:
                    yield batch
                    batch = []
    else:
        pending: list[str] = []
        size = 0
        for _number, piece in _lines(stream, decoder, allow_long=True):
            pending.append(piece)
            size += len(piece)
            if size >= chunk_chars:
                chunks = _cut("".join(pending), chunk_chars)
                pending, size = [], 0
                if not piece.endswith("\n") and chunks:
                    # The piece stops inside a long line: its last chunk continues there.
                    pending, size = [chunks[-1]], len(chunks[-1])
                    chunks = chunks[:-1]
                batch.extend({"text": chunk} for chunk in chunks)
                if len(batch) >= BATCH_ROWS:
                    yield batch
                    batch = []
        if pending:
            batch.extend({"text": chunk} for chunk in _cut("".join(pending), chunk_chars))
    if batch:
        yield batch


def _cut(text: str, size: int) -> list[str]:
    """Text of about ``size`` characters or more, as chunks: whole lines where lines are short;
    a line far longer than ``size`` is cut at spaces (or hard, if it has none)."""
    text = text.replace("\r\n", "\n").strip("\n")
    if not text.strip():
        return []
    if len(text) <= 2 * size:
        return [text]
    chunks, start, end = [], 0, len(text)
    while end - start > 2 * size:
        low, high = start + size // 2, start + size * 3 // 2
        cut = text.rfind("\n", low, high)
        if cut < 0:
            cut = text.rfind(" ", low, high)
        if cut < 0:
            cut = start + size
        piece = text[start:cut].strip("\n")
        if piece.strip():
            chunks.append(piece)
        start = cut
        while start < end and text[start] in "\n ":
            start += 1
    if text[start:].strip():
        chunks.append(text[start:])
    return chunks


# --- schema ---------------------------------------------------------------------------------


def type_name(arrow_type) -> str:
    """A simple name for an Arrow type: string, integer, float, boolean, list, struct, map,
    binary, date, timestamp, time, duration, null (dictionaries: their value type)."""
    import pyarrow as pa

    t = pa.types
    if t.is_dictionary(arrow_type):
        return type_name(arrow_type.value_type)
    checks = (
        (t.is_string, "string"),
        (t.is_large_string, "string"),
        (t.is_boolean, "boolean"),
        (t.is_integer, "integer"),
        (t.is_floating, "float"),
        (t.is_decimal, "float"),
        (t.is_list, "list"),
        (t.is_large_list, "list"),
        (t.is_fixed_size_list, "list"),
        (t.is_struct, "struct"),
        (t.is_map, "map"),
        (t.is_binary, "binary"),
        (t.is_large_binary, "binary"),
        (t.is_fixed_size_binary, "binary"),
        (t.is_date, "date"),
        (t.is_timestamp, "timestamp"),
        (t.is_time, "time"),
        (t.is_duration, "duration"),
        (t.is_null, "null"),
    )
    for check, name in checks:
        if check(arrow_type):
            return name
    return str(arrow_type)


_INT = re.compile(r"^[+-]?(?:0|[1-9]\d{0,17})$")  # no leading zeros: "007" is an id, not 7
_FLOAT = re.compile(
    r"^[+-]?(?:(?:0|[1-9]\d*)(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?|inf|nan)$", re.I
)


class _CsvTypes:
    """Infers integer / float / string per CSV column from every value (pass one). Empty
    cells are nulls in number columns and empty strings in text columns."""

    def __init__(self) -> None:
        self.kind: dict[str, str] = {}

    def observe(self, rows: list[dict]) -> None:
        for name in rows[0]:
            current = self.kind.get(name, "integer")
            if current == "string":
                continue
            for row in rows:
                value = row[name]
                if value == "":
                    continue
                if current == "integer" and not _INT.match(value):
                    current = "float" if _FLOAT.match(value) else "string"
                if current == "float" and not _FLOAT.match(value):
                    current = "string"
                if current == "string":
                    break
            self.kind[name] = current

    def convert(self, rows: list[dict]) -> list[dict]:
        casts = {
            name: {"integer": int, "float": float}[kind]
            for name, kind in self.kind.items()
            if kind != "string"
        }
        if not casts:
            return rows
        for row in rows:
            for name, cast in casts.items():
                value = row[name]
                row[name] = None if value == "" else cast(value)
        return rows

    def schema(self, names: list[str]):
        import pyarrow as pa

        arrow = {"integer": pa.int64(), "float": pa.float64(), "string": pa.string()}
        return pa.schema([(n, arrow[self.kind.get(n, "string")]) for n in names])


def _batch_schema(batch: list[dict], first_row: int):
    """The Arrow schema of a batch of JSON rows; a row Arrow cannot store is named."""
    import pyarrow as pa

    problems = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError)
    try:
        return pa.Table.from_pylist(batch).schema
    except problems:
        pass
    # Find the first row at fault (only on this error path: row by row).
    unified = None
    for offset, row in enumerate(batch):
        try:
            schema = pa.Table.from_pylist([row]).schema
        except problems as exc:
            raise JobInputError(
                f"Row {first_row + offset} cannot be stored: {exc}. A list must hold values "
                "of one kind, and integers must fit in 64 bits."
            ) from None
        where = f"row {first_row + offset}"
        unified = schema if unified is None else _unify([unified, schema], where)
    return unified


def _unify(schemas: list, where: str):
    import pyarrow as pa

    try:
        return pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise JobInputError(
            f"A column holds values of different kinds ({where}): {exc}. Make each column hold "
            "one kind of value (all text, all numbers, all lists...)."
        ) from None


# --- the conversion -------------------------------------------------------------------------


def convert_to_parquet(
    source: Path,
    *,
    output: Path,
    file_format: str | None = None,
    encoding: str = "utf-8",
    encoding_errors: str = "strict",
    txt_mode: str = "lines",
    chunk_chars: int = 2000,
    max_uncompressed_bytes: int = 2 * 1024**3,
    reporter: Reporter | None = None,
    filename: str | None = None,
) -> IngestResult:
    """Convert the uploaded file ``source`` into the Parquet table ``output``, streaming.

    ``file_format``: csv, tsv, json, jsonl, txt or parquet; ``None`` infers it from
    ``filename`` (default: the source's name; ``.gz`` is allowed, and gzip is also detected
    by its magic bytes). ``encoding`` (any ASCII-compatible codec: utf-8, latin-1, cp1252...)
    with ``encoding_errors`` "strict" (an invalid byte is an error saying where) or "replace"
    (U+FFFD). ``txt_mode``: "lines" (a row per non-empty line) or "chunks" (the corpus cut at
    line breaks into rows of about ``chunk_chars`` characters). ``max_uncompressed_bytes``
    bounds the decompressed data. All rows go in one column ``text`` for txt.

    Raises JobInputError, with no output left behind, for anything wrong with the input.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    source, output = Path(source), Path(output)
    name = filename or source.name
    if file_format is None:
        file_format, _ = format_from_name(name)
    if file_format not in FORMATS:
        raise JobInputError(f"Unknown format {file_format!r}; use one of {', '.join(FORMATS)}.")
    if encoding_errors not in ("strict", "replace"):
        raise JobInputError("encoding_errors must be 'strict' or 'replace'.")
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise JobInputError(
            f"Unknown encoding {encoding!r}: use utf-8, latin-1, cp1252..."
        ) from None
    if not _ascii_compatible(encoding):
        raise JobInputError(
            f"The encoding {encoding!r} is not supported (it does not encode ASCII as itself): "
            "convert the file to UTF-8 first."
        )
    if txt_mode not in ("lines", "chunks"):
        raise JobInputError("txt_mode must be 'lines' or 'chunks'.")
    if not isinstance(chunk_chars, int) or chunk_chars < 100:
        raise JobInputError("chunk_chars must be a whole number of at least 100.")
    if not source.is_file():
        raise JobInputError(f"The upload {name!r} is missing.")
    if source.stat().st_size == 0:
        raise JobInputError("The file is empty.")
    with open(source, "rb") as probe:
        gzipped = probe.read(2) == GZIP_MAGIC
    if name.lower().endswith(".gz") and not gzipped:
        raise JobInputError(f"{name!r} ends in .gz but is not gzip-compressed.")
    with _open_binary(source, max_uncompressed_bytes) as stream:
        head = stream.read(SNIFF_BYTES)
    _check_content(file_format, head, name)

    def report(fraction: float, message: str) -> None:
        if reporter is not None:
            if reporter.should_stop():
                raise JobCancelled
            reporter.progress(fraction, message)

    def batches(progress: Callable[[float], None]) -> Iterator[list[dict]]:
        decoder = _Decoder(encoding, encoding_errors)
        with _open_binary(source, max_uncompressed_bytes) as stream:
            if file_format in ("csv", "tsv"):
                delimiter = "," if file_format == "csv" else "\t"
                rows = _csv_batches(stream, decoder, delimiter=delimiter)
            elif file_format == "jsonl":
                rows = _jsonl_batches(stream, decoder)
            elif file_format == "json":
                rows = _json_batches(stream, decoder)
            else:
                rows = _txt_batches(stream, decoder, mode=txt_mode, chunk_chars=chunk_chars)
            for batch in rows:
                progress(stream.raw.fraction())
                yield batch

    output.parent.mkdir(parents=True, exist_ok=True)
    partial = _partial_path(output)
    notes: list[str] = []
    try:
        if file_format == "parquet" and gzipped:
            # Parquet needs random access: expand it first (counted, like any gzip stream).
            expanded = partial.with_suffix(".gunzip")
            try:
                with (
                    _open_binary(source, max_uncompressed_bytes) as stream,
                    open(expanded, "wb") as handle,
                ):
                    while chunk := stream.read(_READ_BYTES):
                        handle.write(chunk)
                rows = _copy_parquet(expanded, partial, max_uncompressed_bytes, report)
            finally:
                expanded.unlink(missing_ok=True)
        elif file_format == "parquet":
            rows = _copy_parquet(source, partial, max_uncompressed_bytes, report)
        else:
            # Pass one: read and check every row, settle the schema.
            csv_types = _CsvTypes() if file_format in ("csv", "tsv") else None
            schemas, names, rows = [], {}, 0
            for batch in batches(lambda f: report(0.05 + 0.4 * f, "Checking rows")):
                if csv_types is not None:
                    csv_types.observe(batch)
                    names = names or dict.fromkeys(batch[0])
                else:
                    for row in batch:
                        names.update(dict.fromkeys(row))
                    schemas.append(_batch_schema(batch, rows + 1))
                rows += len(batch)
            if rows == 0:
                raise JobInputError("The file has no rows.")
            if not names:
                raise JobInputError("The file has no columns: its rows are empty objects.")
            if csv_types is not None:
                schema = csv_types.schema(list(names))
            else:
                unified = _unify(schemas, "across the file")
                schema = pa.schema([unified.field(n) for n in names])
                empty = [f.name for f in schema if pa.types.is_null(f.type)]
                if empty:
                    notes.append(f"Columns with no values at all: {', '.join(empty)}.")
            # Pass two: write.
            written = 0
            with pq.ParquetWriter(partial, schema, compression="zstd") as writer:
                for batch in batches(lambda f: report(0.45 + 0.5 * f, "Writing Parquet")):
                    if csv_types is not None:
                        batch = csv_types.convert(batch)
                    try:
                        table = pa.Table.from_pylist(batch, schema=schema)
                    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                        raise JobInputError(
                            f"Rows {written + 1}-{written + len(batch)} do not fit the columns' "
                            f"types: {exc}."
                        ) from None
                    writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
                    written += len(batch)
        result = _finish(partial, output, rows, notes)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    report(1.0, f"Read {rows:,} rows")
    return result


def _partial_path(output: Path) -> Path:
    return output.with_name(f".{output.name}.{os.getpid()}.partial")


def _copy_parquet(source: Path, partial: Path, limit: int, report) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(source)
        metadata = parquet.metadata
        expanded = sum(
            metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups)
        )
        if max(expanded, source.stat().st_size) > limit:
            raise JobInputError(
                f"The table holds {expanded:,} bytes uncompressed, more than the limit of "
                f"{limit:,}. Split it into smaller files."
            )
        if metadata.num_rows == 0:
            raise JobInputError("The file has no rows.")
        if not parquet.schema_arrow.names:
            raise JobInputError("The file has no columns.")
        # Categorical (dictionary) columns become plain ones; file metadata is dropped, so the
        # same table always gives the same bytes.
        schema = pa.schema(
            [
                pa.field(f.name, f.type.value_type if pa.types.is_dictionary(f.type) else f.type)
                for f in parquet.schema_arrow
            ]
        )
        rows = expanded = 0
        with pq.ParquetWriter(partial, schema, compression="zstd") as writer:
            for batch in parquet.iter_batches(batch_size=ROW_GROUP_ROWS):
                expanded += batch.nbytes  # encodings (dictionaries) can hide the real size
                if expanded > limit:
                    raise JobInputError(
                        f"The table holds more than {limit:,} bytes uncompressed, the limit. "
                        "Split it into smaller files."
                    )
                table = pa.Table.from_batches([batch]).cast(schema)
                writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
                rows += batch.num_rows
                report(0.05 + 0.9 * rows / metadata.num_rows, f"Copied {rows:,} rows")
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
        raise JobInputError(f"The file is not a valid Parquet file: {exc}.") from None
    return rows


def _finish(partial: Path, output: Path, rows: int, notes: list[str]) -> IngestResult:
    import pyarrow.parquet as pq

    schema = pq.read_schema(partial)
    columns = [{"name": f.name, "type": type_name(f.type)} for f in schema]
    if not columns:
        raise JobInputError("The file has no columns.")
    digest = hashlib.sha256()
    with open(partial, "rb") as handle:
        while chunk := handle.read(_READ_BYTES):
            digest.update(chunk)
    os.replace(partial, output)
    return IngestResult(
        path=output,
        row_count=rows,
        columns=columns,
        content_sha256=digest.hexdigest(),
        size_bytes=output.stat().st_size,
        notes=notes,
    )


def write_table(table, output: Path) -> IngestResult:
    """Write an Arrow table atomically as our Parquet (zstd; deterministic bytes)."""
    return write_rows(table, None, output)


def write_rows(table, indices: Iterable[int] | None, output: Path) -> IngestResult:
    """Write the rows ``indices`` (all when None) of an Arrow table atomically as Parquet,
    taking them a row group at a time, so memory stays bounded for memory-mapped tables."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = _partial_path(output)
    schema = table.schema.remove_metadata()
    if indices is None:
        indices = np.arange(table.num_rows)
    indices = np.asarray(indices, dtype=np.int64)
    try:
        with pq.ParquetWriter(partial, schema, compression="zstd") as writer:
            if len(indices) == 0:
                writer.write_table(pa.Table.from_batches([], schema=schema))
            for start in range(0, len(indices), ROW_GROUP_ROWS):
                part = table.take(indices[start : start + ROW_GROUP_ROWS])
                writer.write_table(part.replace_schema_metadata(None).cast(schema))
        return _finish(partial, output, len(indices), [])
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


# --- column roles ---------------------------------------------------------------------------


TEXT_ROLES = ("text", "target", "prompt", "chosen", "rejected", "context", "question")
_ROLE_TYPES = {"label": ("string", "integer", "boolean"), "answers": ("struct", "list")}


def _typed(columns: list[str] | list[dict[str, str]]) -> list[dict[str, str | None]]:
    return [c if isinstance(c, dict) else {"name": c, "type": None} for c in columns]


def infer_column_roles(columns: list[str] | list[dict[str, str]]) -> dict[str, str]:
    """Guess ``{role: column}`` from column names with ``ROLE_HINTS`` (``document`` is text,
    ``summary`` is target, ``label`` is label...); first hint wins, a column gets one role.

    With column types (``[{"name", "type"}]``, as IngestResult.columns), a text role only
    goes to a string column, so a list column named ``target`` does not hide a string
    ``summary``. A table whose only unclaimed string column is unnamed by the hints (a
    plain-text corpus) gets it as ``text``."""
    typed = _typed(columns)
    roles: dict[str, str] = {}
    taken: set[str] = set()
    for role, hints in ROLE_HINTS.items():
        allowed = ("string",) if role in TEXT_ROLES else _ROLE_TYPES.get(role)
        candidates = {
            str(c["name"]).lower(): c["name"]
            for c in typed
            if c["type"] is None or allowed is None or c["type"] in allowed
        }
        for hint in hints:
            column = candidates.get(hint)
            if column is not None and column not in taken:
                roles[role] = column
                taken.add(column)
                break
    if not {"text", "prompt", "context"} & set(roles):
        strings = [
            c["name"] for c in typed if c["name"] not in taken and c["type"] in (None, "string")
        ]
        if len(strings) == 1:
            roles["text"] = strings[0]
    return roles


def validate_column_roles(roles: dict[str, str], columns: list[str] | list[dict[str, str]]) -> None:
    """JobInputError for an unknown role, a mapped column the table lacks, or (with typed
    columns) a text role mapped to a column that does not hold text."""
    if not isinstance(roles, dict):
        raise JobInputError("Column roles must map a role to a column name.")
    unknown = sorted(set(roles) - set(ROLES))
    if unknown:
        raise JobInputError(f"Unknown role(s): {', '.join(unknown)}. Roles: {', '.join(ROLES)}.")
    typed = {c["name"]: c["type"] for c in _typed(columns)}
    missing = sorted({str(column) for column in roles.values() if column not in typed})
    if missing:
        raise JobInputError(
            f"The mapped column(s) {', '.join(map(repr, missing))} are not in the table. Its "
            f"columns: {', '.join(map(str, typed))}."
        )
    for role, column in roles.items():
        kind = typed[column]
        allowed = ("string",) if role in TEXT_ROLES else _ROLE_TYPES.get(role)
        if kind is not None and allowed is not None and kind not in allowed:
            raise JobInputError(
                f"The {role!r} role needs a column of {' or '.join(allowed)}, but {column!r} "
                f"holds {kind}."
            )
