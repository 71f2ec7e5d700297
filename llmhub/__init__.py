"""LLMHub: the Django project (settings, URLs, Celery app) and the shared job machinery.

Deliberately empty of imports: the plain ML runtimes import ``llmhub.reporting``, and importing
this package must not load Celery or Django for them. The Celery app lives in ``llmhub.celery``
(``celery -A llmhub.celery ...``) and is loaded by ``LlmhubConfig.ready`` in Django processes.
"""
