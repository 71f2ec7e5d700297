"""One error shape for the whole API.

Every error body is ``{"error": {"code": ..., "message": ..., "fields": {...}}}`` (``fields``
only for validation errors: field name -> list of messages). Django's own ValidationError,
PermissionDenied and Http404 raised by services and selectors map to 400, 403 and 404 here, so
services stay free of DRF.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error
from rest_framework.views import exception_handler as drf_exception_handler


def _first_message(fields: dict | list | str) -> str:
    if isinstance(fields, str):
        return fields
    if isinstance(fields, list):
        return _first_message(fields[0]) if fields else "Invalid input."
    for key, value in fields.items():
        message = _first_message(value)
        return message if key in ("non_field_errors", "__all__") else f"{key}: {message}"
    return "Invalid input."


def exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(as_serializer_error(exc))
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) if str(exc) else "Not found.")
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) if str(exc) else None)

    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # a real crash: Django's 500 handling and logging

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
