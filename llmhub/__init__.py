"""LLMHub: the Django project (settings, URLs, Celery app) and the shared job machinery."""

from llmhub.celery import app as celery_app

__all__ = ["celery_app"]
