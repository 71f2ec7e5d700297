"""Request parsing that refuses hostile JSON before any view sees it.

Python's ``json`` accepts ``NaN``/``Infinity`` literals, recurses once per nesting level (100,000
``[`` is a RecursionError) and returns strings holding NUL, which PostgreSQL refuses in text
columns. :class:`SafeJSONParser` is the default parser of every endpoint, so each of those is a
400 naming the problem, for every endpoint at once.
"""

from __future__ import annotations

import codecs
import json
from typing import Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

# Deeper than any body the API takes (recipes and model specs nest a few levels).
MAX_JSON_DEPTH = 64
NUL = "\x00"


class HostileInput(ValueError):
    """A value the API never accepts (NUL byte, non-finite number, nesting too deep)."""


def _refuse_constant(name: str) -> Any:
    raise HostileInput(f"{name} is not valid JSON; send a finite number or null.")


def find_nul(value: Any, path: str = "") -> str | None:
    """The path (``points[3].name``) of the first string or key holding a NUL byte, or None.

    Iterative, so that it is safe on any structure the parser let through.
    """
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if NUL in item:
                return where or "body"
        elif isinstance(item, dict):
            for key, child in item.items():
                child_path = f"{where}.{key}" if where else str(key)
                if isinstance(key, str) and NUL in key:
                    return child_path.replace(NUL, "\\u0000")
                stack.append((child, child_path))
        elif isinstance(item, list):
            stack.extend((child, f"{where}[{index}]") for index, child in enumerate(item))
    return None


def _depth_exceeds(value: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def loads_strict(text: str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` that refuses NaN/Infinity, nesting deeper than ``max_depth`` and NUL bytes
    in any string or key; raises :class:`HostileInput` (a ValueError) with a sentence."""
    # Fewer brackets than the limit cannot nest deeper than it: most bodies skip the walk.
    brackets = text.count("[") + text.count("{")
    try:
        data = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise HostileInput(f"The JSON nests deeper than {max_depth} levels.") from None
    if brackets > max_depth and _depth_exceeds(data, max_depth):
        raise HostileInput(f"The JSON nests deeper than {max_depth} levels.")
    # A NUL can only arrive as the escape \u0000 (raw control characters are invalid JSON).
    if "\\u0000" in text and (where := find_nul(data)) is not None:
        raise HostileInput(f"{where}: text may not contain NUL (\\u0000) characters.")
    return data


class SafeJSONParser(JSONParser):
    """DRF's JSON parser with :func:`loads_strict`: every problem is a 400 ParseError."""

    def parse(self, stream, media_type=None, parser_context=None):
        parser_context = parser_context or {}
        encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = codecs.getreader(encoding)(stream).read()
            return loads_strict(text)
        except HostileInput as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        except ValueError as exc:  # JSONDecodeError, bad encoding, a 5,000-digit integer
            raise ParseError(f"JSON parse error - {exc}") from None
