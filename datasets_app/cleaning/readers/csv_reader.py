"""CSV and TSV: rows as dicts, and the integer / float / string type of each column."""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterator

from datasets_app.cleaning.readers.findings import Findings
from datasets_app.cleaning.readers.json_reader import _new_rows
from datasets_app.cleaning.readers.streams import MAX_LINE_BYTES, Decoder, lines
from llmhub.reporting import JobInputError

BATCH_ROWS = 10_000  # rows converted to Arrow at a time

csv.field_size_limit(MAX_LINE_BYTES)  # the default (128 KiB) refuses long documents


def csv_batches(
    stream, decoder: Decoder, *, delimiter: str, findings: Findings | None = None
) -> Iterator[list[dict]]:
    """The rows of a CSV (or TSV) file as dicts keyed by the header, in batches."""
    numbered = lines(stream, decoder, findings=findings)
    reader = csv.reader((text for _number, text in numbered), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise JobInputError("The file is empty.") from None
    except csv.Error as exc:
        raise JobInputError(f"The header row is not valid CSV: {exc}.") from None
    names = header_names(header)
    batch = _new_rows()  # with the line each row starts on (layout checks name it)
    row_number, start = 1, reader.line_num + 1
    try:
        for row in reader:
            row_number += 1
            row_start, start = start, reader.line_num + 1
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
            batch.lines.append(row_start)
            if len(batch) >= BATCH_ROWS:
                yield batch
                batch = _new_rows()
    except csv.Error as exc:
        raise JobInputError(f"Line {reader.line_num} is not valid CSV: {exc}.") from None
    if batch:
        yield batch


def header_names(header: list[str]) -> list[str]:
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


_INT = re.compile(r"^[+-]?(?:0|[1-9]\d*)$")  # no leading zeros: "007" is an id, not 7
_FLOAT = re.compile(
    r"^[+-]?(?:(?:0|[1-9]\d*)(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?|inf|infinity|nan)$",
    re.I,
)
_INT64 = (-(2**63), 2**63 - 1)


def _fits_int64(value: str) -> bool:
    digits = len(value.lstrip("+-"))
    if digits < 19:
        return True
    # Only short strings are converted: int() of thousands of digits is slow (and refused).
    return digits <= 19 and _INT64[0] <= int(value) <= _INT64[1]


class CsvTypes:
    """Infers integer / float / string per CSV column from every value (pass one). Empty
    cells are nulls in number columns and empty strings in text columns. Integers beyond 64
    bits make the column text (a float would round them, or turn them into infinity), with a
    warning; NaN and infinities in a float column are counted for a warning."""

    def __init__(self, findings: Findings | None = None) -> None:
        self.kind: dict[str, str] = {}
        self.findings = findings
        self.rows_seen = 0
        self.rows_written = 0

    def observe(self, rows: list[dict]) -> None:
        first_row = self.rows_seen + 1
        self.rows_seen += len(rows)
        for name in rows[0]:
            current = self.kind.get(name, "integer")
            if current == "string":
                continue
            for offset, row in enumerate(rows):
                value = row[name]
                if value == "":
                    continue
                if current in ("integer", "float") and _INT.match(value):
                    if _fits_int64(value):
                        continue
                    if self.findings is not None:
                        digits = len(value.lstrip("+-"))
                        self.findings.add(
                            f"huge_int:{name}",
                            f"row {first_row + offset}",
                            detail=f"{digits:,} digits",
                        )
                    current = "string"
                    break
                if current == "integer":
                    current = "float" if _FLOAT.match(value) else "string"
                if current == "float" and not _FLOAT.match(value):
                    current = "string"
                if current == "string":
                    break
            self.kind[name] = current

    def convert(self, rows: list[dict]) -> list[dict]:
        first_row = self.rows_written + 1
        self.rows_written += len(rows)
        casts = {
            name: {"integer": int, "float": float}[kind]
            for name, kind in self.kind.items()
            if kind != "string"
        }
        if not casts:
            return rows
        for name, cast in casts.items():
            non_finite, first = 0, None
            for offset, row in enumerate(rows):
                value = row[name]
                row[name] = number = None if value == "" else cast(value)
                if cast is float and number is not None and not math.isfinite(number):
                    non_finite += 1
                    first = first if first is not None else first_row + offset
            if non_finite and self.findings is not None:
                self.findings.add(f"non_finite:{name}", f"row {first}", non_finite)
        return rows

    def schema(self, names: list[str]):
        import pyarrow as pa

        arrow = {"integer": pa.int64(), "float": pa.float64(), "string": pa.string()}
        return pa.schema([(n, arrow[self.kind.get(n, "string")]) for n in names])
