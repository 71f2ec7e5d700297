"""Serializer helpers shared by every app's API."""

from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator
from rest_framework import serializers

# A signed 64-bit column (BigIntegerField, SQLite's INTEGER): the widest an integer can go.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
FINITE_MESSAGE = "A valid number is required: a finite number, not NaN or Infinity."


def bound_field(field: serializers.Field) -> None:
    """Give an input field the bounds every value needs before it reaches a column.

    An ``IntegerField`` without a ``max_value``/``min_value`` gets those of a signed 64-bit
    column (a ModelSerializer's fields already carry their model column's range, which is
    narrower on PostgreSQL); a ``FloatField`` says plainly that NaN and Infinity are refused.
    Children of list and dict fields get the same.
    """
    if field.read_only:
        return
    if isinstance(field, serializers.IntegerField) and not getattr(field, "_bounded", False):
        field._bounded = True
        if field.max_value is None:
            field.max_value = INT64_MAX
            message = field.error_messages["max_value"].format(max_value=INT64_MAX)
            field.validators.append(MaxValueValidator(INT64_MAX, message=message))
        if field.min_value is None:
            field.min_value = INT64_MIN
            message = field.error_messages["min_value"].format(min_value=INT64_MIN)
            field.validators.append(MinValueValidator(INT64_MIN, message=message))
    elif isinstance(field, serializers.FloatField):
        field.error_messages["invalid"] = FINITE_MESSAGE
    elif isinstance(field, serializers.ListField | serializers.DictField):
        bound_field(field.child)


class StrictFieldsMixin:
    """Reject keys the serializer does not know, instead of silently ignoring them, and bound
    every integer and float field (:func:`bound_field`).

    A typo such as ``{"targt": 0.8}`` then gets a 400 naming the field rather than a success
    that did not do what the caller meant.
    """

    def get_fields(self):
        fields = super().get_fields()
        for field in fields.values():
            bound_field(field)
        return fields

    def to_internal_value(self, data):
        if isinstance(data, dict):
            known = {name for name, field in self.fields.items() if not field.read_only}
            unknown = sorted(set(data) - known)
            if unknown:
                raise serializers.ValidationError(
                    {name: ["Unknown field."] for name in unknown}
                    | {"non_field_errors": [f"Unknown field(s): {', '.join(unknown)}."]}
                )
        return super().to_internal_value(data)


class StrictSerializer(StrictFieldsMixin, serializers.Serializer):
    pass


class StrictModelSerializer(StrictFieldsMixin, serializers.ModelSerializer):
    pass


class JobSerializer(serializers.ModelSerializer):
    """The lifecycle fields every job kind shares; kinds extend ``Meta.fields``."""

    eta_seconds = serializers.SerializerMethodField()
    created_by = serializers.CharField(source="created_by.username", default=None, read_only=True)

    JOB_FIELDS = (
        "id",
        "project",
        "status",
        "progress",
        "progress_message",
        "error",
        "worker_host",
        "attempts",
        "cancel_requested_at",
        "heartbeat_at",
        "created_by",
        "created_at",
        "started_at",
        "finished_at",
        "eta_seconds",
    )

    def get_eta_seconds(self, job) -> float | None:
        eta = job.eta
        return round(eta.total_seconds(), 1) if eta is not None else None
