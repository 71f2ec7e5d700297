"""Refuse NUL bytes in the URL and the query string before any view runs.

A NUL in a query parameter reached querysets and file names (``?split=%00`` was a 500 on
PostgreSQL, which refuses NUL in text); no endpoint or page has a use for one, so it is refused
here once for all of them. The body is not read: uploads install their size-limited handler
later, and JSON bodies are checked by :class:`llmhub.api.parsers.SafeJSONParser`.
"""

from __future__ import annotations

from collections.abc import Callable

from django.core.exceptions import BadRequest
from django.http import HttpRequest, HttpResponse

from llmhub.api.exceptions import api_error_response, is_api_request

NUL = "\x00"


def nul_parameter(request: HttpRequest) -> str | None:
    """A sentence naming where the request's URL holds a NUL byte, or None."""
    if NUL in request.path:
        return "The URL path may not contain NUL (%00) characters."
    for name, values in request.GET.lists():
        if NUL in name:
            return "A query parameter name contains a NUL (%00) character."
        if any(NUL in value for value in values):
            return f"Query parameter '{name}' may not contain NUL (%00) characters."
    return None


class RejectNulMiddleware:
    """400 for a NUL byte in the path or a query parameter: JSON under /api/, else Django's
    400 page (through ``handler400``)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        message = nul_parameter(request)
        if message is None:
            return self.get_response(request)
        if is_api_request(request):
            return api_error_response(400, "invalid", message, fields=_fields(request))
        raise BadRequest(message)


def _fields(request: HttpRequest) -> dict[str, list[str]] | None:
    names = [name for name, values in request.GET.lists() if any(NUL in v for v in values)]
    names = [name for name in names if NUL not in name]
    if not names:
        return None
    return {name: ["May not contain NUL (%00) characters."] for name in names}
