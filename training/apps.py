from django.apps import AppConfig


class TrainingConfig(AppConfig):
    name = "training"

    def ready(self) -> None:
        from training import metrics_store
        from training.models import TrainingJob

        # The job machinery hands the points a runtime reports to its kind's
        # ``write_metric_points``; the metric store is the one writer of points, and it imports
        # the models, so the hook is bound here rather than defined in models.py.
        def write_metric_points(cls, job_id: int, points: list) -> None:
            metrics_store.record_reported_points(job_id, points)

        TrainingJob.write_metric_points = classmethod(write_metric_points)

        from llmhub import hooks

        hooks.register(hooks.JOB_ENDED, _register_best_trial)


def _register_best_trial(*, job) -> None:
    """However a sweep's trial ends (on its worker, failed by a sweep, cancelled while
    queued), the sweep registers its best trial once the last one has ended (idempotent)."""
    from training import services
    from training.models import TrainingJob

    if isinstance(job, TrainingJob) and job.sweep_id:
        services.sweep_register_best(sweep=job.sweep, ended=job)
