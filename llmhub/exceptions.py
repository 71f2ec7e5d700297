"""Exceptions the core raises for services, page views and the API alike (Django-side, no DRF)."""

from __future__ import annotations

from django.core.exceptions import ValidationError


class ServiceUnavailable(ValidationError):
    """A dependency the request needs (the job queue) cannot be reached right now.

    The API answers 503 with the message (see ``llmhub.api.exceptions``). It derives from
    ValidationError so that page forms, which already turn ValidationError into form errors,
    show the reason without special handling; nothing was written when it is raised.
    """

    status_code = 503
    code = "unavailable"

    def __init__(self, message: str) -> None:
        super().__init__(message, code=self.code)
