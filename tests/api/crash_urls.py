"""The real URLs plus two views that crash, for tests/api/test_error_shape.py."""

from django.http import HttpRequest
from django.urls import path
from rest_framework.request import Request
from rest_framework.views import APIView

from llmhub.urls import handler400, handler403, handler404, handler500  # noqa: F401
from llmhub.urls import urlpatterns as real_urlpatterns


class CrashingView(APIView):
    def get(self, request: Request):
        raise RuntimeError("a bug in a view")


def plain_crash(request: HttpRequest):
    raise RuntimeError("a bug outside DRF")


urlpatterns = [
    path("api/v1/_crash/", CrashingView.as_view()),
    path("api/v1/_plain-crash/", plain_crash),
    path("_page-crash/", plain_crash),
    *real_urlpatterns,
]
