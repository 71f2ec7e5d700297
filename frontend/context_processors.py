from django.conf import settings
from django.http import HttpRequest


def navigation(request: HttpRequest) -> dict:
    return {"allow_signup": settings.LLMHUB_ALLOW_SIGNUP}
