from django.apps import AppConfig


class ProjectsConfig(AppConfig):
    name = "projects"

    def ready(self) -> None:
        from llmhub import hooks
        from projects import schema  # noqa: F401 - registers the OpenAPI auth extension
        from projects.audit import record_event
        from projects.services import authorize_job_action

        # The core's job services ask projects, which owns roles and the audit log.
        hooks.register(hooks.JOB_AUTHORIZE, authorize_job_action)
        hooks.register(hooks.AUDIT, record_event)
