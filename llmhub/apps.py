from django.apps import AppConfig


class LlmhubConfig(AppConfig):
    name = "llmhub"
    verbose_name = "LLMHub core"

    def ready(self) -> None:
        # Job runners register themselves when their app's tasks module is imported; import
        # them here so the web process (which enqueues) and the sweep know every kind.
        from importlib import import_module

        for app in ("projects", "datasets_app", "training", "evaluation", "serving"):
            try:
                import_module(f"{app}.tasks")
            except ModuleNotFoundError as exc:
                if exc.name != f"{app}.tasks":
                    raise
