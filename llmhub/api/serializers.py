"""Serializer helpers shared by every app's API."""

from __future__ import annotations

from rest_framework import serializers


class StrictFieldsMixin:
    """Reject keys the serializer does not know, instead of silently ignoring them.

    A typo such as ``{"targt": 0.8}`` then gets a 400 naming the field rather than a success
    that did not do what the caller meant.
    """

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
