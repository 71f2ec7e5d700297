"""One error shape for the whole API.

Every error body is ``{"error": {"code": ..., "message": ..., "fields": {...}}}`` (``fields``
only for validation errors: field name -> list of messages). Django's own ValidationError,
PermissionDenied and Http404 raised by services and selectors map to 400, 403 and 404 here, so
services stay free of DRF.

Nothing under ``/api/`` answers an HTML page: an unexpected exception in a view is a logged 500
with ``{"error": {"code": "server_error", ...}}``, and Django's own 400/403/404/500 handlers
(``llmhub/urls.py``), which run for errors raised before DRF, answer the same shape there.
"""

from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DataError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

from llmhub.exceptions import ServiceUnavailable

logger = logging.getLogger("llmhub.api")

API_PREFIX = "/api/"
SERVER_ERROR_MESSAGE = "The server failed to handle this request; the error has been logged."


def is_api_request(request: HttpRequest) -> bool:
    return request.path.startswith(API_PREFIX)


def api_error_response(
    status_code: int, code: str, message: str, *, fields: dict | None = None
) -> JsonResponse:
    """The one error shape, for code running outside DRF (middleware, Django's handlers)."""
    body: dict = {"code": code, "message": message}
    if fields:
        body["fields"] = fields
    return JsonResponse({"error": body}, status=status_code)


def _first_message(fields: dict | list | str) -> str:
    if isinstance(fields, str):
        return fields
    if isinstance(fields, list):
        return _first_message(fields[0]) if fields else "Invalid input."
    for key, value in fields.items():
        message = _first_message(value)
        return message if key in ("non_field_errors", "__all__") else f"{key}: {message}"
    return "Invalid input."


def exception_handler(exc: Exception, context: dict) -> Response:
    """DRF's exception handler: every exception becomes the one error shape."""
    if isinstance(exc, DataError):
        # The database refused a value (out of range for its column, malformed): the client's
        # input, which a bound in a serializer or service should have caught first.
        logger.warning("The database refused a value: %s", exc, exc_info=exc)
        exc = exceptions.ValidationError(
            {"non_field_errors": ["A value is out of range or malformed for where it is stored."]}
        )
    if isinstance(exc, ServiceUnavailable):  # a ValidationError subclass: 503, not 400
        exc = exceptions.APIException(exc.messages[0], code=exc.code)
        exc.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    elif isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(as_serializer_error(exc))
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) if str(exc) else "Not found.")
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) if str(exc) else None)

    response = drf_exception_handler(exc, context)
    if response is None:
        # A real crash: log it with its traceback, roll back, and still answer JSON.
        request = context.get("request")
        logger.error(
            "Internal server error in the API: %s %s",
            getattr(request, "method", "?"),
            getattr(request, "path", "?"),
            exc_info=exc,
        )
        set_rollback()
        return Response(
            {"error": {"code": "server_error", "message": SERVER_ERROR_MESSAGE}},
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )

    if isinstance(exc, exceptions.ValidationError):
        fields = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        body = {
            "code": "invalid",
            "message": _first_message(fields),
            "fields": fields,
        }
        response.status_code = status.HTTP_400_BAD_REQUEST
    else:
        detail = exc.detail if isinstance(exc, exceptions.APIException) else str(exc)
        code = getattr(detail, "code", None) or getattr(exc, "default_code", "error")
        body = {"code": str(code), "message": str(detail)}
    response.data = {"error": body}
    return response


# --- Django's handlers (llmhub/urls.py): errors raised before a DRF view runs ---------------


def handler400(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if is_api_request(request):
        message = str(exception) if exception and str(exception) else "Bad request."
        return api_error_response(400, "invalid", message)
    return defaults.bad_request(request, exception)


def handler403(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if is_api_request(request):
        message = str(exception) if exception and str(exception) else "Permission denied."
        return api_error_response(403, "permission_denied", message)
    return defaults.permission_denied(request, exception)


def handler404(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if is_api_request(request):
        return api_error_response(404, "not_found", f"No API route matches {request.path}.")
    return defaults.page_not_found(request, exception)


def handler500(request: HttpRequest) -> HttpResponse:
    if is_api_request(request):
        return api_error_response(500, "server_error", SERVER_ERROR_MESSAGE)
    return defaults.server_error(request)
