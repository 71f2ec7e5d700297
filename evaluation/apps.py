from django.apps import AppConfig


class EvaluationConfig(AppConfig):
    name = "evaluation"

    def ready(self) -> None:
        from evaluation.services import goals_refresh
        from llmhub import hooks

        # A new or changed goal is measured at once from the evaluations that answer it;
        # projects fires the hook, so the base stage never imports this later one.
        hooks.register(hooks.GOALS_CHANGED, goals_refresh)
