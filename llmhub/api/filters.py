"""The filter backend of every list: django-filter with number filters bounded.

A ``NumberFilter`` (``?project=``) parses into a Decimal of any size, and a value past a 64-bit
column reached the database (``OverflowError`` on SQLite: a 500). Every numeric form field of
every filterset gets the bounds of a signed 64-bit column, so such a value is a 400 naming the
parameter, like any other invalid filter value.
"""

from __future__ import annotations

from django import forms
from django.core.validators import MaxValueValidator, MinValueValidator
from django_filters.rest_framework import DjangoFilterBackend

from llmhub.api.serializers import INT64_MAX, INT64_MIN


class BoundedFilterBackend(DjangoFilterBackend):
    def get_filterset(self, request, queryset, view):
        filterset = super().get_filterset(request, queryset, view)
        if filterset is not None:
            for field in filterset.form.fields.values():
                if isinstance(field, forms.DecimalField | forms.IntegerField | forms.FloatField):
                    field.validators += [MinValueValidator(INT64_MIN), MaxValueValidator(INT64_MAX)]
        return filterset
