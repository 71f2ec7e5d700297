"""The filter backends of every list: django-filter with number filters bounded, and an
ordering filter that refuses unknown fields.

A ``NumberFilter`` (``?project=``) parses into a Decimal of any size, and a value past a 64-bit
column reached the database (``OverflowError`` on SQLite: a 500). Every numeric form field of
every filterset gets the bounds of a signed 64-bit column, so such a value is a 400 naming the
parameter, like any other invalid filter value.
"""

from __future__ import annotations

from django import forms
from django.core.exceptions import FieldDoesNotExist
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework.exceptions import ValidationError
from rest_framework.filters import OrderingFilter

from llmhub.api.serializers import INT64_MAX, INT64_MIN


class BoundedFilterBackend(DjangoFilterBackend):
    def get_filterset(self, request, queryset, view):
        filterset = super().get_filterset(request, queryset, view)
        if filterset is not None:
            for field in filterset.form.fields.values():
                if isinstance(field, forms.DecimalField | forms.IntegerField | forms.FloatField):
                    field.validators += [MinValueValidator(INT64_MIN), MaxValueValidator(INT64_MAX)]
        return filterset


class StrictOrderingFilter(OrderingFilter):
    """``?ordering=`` refusing what it cannot sort by, as unknown body fields are refused.

    DRF's filter drops unknown terms silently, so a typo (``?ordering=-create_at``) answered a
    200 in the default order. Here it is a 400 naming the parameter, the unknown terms and the
    fields the list sorts by. Blank terms (``?ordering=``, a trailing comma) are ignored.
    """

    def get_default_valid_fields(self, queryset, view, context=None) -> list[tuple[str, str]]:
        # A list without ``ordering_fields`` sorts by its serializer's fields (DRF's default),
        # but not by a JSON document: that order means nothing, so it is not offered.
        def is_json(name: str) -> bool:
            try:
                field = queryset.model._meta.get_field(name)
            except FieldDoesNotExist:
                return False
            return isinstance(field, models.JSONField)

        fields = super().get_default_valid_fields(queryset, view, context)
        return [(name, label) for name, label in fields if not is_json(name)]

    def remove_invalid_fields(self, queryset, fields, view, request) -> list[str]:
        fields = [term for term in fields if term]
        allowed = [
            name for name, _label in self.get_valid_fields(queryset, view, {"request": request})
        ]
        unknown = [term for term in fields if term.removeprefix("-") not in allowed]
        if unknown:
            choices = ", ".join(allowed) if allowed else "none: this list has a fixed order"
            raise ValidationError(
                {
                    self.ordering_param: [
                        f"Unknown ordering field(s): {', '.join(unknown)}. Allowed: {choices}"
                        " (prefix with - for descending)."
                    ]
                }
            )
        return super().remove_invalid_fields(queryset, fields, view, request)
