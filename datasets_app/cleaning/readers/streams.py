"""Byte streams of an upload: decompression counted against the size and ratio limits,
incremental decoding that says where an invalid byte is, and lines read in bounded pieces."""

from __future__ import annotations

import codecs
import gzip
import io
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from datasets_app.cleaning.readers.findings import LONG_LINE_BYTES, Findings
from datasets_app.cleaning.readers.sniff import GZIP_MAGIC
from llmhub.reporting import JobInputError

MAX_LINE_BYTES = 64 * 1024 * 1024  # one line (a CSV field, a JSON Lines record) at most
READ_BYTES = 1 << 20
# Below this many expanded bytes the ratio is not judged: small files of repeated rows
# compress very well and are harmless.
RATIO_FLOOR_BYTES = 16 * 1024 * 1024


def _mib(size: int) -> str:
    return f"{size / 2**20:,.1f} MiB"


class CountingReader(io.RawIOBase):
    """Counts the (decompressed) bytes read and stops at the size limit, or once a gzip stream
    has expanded more than ``max_ratio`` times the compressed bytes read so far, so a
    compressed bomb is refused while it expands; turns corrupt gzip data into a
    JobInputError."""

    def __init__(
        self, inner: BinaryIO, limit: int, compressed: bool, size: int, max_ratio: float | None
    ) -> None:
        self.inner, self.limit, self.compressed, self.size = inner, limit, compressed, size
        self.max_ratio = max_ratio
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
        if self.compressed and self.max_ratio and self.count > RATIO_FLOOR_BYTES:
            read = max(self.inner.fileobj.tell(), 1)
            if self.count > self.max_ratio * read:
                raise JobInputError(
                    f"The gzip data expands more than {self.max_ratio:g} times, the limit "
                    f"({_mib(read)} compressed had already become {_mib(self.count)}): "
                    "refusing it as a compressed bomb. Upload real data, uncompressed or split "
                    "into smaller files."
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


def is_gzipped(path: Path) -> bool:
    with open(path, "rb") as probe:
        return probe.read(2) == GZIP_MAGIC


def open_binary(path: Path, limit: int, max_ratio: float | None = None) -> io.BufferedReader:
    """The file's bytes, gunzipped when it is gzip, counted against the limits."""
    compressed = is_gzipped(path)
    raw: BinaryIO = gzip.open(path, "rb") if compressed else open(path, "rb")  # noqa: SIM115
    counting = CountingReader(raw, limit, compressed, path.stat().st_size, max_ratio)
    return io.BufferedReader(counting, buffer_size=READ_BYTES)


def ascii_compatible(encoding: str) -> bool:
    try:
        return "a,\n".encode(encoding) == b"a,\n"
    except (LookupError, UnicodeError):
        return False


class Decoder:
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


def strip_nul(text: str, findings: Findings | None, where: str) -> str:
    """``text`` without NUL characters, counting them (PostgreSQL cannot store them)."""
    count = text.count("\x00")
    if not count:
        return text
    if findings is not None:
        findings.add("nul", where, count)
    return text.replace("\x00", "")


def lines(
    stream: io.BufferedReader,
    decoder: Decoder,
    *,
    allow_long: bool = False,
    findings: Findings | None = None,
) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of each line, with its line break and without NUL characters
    (counted in ``findings``, like lines over LONG_LINE_BYTES). A line longer than
    MAX_LINE_BYTES is an error, or (``allow_long``) comes in several pieces."""
    number = 0
    continued = False
    length = 0
    while True:
        raw = stream.readline(MAX_LINE_BYTES)
        if not raw:
            tail = decoder.decode(b"", final=True)
            if tail:
                yield number + 1, strip_nul(tail, findings, f"line {number + 1}")
            return
        if not continued:
            number += 1
            length = 0
        length += len(raw)
        complete = raw.endswith(b"\n")
        if not complete and len(raw) >= MAX_LINE_BYTES and not allow_long:
            raise JobInputError(
                f"Line {number} is longer than {MAX_LINE_BYTES // 2**20} MB: the file has no "
                "line breaks where it should, or one record is far too large."
            )
        ended = complete or len(raw) < MAX_LINE_BYTES  # a short read is the end of the file
        if ended and length > LONG_LINE_BYTES and findings is not None and not allow_long:
            findings.add("long_line", f"line {number}", detail=_mib(length))
        continued = not complete
        yield number, strip_nul(decoder.decode(raw), findings, f"line {number}")
