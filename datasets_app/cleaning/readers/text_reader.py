"""Plain text: a row per non-empty line, or the corpus cut into chunks of about N characters."""

from __future__ import annotations

from collections.abc import Iterator

from datasets_app.cleaning.readers import streams
from datasets_app.cleaning.readers.findings import Findings

BATCH_ROWS = 10_000


def txt_batches(
    stream,
    decoder: streams.Decoder,
    *,
    mode: str,
    chunk_chars: int,
    findings: Findings | None = None,
) -> Iterator[list[dict]]:
    """Rows ``{"text": ...}``: one per non-empty line (``mode="lines"``) or chunks."""
    batch: list[dict] = []
    if mode == "lines":
        for _number, line in streams.lines(stream, decoder, findings=findings):
            line = line.rstrip("\r\n")
            if line.strip():
                batch.append({"text": line})
                if len(batch) >= BATCH_ROWS:
                    yield batch
                    batch = []
    else:
        pending: list[str] = []
        size = 0
        for _number, piece in streams.lines(stream, decoder, allow_long=True, findings=findings):
            pending.append(piece)
            size += len(piece)
            if size >= chunk_chars:
                chunks = cut("".join(pending), chunk_chars)
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
            batch.extend({"text": chunk} for chunk in cut("".join(pending), chunk_chars))
    if batch:
        yield batch


def cut(text: str, size: int) -> list[str]:
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
        at = text.rfind("\n", low, high)
        if at < 0:
            at = text.rfind(" ", low, high)
        if at < 0:
            at = start + size
        piece = text[start:at].strip("\n")
        if piece.strip():
            chunks.append(piece)
        start = at
        while start < end and text[start] in "\n ":
            start += 1
    if text[start:].strip():
        chunks.append(text[start:])
    return chunks
