"""The Celery app and every Celery setting (queues, acknowledgement, time limits) in one place.

Two queues: ``cpu`` for data work, ``gpu`` for training and evaluation, so a GPU machine runs
``celery -A llmhub.celery worker -Q gpu``. The web process loads this module from
``llmhub.apps.LlmhubConfig.ready`` (not from ``llmhub/__init__.py``, so that the plain ML
runtimes, which import ``llmhub.reporting``, load neither Celery nor Django).

Tasks are acknowledged late and re-delivered if their worker dies; job rows make the tasks
idempotent (a job is claimed once, see ``llmhub.jobs``). Every worker also sweeps jobs on a
timer of its own (``llmhub.sweeper``), started when it is ready.

A stopping worker (SIGTERM or Ctrl-C, to it or to its process group) hands its running jobs back
instead of waiting for them (Celery's warm shutdown would wait for a training run to finish):
the main process asks the jobs it runs itself (solo pool) and each busy pool process (SIGTERM)
to stop; a pool process's SIGTERM handler asks its job to stop, and ``llmhub.jobs`` re-queues or
fails it with the reason. An idle pool process still dies on SIGTERM as before.

The broker is the filesystem under ``var/broker`` unless REDIS_URL (or CELERY_BROKER_URL) is set.
Results are not stored: a job's outcome lives on its row.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import threading
import time

from celery import Celery
from celery.signals import (
    task_prerun,
    worker_init,
    worker_process_init,
    worker_ready,
    worker_shutting_down,
)
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "llmhub.settings")

app = Celery("llmhub")


def _configure(app: Celery) -> None:
    from django.conf import settings

    transport_options: dict = {}
    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        folders = {
            "data_folder_in": settings.BROKER_DIR / "queue",
            "data_folder_out": settings.BROKER_DIR / "queue",
            "control_folder": settings.BROKER_DIR / "control",
            "processed_folder": settings.BROKER_DIR / "processed",
        }
        for folder in folders.values():
            folder.mkdir(parents=True, exist_ok=True)
        transport_options = {key: str(path) for key, path in folders.items()}
        transport_options["store_processed"] = False
    elif settings.CELERY_BROKER_PREFIX:
        # Lets several test runs (or deployments) share one Redis without taking each
        # other's messages.
        transport_options = {"global_keyprefix": settings.CELERY_BROKER_PREFIX}

    app.conf.update(
        broker_url=settings.CELERY_BROKER_URL,
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        task_ignore_result=True,
        result_backend=None,
        task_serializer="json",
        accept_content=["json"],
        task_queues=(Queue("cpu"), Queue("gpu")),
        task_default_queue="cpu",
        # Late acknowledgement + reject on worker loss: a task whose worker dies goes back to
        # the queue; the job row's atomic claim makes running it twice harmless.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # Hard stop far beyond any sane job; jobs report their own progress and can be
        # cancelled, this only catches a hung process.
        task_time_limit=7 * 24 * 3600,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        beat_schedule={
            "sweep-stale-jobs": {
                "task": "llmhub.sweep_stale_jobs",
                "schedule": float(settings.JOB_SWEEP_INTERVAL_SECONDS),
                "options": {"queue": "cpu", "expires": settings.JOB_SWEEP_INTERVAL_SECONDS},
            }
        },
        beat_schedule_filename=str(settings.VAR_DIR / "celerybeat-schedule"),
    )


@app.on_configure.connect
def _on_configure(sender: Celery, **kwargs) -> None:
    _configure(sender)


@worker_ready.connect
def _start_job_sweeper(sender=None, **kwargs) -> None:
    # Every worker sweeps on its own timer (and once at start), so a job whose worker died, or
    # whose message was lost, is recovered by whichever process is alive; see llmhub.sweeper.
    from llmhub.sweeper import start_sweeper

    start_sweeper(where="worker")


@worker_shutting_down.connect
def _hand_back_jobs_on_shutdown(sig: str = "", how: str = "", **kwargs) -> None:
    # Runs in the main process's signal handler (no database work). Without this, the warm
    # shutdown waits for every running task, however long: bin/dev never returned.
    from llmhub.jobs import hand_back_running_jobs
    from llmhub.sweeper import stop_sweeper

    # No more sweeps here: one would send the handed-back jobs to this very worker.
    stop_sweeper(wait=False)
    _bound_the_exit(exitcode=int(kwargs.get("exitcode") or 0))
    hand_back_running_jobs()  # jobs of this process itself (solo and threads pools)
    # Only the pool processes running a task: an idle one that got SIGTERM from the process
    # group too died of the second signal while holding the pool queue's lock (billiard's
    # handler resets SIGTERM to the default on the first), and this process then waited on
    # that lock forever at exit. Idle ones end with the pool.
    for pid in _busy_pool_processes():
        with contextlib.suppress(ProcessLookupError):  # gone already
            os.kill(pid, signal.SIGTERM)


# Once the worker has shut down and the interpreter exits, billiard's own atexit cleanup of the
# pool may wait forever on a lock of the pool's queue that a pool process killed by the group's
# SIGTERM left held: the main process then hung after its pool had exited ("Warm shutdown" for
# good, SIGTERM and Ctrl-C ignored: bin/dev never returned). Everything worth doing is done by
# then (tasks handed back, unacknowledged messages restored), so the exit gets this long.
EXIT_CLEANUP_SECONDS = 3.0
_exiting = threading.Event()
_exit_guard: threading.Thread | None = None


def _bound_the_exit(*, exitcode: int) -> None:
    """Arm (once) a daemon thread that ends this process EXIT_CLEANUP_SECONDS after its atexit
    cleanup starts. Started now, in the signal handler: no thread can start at exit."""
    global _exit_guard
    if _exit_guard is not None:
        return

    def guard() -> None:
        _exiting.wait()
        time.sleep(EXIT_CLEANUP_SECONDS)
        os._exit(exitcode)

    _exit_guard = threading.Thread(target=guard, name="llmhub-exit-guard", daemon=True)
    _exit_guard.start()
    # Registered last, so run first of the atexit handlers (before billiard's).
    atexit.register(_exiting.set)


_worker = None  # this process's WorkController (set on worker_init)


@worker_init.connect
def _keep_worker(sender=None, **kwargs) -> None:
    global _worker
    _worker = sender


def _busy_pool_processes() -> set[int]:
    """The pids of the prefork pool processes running a task now (none for other pools).

    Billiard keeps each task sent to the pool in ``Pool._cache`` with the pid of the process
    that accepted it (``_worker_pid``); Celery has no public API for this.
    """
    pool = getattr(getattr(_worker, "pool", None), "_pool", None)
    cache = getattr(pool, "_cache", None) or {}
    pids = (getattr(job, "_worker_pid", None) for job in list(cache.values()))
    return {pid for pid in pids if isinstance(pid, int)}


_pool_process = False  # true in a prefork pool process
_previous_sigterm = None  # billiard's handler, for an idle pool process


@worker_process_init.connect
def _mark_pool_process(**kwargs) -> None:
    global _pool_process
    _pool_process = True


@task_prerun.connect
def _install_pool_process_sigterm(**kwargs) -> None:
    # Billiard sets its own SIGTERM handler in a pool process after worker_process_init (it
    # raises SystemExit inside the task, leaving the job "running"), so ours goes in before the
    # first task: a running job is handed back; an idle process exits the way billiard does.
    global _previous_sigterm
    if _pool_process and _previous_sigterm is None:
        _previous_sigterm = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, _pool_process_sigterm)


def _pool_process_sigterm(signum: int, frame) -> None:
    from llmhub.jobs import hand_back_running_jobs

    if hand_back_running_jobs():
        return
    if callable(_previous_sigterm):
        _previous_sigterm(signum, frame)
    else:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)


app.autodiscover_tasks(
    [
        "llmhub",
        "projects",
        "datasets_app",
        "training",
        "evaluation",
        "evaluation.feedback",
        "serving",
    ]
)
