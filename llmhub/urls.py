from django.contrib import admin
from django.urls import include, path

from llmhub.metrics import metrics_view

urlpatterns = [
    path("api/v1/", include("llmhub.api.urls")),
    path("admin/", admin.site.urls),
    # Prometheus: job queue depths and outcomes (llmhub/metrics.py says who may scrape).
    path("metrics", metrics_view, name="metrics"),
    path("", include("frontend.urls")),
]

# Errors raised before a DRF view runs answer the API's JSON error shape under /api/.
handler400 = "llmhub.api.exceptions.handler400"
handler403 = "llmhub.api.exceptions.handler403"
handler404 = "llmhub.api.exceptions.handler404"
handler500 = "llmhub.api.exceptions.handler500"
