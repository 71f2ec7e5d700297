from django.apps import AppConfig


class LlmhubConfig(AppConfig):
    name = "llmhub"
    verbose_name = "LLMHub core"

    def ready(self) -> None:
        from importlib import import_module

        # Load the Celery app first, so every task defined below binds to it (in the web
        # process as in workers), now that llmhub/__init__.py no longer imports it.
        import_module("llmhub.celery")

        # Job runners register themselves when their app's tasks module is imported; import
        # them here so the web process (which enqueues) and the sweep know every kind.

        for app in (
            "projects",
            "datasets_app",
            "training",
            "evaluation",
            "evaluation.feedback",
            "serving",
        ):
            try:
                import_module(f"{app}.tasks")
            except ModuleNotFoundError as exc:
                if exc.name != f"{app}.tasks":
                    raise
