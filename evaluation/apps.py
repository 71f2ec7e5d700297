from django.apps import AppConfig

# How often each process gives abandoned feedback assignments back to the queue (their
# timeouts are minutes; assignment_next also expires its campaign's due ones at once).
ASSIGNMENT_EXPIRY_EVERY_SECONDS = 60


class EvaluationConfig(AppConfig):
    name = "evaluation"

    def ready(self) -> None:
        from evaluation.feedback.services.labeling import assignments_expire
        from evaluation.services import goals_refresh
        from llmhub import hooks, periodic

        # A new or changed goal is measured at once from the evaluations that answer it;
        # projects fires the hook, so the base stage never imports this later one.
        hooks.register(hooks.GOALS_CHANGED, goals_refresh)
        # Expired assignments of every campaign, so Item.taken (progress, the queue's counts)
        # stops counting an abandoned slot even while nobody asks that campaign for work.
        periodic.register(
            "feedback.expire_assignments",
            assignments_expire,
            every_seconds=ASSIGNMENT_EXPIRY_EVERY_SECONDS,
        )
