"""Names, formats and the first bytes of an upload: cheap checks the web process can afford
before it stores anything (and the worker repeats before it parses)."""

from __future__ import annotations

import codecs
import os
import unicodedata
import zlib

from llmhub.reporting import JobInputError

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
SNIFF_BYTES = 64 * 1024


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


def detect_utf16(sample: bytes) -> str | None:
    """``"utf-16"`` (with a byte order mark), ``"utf-16-le"`` or ``"utf-16-be"`` (without,
    told by the zero bytes of mostly-ASCII text), or None when the sample is not UTF-16."""
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) and not sample.startswith(
        codecs.BOM_UTF32_LE
    ):
        return "utf-16"
    head = sample[:4096]
    if len(head) < 4:
        return None
    even, odd = head[0::2], head[1::2]
    # ASCII text in UTF-16 has a zero in every other byte and almost none in the others.
    if odd.count(0) > 0.4 * len(odd) and even.count(0) < 0.05 * len(even):
        return "utf-16-le"
    if even.count(0) > 0.4 * len(even) and odd.count(0) < 0.05 * len(odd):
        return "utf-16-be"
    return None


def looks_binary(sample: bytes) -> bool:
    """Zero bytes or many control characters: not text in an ASCII-compatible encoding."""
    if b"\x00" in sample:
        return True
    control = sum(1 for b in sample if b < 9 or 13 < b < 32 or b == 127)
    return len(sample) > 0 and control / len(sample) > 0.05


def check_content(file_format: str, sample: bytes, filename: str) -> None:
    """JobInputError if the first bytes (decompressed) do not look like ``file_format``.

    UTF-16 text is looked at decoded (the worker converts it to UTF-8), not called binary."""
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
    utf16 = detect_utf16(sample)
    if utf16 is not None:
        # An odd trailing byte is a character cut by the sample's end, not an error.
        text = sample[: len(sample) // 2 * 2].decode(utf16, errors="replace")
        if not text.strip("\ufeff \t\r\n"):
            raise JobInputError("The file is empty.")
        if looks_binary(text[:4096].encode("utf-8", errors="replace")):
            raise JobInputError(
                f"{filename!r} looks like UTF-16 text with binary data in it: save it as UTF-8 "
                f"{file_format.upper()} and upload it again."
            )
    elif looks_binary(sample[:8192]):
        raise JobInputError(
            f"{filename!r} looks like a binary file (a spreadsheet, an archive, an image?), "
            f"not {file_format.upper()} text. Export it as {file_format.upper()} first."
        )
    else:
        text = sample.decode("utf-8", errors="replace")
    text = text.lstrip("\ufeff \t\r\n")
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
    check_content(detected, head, name)
    return name
