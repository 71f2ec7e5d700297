from django.apps import AppConfig


class DatasetsAppConfig(AppConfig):
    name = "datasets_app"

    def ready(self) -> None:
        from celery.signals import worker_ready

        # Each worker sweeps what interrupted uploads and killed data jobs left, when it starts.
        worker_ready.connect(_sweep_on_worker_start, dispatch_uid="datasets_app.sweep_uploads")


def _sweep_on_worker_start(**_kwargs) -> None:
    import logging

    from datasets_app.uploads import sweep_upload_leftovers

    try:
        sweep_upload_leftovers()
    except Exception:  # a failed sweep must not stop the worker starting
        logging.getLogger(__name__).exception("The upload leftovers sweep failed")
