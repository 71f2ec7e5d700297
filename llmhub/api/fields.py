"""Serializer fields that only accept objects the requesting user may see."""

from __future__ import annotations

from collections.abc import Callable

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers


@extend_schema_field(OpenApiTypes.INT)
class ScopedPrimaryKeyRelatedField(serializers.PrimaryKeyRelatedField):
    """A primary key among ``selector(request.user)``; another team's id reads as unknown."""

    default_error_messages = {
        "does_not_exist": "No object with id {pk_value} was found among those you can see.",
    }

    def __init__(self, *, selector: Callable, **kwargs) -> None:
        self.selector = selector
        super().__init__(**kwargs)

    def get_queryset(self):
        request = self.context.get("request")
        if request is None:
            raise RuntimeError("ScopedPrimaryKeyRelatedField needs the request in its context")
        return self.selector(request.user)
