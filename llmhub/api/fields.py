"""Serializer fields that only accept objects the requesting user may see."""

from __future__ import annotations

from collections.abc import Callable

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from llmhub.api.serializers import INT64_MAX


@extend_schema_field(OpenApiTypes.INT)
class ScopedPrimaryKeyRelatedField(serializers.PrimaryKeyRelatedField):
    """A primary key among ``selector(request.user)``; another team's id reads as unknown."""

    default_error_messages = {
        "does_not_exist": "No object with id {pk_value} was found among those you can see.",
        "incorrect_type": "Give an id (a positive integer), not {data_type}.",
    }

    def __init__(self, *, selector: Callable, **kwargs) -> None:
        self.selector = selector
        super().__init__(**kwargs)

    def get_queryset(self):
        request = self.context.get("request")
        if request is None:
            raise RuntimeError("ScopedPrimaryKeyRelatedField needs the request in its context")
        return self.selector(request.user)

    def to_internal_value(self, data):
        # An id is a positive 64-bit integer; anything else (true, 1e30, "12abc") is not one of
        # the objects the user can see, said before a query is built from it.
        if isinstance(data, bool) or not isinstance(data, int | str):
            self.fail("incorrect_type", data_type=type(data).__name__)
        if isinstance(data, str) and not (data.strip().isascii() and data.strip().isdigit()):
            self.fail("incorrect_type", data_type="text")
        if not 0 < int(data) <= INT64_MAX:
            self.fail("does_not_exist", pk_value=data)
        return super().to_internal_value(int(data))
