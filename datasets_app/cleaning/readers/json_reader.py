"""JSON Lines and JSON (an array of objects, or an object holding one): rows as dicts.

Every value is parsed with the same rules: nesting is bounded and integers must fit in 64
bits (both fail with the line and a sentence, not a parser crash); NaN and Infinity are
counted for a warning; NUL characters (``\\u0000``) are removed and counted."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from datasets_app.cleaning.readers.findings import Findings
from datasets_app.cleaning.readers.streams import READ_BYTES, Decoder, lines
from llmhub.reporting import JobInputError

BATCH_ROWS = 10_000
MAX_DEPTH = 100  # nested arrays and objects; deeper is almost surely hostile or broken
_NUL_ESCAPE = "\\u0000"
_DIGITS = re.compile(r"value has (\d+) digits")


class _ValueProblem(Exception):
    """Raised from inside the JSON parser's hooks; turned into a JobInputError with a line."""


class Rows(list):
    """A batch of rows with the line each row starts on, so that a row Arrow cannot store
    (an integer beyond 64 bits) is named by its line."""

    lines: list[int]


def huge_integer(exc: ValueError) -> str | None:
    """The sentence for Python's refusal of an integer of more than 4,300 digits, else None.

    (Integers are parsed by the C scanner at full speed; a hook per integer would make
    number-heavy files twice as slow to read. 64-bit overflow is caught when the batch is
    converted to Arrow.)"""
    found = _DIGITS.search(str(exc))
    if found is None or "integer string conversion" not in str(exc):
        return None
    return (
        f"holds an integer of {int(found.group(1)):,} digits, too large for a 64-bit column: "
        'write it as a string ("...") if it is an identifier, or as a float'
    )


class _Parser:
    """A ``json.JSONDecoder`` with our hooks, counting NaN and infinities."""

    def __init__(self, findings: Findings | None) -> None:
        self.findings = findings
        self.where = ""
        self.decoder = json.JSONDecoder(parse_constant=self._constant)

    def _constant(self, name: str) -> float:
        if self.findings is not None:
            self.findings.add("non_finite", self.where)
        return float(name)

    def check(self, value: Any, text: str, where: str) -> Any:
        """Depth and NUL checks on a parsed value (``text`` is its source, to skip both
        cheaply when it cannot be nested deep or hold a NUL)."""
        if text.count("[") + text.count("{") > MAX_DEPTH and _depth(value) > MAX_DEPTH:
            raise _ValueProblem(
                f"nests arrays or objects more than {MAX_DEPTH} levels deep: flatten it"
            )
        if _NUL_ESCAPE in text:
            value, count = _strip_nul(value)
            if count and self.findings is not None:
                self.findings.add("nul", where, count)
        return value


def _depth(value: Any) -> int:
    """How deeply arrays and objects nest in ``value`` (iterative: no recursion limit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _strip_nul(value: Any) -> tuple[Any, int]:
    """``value`` with NUL removed from every string (keys too), and how many were removed."""
    if isinstance(value, str):
        count = value.count("\x00")
        return (value.replace("\x00", "") if count else value), count
    if isinstance(value, list):
        total, items = 0, []
        for item in value:
            item, count = _strip_nul(item)
            items.append(item)
            total += count
        return items, total
    if isinstance(value, dict):
        total, out = 0, {}
        for key, item in value.items():
            key, key_count = _strip_nul(key)
            item, count = _strip_nul(item)
            out[key] = item
            total += key_count + count
        return out, total
    return value, 0


def jsonl_batches(
    stream, decoder: Decoder, *, findings: Findings | None = None
) -> Iterator[list[dict]]:
    """The objects of a JSON Lines file, one per non-blank line, in batches."""
    parser = _Parser(findings)
    batch = _new_rows()
    for number, line in lines(stream, decoder, findings=findings):
        if not line.strip():
            continue
        parser.where = f"line {number}"
        try:
            value = parser.check(parser.decoder.decode(line), line, f"line {number}")
        except json.JSONDecodeError as exc:
            raise JobInputError(
                f"Line {number} is not valid JSON: {exc.msg} at column {exc.colno}. Each line "
                "must be one complete JSON object."
            ) from None
        except _ValueProblem as exc:
            raise JobInputError(f"Line {number} {exc}.") from None
        except RecursionError:
            raise JobInputError(
                f"Line {number} nests arrays or objects too deeply for a table: flatten it."
            ) from None
        except ValueError as exc:
            if (sentence := huge_integer(exc)) is None:
                raise
            raise JobInputError(f"Line {number} {sentence}.") from None
        if not isinstance(value, dict):
            raise JobInputError(
                f"Line {number} is a JSON {json_kind(value)}, not an object: each line must "
                'be an object such as {"text": "..."}.'
            )
        batch.append(value)
        batch.lines.append(number)
        if len(batch) >= BATCH_ROWS:
            yield batch
            batch = _new_rows()
    if batch:
        yield batch


def _new_rows() -> Rows:
    rows = Rows()
    rows.lines = []
    return rows


def json_kind(value: Any) -> str:
    return {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )


class _JsonText:
    """A sliding window over the decoded text of a JSON file, for parsing one value at a time
    without holding the whole file."""

    _SPACE = re.compile(r"[ \t\r\n]*")

    def __init__(self, stream, decoder: Decoder, parser: _Parser) -> None:
        self.stream, self.decoder, self.parser = stream, decoder, parser
        self.buffer, self.position, self.line_base = "", 0, 0
        self.done = False

    def fill(self, at_least: int = READ_BYTES) -> bool:
        """Read more text; False at the end of the file (and then nothing moved)."""
        if self.done:
            return False
        raw = self.stream.read(max(at_least, READ_BYTES))
        if not raw:
            self.done = True
            tail = self.decoder.decode(b"", final=True)
            self.buffer += tail
            return bool(tail)
        if self.position > READ_BYTES:  # drop what was parsed
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
        self.peek()
        while True:
            line = self.line()
            self.parser.where = f"line {line}"
            try:
                value, end = self.parser.decoder.raw_decode(self.buffer, self.position)
            except json.JSONDecodeError as exc:
                # Incomplete in the window? Read more (doubling, so a large value is linear).
                if self.fill(len(self.buffer)):
                    continue
                line = self.line_base + self.buffer.count("\n", 0, exc.pos) + 1
                raise JobInputError(
                    f"{what} is not valid JSON (line {line}): {exc.msg}. The file may be "
                    "truncated or not JSON."
                ) from None
            except _ValueProblem as exc:
                raise JobInputError(f"{what} (line {line}) {exc}.") from None
            except RecursionError:
                raise JobInputError(
                    f"{what} (line {line}) nests arrays or objects too deeply for a table: "
                    "flatten it."
                ) from None
            except ValueError as exc:
                if (sentence := huge_integer(exc)) is None:
                    raise
                raise JobInputError(f"{what} (line {line}) {sentence}.") from None
            if end == len(self.buffer) and not self.done and isinstance(value, int | float):
                self.fill()  # a number cut by the window's end: parse it again whole
                continue
            try:
                value = self.parser.check(value, self.buffer[self.position : end], f"line {line}")
            except _ValueProblem as exc:
                raise JobInputError(f"{what} (line {line}) {exc}.") from None
            self.position = end
            return value


def json_batches(
    stream, decoder: Decoder, *, findings: Findings | None = None
) -> Iterator[list[dict]]:
    """The objects of a top-level JSON array, or of the first array inside a top-level
    object (``{"data": [...]}``), one at a time."""
    text = _JsonText(stream, decoder, _Parser(findings))
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
    batch = _new_rows()
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
                f"{json_kind(value)}, not an object: rows must be objects such as "
                '{"text": "..."}.'
            )
        batch.append(value)
        batch.lines.append(line)
        if len(batch) >= BATCH_ROWS:
            yield batch
            batch = _new_rows()
    if batch:
        yield batch
