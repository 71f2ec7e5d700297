"""Forms of the Monitor tab: the dashboard's range and version, the request log's filters, and an
endpoint's monitor settings (the drift reference, window and thresholds, the alert limits, the
webhook). The services validate the meaning (thresholds by DriftConfig, the webhook URL by
llmhub.net); the forms check types and ranges, and every error shows at once."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError

RANGE_CHOICES = [
    ("1h", "Last hour"),
    ("6h", "Last 6 hours"),
    ("24h", "Last 24 hours"),
    ("7d", "Last 7 days"),
    ("30d", "Last 30 days"),
    ("90d", "Last 90 days"),
]
DEFAULT_RANGE = "24h"
STATUS_CLASSES = [("", "any"), ("2xx", "2xx success"), ("4xx", "4xx refused"), ("5xx", "5xx error")]


class RangeForm(forms.Form):
    """``?range=24h&version=<id>`` of the endpoint's monitor page."""

    range = forms.ChoiceField(choices=RANGE_CHOICES, required=False, label="Range")
    version = forms.TypedChoiceField(
        choices=(), required=False, coerce=int, empty_value=None, label="Version"
    )

    def __init__(self, *args: Any, versions: list[tuple[int, str]], **kwargs: Any) -> None:
        kwargs.setdefault("auto_id", "range_%s")
        kwargs.setdefault("initial", {"range": DEFAULT_RANGE})
        super().__init__(*args, **kwargs)
        self.fields["version"].choices = [("", "every version"), *versions]

    def range_name(self) -> str:
        if self.is_valid():
            return self.cleaned_data["range"] or DEFAULT_RANGE
        return DEFAULT_RANGE

    def version_id(self) -> int | None:
        return self.cleaned_data["version"] if self.is_valid() else None


class RequestLogFilterForm(forms.Form):
    """The request log's filters; every one optional, bad values are this form's errors."""

    version = forms.TypedChoiceField(choices=(), required=False, coerce=int, empty_value=None)
    key = forms.TypedChoiceField(
        choices=(), required=False, coerce=int, empty_value=None, label="Serving key"
    )
    status = forms.IntegerField(required=False, min_value=100, max_value=599)
    status_class = forms.ChoiceField(choices=STATUS_CLASSES, required=False, label="Status class")
    canary = forms.TypedChoiceField(
        choices=[("", "any"), ("true", "canary only"), ("false", "main only")],
        required=False,
        coerce=lambda value: value == "true",
        empty_value=None,
    )
    min_latency_ms = forms.FloatField(required=False, min_value=0, label="Latency from (ms)")
    max_latency_ms = forms.FloatField(required=False, min_value=0, label="Latency up to (ms)")
    since = forms.DateTimeField(required=False, help_text="ISO 8601, e.g. 2026-01-31T12:00Z")
    until = forms.DateTimeField(required=False)

    def __init__(
        self,
        *args: Any,
        keys: list[tuple[int, str]],
        versions: list[tuple[int, str]],
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("auto_id", "log_%s")
        super().__init__(*args, **kwargs)
        self.fields["key"].choices = [("", "any"), *keys]
        self.fields["version"].choices = [("", "any"), *versions]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        low, high = data.get("min_latency_ms"), data.get("max_latency_ms")
        if low is not None and high is not None and low > high:
            self.add_error("max_latency_ms", "The upper latency is below the lower one.")
        since, until = data.get("since"), data.get("until")
        if since and until and since >= until:
            self.add_error("until", "The end is not after the start.")
        return data

    def filter(self, queryset):
        """``queryset`` narrowed by the valid filters (an invalid form filters nothing)."""
        if not self.is_valid():
            return queryset
        data = self.cleaned_data
        lookups = {
            "version_id": data["version"],
            "key_id": data["key"],
            "status_code": data["status"],
            "canary": data["canary"],
            "latency_ms__gte": data["min_latency_ms"],
            "latency_ms__lte": data["max_latency_ms"],
            "created_at__gte": data["since"],
            "created_at__lt": data["until"],
        }
        queryset = queryset.filter(**{k: v for k, v in lookups.items() if v is not None})
        status_class = data["status_class"]
        if status_class:
            low = int(status_class[0]) * 100
            queryset = queryset.filter(status_code__gte=low, status_code__lt=low + 100)
        return queryset

    def query_string(self) -> str:
        """The valid filters as a query string (for the pages' links)."""
        if not self.is_valid():
            return ""
        from urllib.parse import urlencode

        values = {}
        for name, value in self.cleaned_data.items():
            if value is None or value == "":
                continue
            values[name] = value.isoformat() if hasattr(value, "isoformat") else value
        return urlencode(values)


THRESHOLD_PREFIX = "threshold_"


# DriftConfig's settings that are not a statistic's threshold (sample sizes, noise, the seed):
# shown apart, without a drift rule. Any other name is a threshold.
SIZE_SETTINGS = frozenset(
    {
        "min_reference_rows",
        "min_current_rows",
        "length_bins",
        "false_alarm_rate",
        "classifier_max_rows",
        "embedding_max_rows",
        "seed",
    }
)


def _threshold_field(setting: dict[str, Any]) -> forms.Field:
    kind = forms.IntegerField if setting["type"] == "int" else forms.FloatField
    rule = "drift below" if setting["rule"] == "<" else "drift at or above"
    note = "" if setting["name"] in SIZE_SETTINGS else f" ({rule})"
    return kind(
        required=False,
        label=setting["name"].replace("_", " "),
        help_text=f"{setting['help']} Default {setting['default']:g}{note}; empty: the default.",
        widget=forms.NumberInput(attrs={"step": "any", "placeholder": f"{setting['default']:g}"}),
    )


class MonitorSettingsForm(forms.Form):
    """An endpoint's monitor settings. The reference select holds the team's dataset
    versions; empty is the default reference (the serving version's training data)."""

    drift_enabled = forms.BooleanField(required=False, label="Check drift on a schedule")
    reference_version = forms.TypedChoiceField(
        choices=(), required=False, coerce=int, empty_value=None, label="Reference dataset version"
    )
    reference_split = forms.CharField(
        max_length=64, required=False, help_text="Empty: the whole version (or its train split)."
    )
    reference_column = forms.CharField(
        max_length=200, required=False, help_text="Empty: the version's text column."
    )
    window_hours = forms.IntegerField(
        min_value=1, max_value=24 * 90, label="Window (hours of recent requests)"
    )
    window_requests = forms.IntegerField(
        min_value=10, max_value=100_000, label="At most this many requests in the window"
    )
    drift_every_minutes = forms.IntegerField(
        min_value=1, max_value=7 * 24 * 60, label="Check drift every (minutes)"
    )
    error_rate_max = forms.FloatField(
        required=False, min_value=0, max_value=1, help_text="Share of 5xx answers; empty: none."
    )
    p95_latency_ms_max = forms.FloatField(
        required=False, min_value=0, label="p95 latency limit (ms)", help_text="Empty: none."
    )
    feedback_score_min = forms.FloatField(
        required=False,
        min_value=0,
        max_value=1,
        help_text="Least share of thumbs up among the thumbs; empty: none.",
    )
    limit_window_minutes = forms.IntegerField(
        min_value=1, max_value=24 * 60, label="Limits over the last (minutes)"
    )
    limit_min_requests = forms.IntegerField(
        min_value=0, help_text="Fewer requests (or thumbs) in that window: no traffic alert."
    )
    webhook_url = forms.CharField(
        max_length=500, required=False, label="Webhook URL", help_text="Alerts are POSTed here."
    )
    webhook_secret = forms.CharField(
        max_length=200,
        required=False,
        label="Webhook secret",
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Signs each delivery (X-LLMHub-Signature). Empty: keep the current one.",
    )
    clear_webhook_secret = forms.BooleanField(required=False, label="Remove the secret")

    PLAIN_FIELDS = (
        "drift_enabled",
        "reference_split",
        "reference_column",
        "window_hours",
        "window_requests",
        "drift_every_minutes",
        "error_rate_max",
        "p95_latency_ms_max",
        "feedback_score_min",
        "limit_window_minutes",
        "limit_min_requests",
        "webhook_url",
    )

    def __init__(
        self,
        *args: Any,
        settings,
        references: list[tuple[int, str]],
        default_label: str,
        schema: list[dict[str, Any]],
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("auto_id", "monitor_%s")
        initial = {name: getattr(settings, name) for name in self.PLAIN_FIELDS}
        initial["reference_version"] = settings.reference_version_id
        for name, value in (settings.thresholds or {}).items():
            initial[THRESHOLD_PREFIX + name] = value
        kwargs.setdefault("initial", initial)
        super().__init__(*args, **kwargs)
        self.fields["reference_version"].choices = [("", default_label), *references]
        self.threshold_names = []
        for setting in schema:
            self.fields[THRESHOLD_PREFIX + setting["name"]] = _threshold_field(setting)
            self.threshold_names.append(setting["name"])
        self.has_secret = bool(settings.webhook_secret)

    def threshold_fields(self) -> list[forms.BoundField]:
        """The statistics' thresholds."""
        return [
            self[THRESHOLD_PREFIX + name]
            for name in self.threshold_names
            if name not in SIZE_SETTINGS
        ]

    def size_fields(self) -> list[forms.BoundField]:
        """The drift job's sample sizes, noise level and seed."""
        return [
            self[THRESHOLD_PREFIX + name] for name in self.threshold_names if name in SIZE_SETTINGS
        ]

    def plain_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in self.fields if not name.startswith(THRESHOLD_PREFIX)]

    def changes(self) -> dict[str, Any]:
        """The cleaned data as ``monitor_settings_update`` changes: the thresholds as one
        dict of the non-empty ones, the secret only when typed (or cleared)."""
        data = self.cleaned_data
        changes = {name: data[name] for name in self.PLAIN_FIELDS}
        changes["reference_version"] = data["reference_version"]
        changes["thresholds"] = {
            name: data[THRESHOLD_PREFIX + name]
            for name in self.threshold_names
            if data.get(THRESHOLD_PREFIX + name) is not None
        }
        if data.get("clear_webhook_secret"):
            changes["webhook_secret"] = ""
        elif data.get("webhook_secret"):
            changes["webhook_secret"] = data["webhook_secret"]
        return changes

    def add_service_errors(self, exc: ValidationError) -> None:
        """A service's ValidationError on this form: each message next to its field (a
        threshold's name goes to its own input), the rest above the form."""
        if not hasattr(exc, "error_dict"):
            for message in exc.messages:
                self.add_error(None, message)
            return
        for field, messages in exc.message_dict.items():
            target = field
            # The service names a threshold "thresholds.<name>".
            name = field.removeprefix("thresholds.")
            if field not in self.fields and THRESHOLD_PREFIX + name in self.fields:
                target = THRESHOLD_PREFIX + name
            if target not in self.fields:
                target = None
            for message in messages:
                self.add_error(target, message)
