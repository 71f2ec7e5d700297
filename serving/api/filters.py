import django_filters

from serving.models import Endpoint, RequestLog, ResponseFeedback, ServingKey

STATUS_CLASSES = {"2xx": 200, "3xx": 300, "4xx": 400, "5xx": 500}


class EndpointFilterSet(django_filters.FilterSet):
    archived = django_filters.BooleanFilter(method="filter_archived")

    class Meta:
        model = Endpoint
        fields = {"project": ["exact"], "stage": ["exact"], "engine": ["exact"], "slug": ["exact"]}

    def filter_archived(self, queryset, name, value):
        return queryset.filter(archived_at__isnull=not value)


class ServingKeyFilterSet(django_filters.FilterSet):
    revoked = django_filters.BooleanFilter(method="filter_revoked")

    class Meta:
        model = ServingKey
        fields = {"project": ["exact"], "endpoint": ["exact"]}

    def filter_revoked(self, queryset, name, value):
        return queryset.filter(revoked_at__isnull=not value)


class RequestLogFilterSet(django_filters.FilterSet):
    project = django_filters.NumberFilter(field_name="endpoint__project")
    status = django_filters.NumberFilter(field_name="status_code")
    since = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    until = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")
    # What a dashboard point links to: its bucket's requests, by latency, canary and status.
    min_latency_ms = django_filters.NumberFilter(field_name="latency_ms", lookup_expr="gte")
    max_latency_ms = django_filters.NumberFilter(field_name="latency_ms", lookup_expr="lte")
    canary = django_filters.BooleanFilter()
    status_class = django_filters.ChoiceFilter(
        choices=[(c, c) for c in STATUS_CLASSES], method="filter_status_class"
    )

    class Meta:
        model = RequestLog
        fields = {
            "endpoint": ["exact"],
            "version": ["exact"],
            "key": ["exact"],
            "cache_hit": ["exact"],
            "source": ["exact"],
            "route": ["exact"],
            "response_id": ["exact"],
        }

    def filter_status_class(self, queryset, name, value):
        low = STATUS_CLASSES[value]
        return queryset.filter(status_code__gte=low, status_code__lt=low + 100)


class ResponseFeedbackFilterSet(django_filters.FilterSet):
    project = django_filters.NumberFilter(field_name="endpoint__project")

    class Meta:
        model = ResponseFeedback
        fields = {
            "endpoint": ["exact"],
            "response_id": ["exact"],
            "score": ["exact"],
            "source": ["exact"],
        }
