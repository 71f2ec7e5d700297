from django.apps import AppConfig

# How often each process looks for webhook deliveries due and for endpoints whose minute of
# limit checks has come (each check claims its minute per endpoint, across processes).
WEBHOOK_DELIVERY_EVERY_SECONDS = 5
LIMIT_CHECK_EVERY_SECONDS = 10
# How often each process looks for endpoints whose drift period has come (claimed per endpoint).
DRIFT_SCHEDULE_EVERY_SECONDS = 60


class ServingConfig(AppConfig):
    name = "serving"

    def ready(self) -> None:
        from llmhub import periodic
        from serving.monitoring.limits import check_limits_due
        from serving.monitoring.services import drift_schedule_due
        from serving.monitoring.webhooks import deliver_due

        # Alert events go out only from here, never while a request or a check waits.
        periodic.register(
            "monitor.deliver_webhooks", deliver_due, every_seconds=WEBHOOK_DELIVERY_EVERY_SECONDS
        )
        periodic.register(
            "monitor.check_limits", check_limits_due, every_seconds=LIMIT_CHECK_EVERY_SECONDS
        )
        periodic.register(
            "monitor.schedule_drift", drift_schedule_due, every_seconds=DRIFT_SCHEDULE_EVERY_SECONDS
        )
