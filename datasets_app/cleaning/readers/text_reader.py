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
    a line far longer than ``size`` is cut at a space (or hard, if it has none).

    The rows of a text are its lines, so a chunk boundary at a line break takes that one break
    as the separator and keeps every other character: ``"\n".join(chunks)`` is the text (without
    its last line break), blank lines and indentation included, so pre-training and evaluation
    join the rows back into the text they came from. A cut at a space takes that space."""
    text = text.replace("\r\n", "\n").removesuffix("\n")
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
        if at < 0:  # no break and no space: a hard cut, nothing taken
            chunks.append(text[start : start + size])
            start += size
            continue
        chunks.append(text[start:at])
        start = at + 1
    chunks.append(text[start:])
    return chunks
