"""Query parameters read by @action views: integers and id lists, bounded, with a 400 naming
the parameter (NUL bytes never get here: :mod:`llmhub.api.middleware` refuses them)."""

from __future__ import annotations

from rest_framework.exceptions import ValidationError
from rest_framework.request import Request

from llmhub.api.serializers import INT64_MAX

MAX_IDS = 1000


def _parse_int(raw: str, name: str, *, min_value: int, max_value: int) -> int:
    text = raw.strip()
    if not (text.isascii() and text.lstrip("-").isdigit()) or len(text) > 20:
        raise ValidationError({name: [f"Give an integer, not '{raw[:40]}'."]})
    value = int(text)
    if not min_value <= value <= max_value:
        raise ValidationError({name: [f"Give an integer from {min_value} to {max_value}."]})
    return value


def query_int(
    request: Request,
    name: str,
    *,
    default: int | None = None,
    min_value: int = 0,
    max_value: int = INT64_MAX,
) -> int | None:
    """``?name=`` as an integer in ``[min_value, max_value]``; ``default`` when absent or empty."""
    raw = request.query_params.get(name)
    if raw is None or not raw.strip():
        return default
    return _parse_int(raw, name, min_value=min_value, max_value=max_value)


def query_id(request: Request, name: str, *, required: bool = False) -> int | None:
    """``?name=`` as an object id (a positive 64-bit integer)."""
    value = query_int(request, name, min_value=1)
    if value is None and required:
        raise ValidationError({name: ["Give an id."]})
    return value


def query_ids(request: Request, name: str, *, max_count: int = MAX_IDS) -> list[int]:
    """``?name=1,2,3`` as a list of object ids (empty when absent)."""
    raw = request.query_params.get(name, "")
    parts = [part for part in raw.split(",") if part.strip()]
    if len(parts) > max_count:
        raise ValidationError({name: [f"Give at most {max_count} ids."]})
    return [_parse_int(part, name, min_value=1, max_value=INT64_MAX) for part in parts]
