"""Running jobs: registration, enqueueing, execution, heartbeat, cancellation and the sweep.

A job kind is a concrete subclass of :class:`llmhub.models.Job` plus a runner function::

    @job_runner(ProjectHealthCheck)
    def run_project_health_check(job: ProjectHealthCheck, ctx: JobContext) -> None:
        ...

``job_runner`` turns the function into a Celery task (on the kind's queue) that takes a job id.
:func:`execute_job` claims the row atomically (queued -> running; a duplicate delivery finds
nothing to claim and does nothing), starts a heartbeat thread, runs the function with a
:class:`JobContext` (a ``llmhub.reporting.Reporter`` backed by the row), and records the outcome:
``JobCancelled`` -> cancelled, ``JobInputError`` -> failed with its message, any other exception
-> failed with the exception and its traceback kept. The heartbeat thread also writes progress,
the log tail and buffered metric points, so the runtime never waits on the database.

When the worker stops (SIGTERM, Ctrl-C), :func:`hand_back_running_jobs` asks the jobs running in
the process to stop like a cancel; :func:`execute_job` then hands each one back instead of
recording an outcome: a kind that resumes from a checkpoint is queued again (the next sweep
sends it), any other kind fails with the reason. A job that does not stop within
``JOB_SHUTDOWN_GRACE_SECONDS`` is handed back anyway and the process exits.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from llmhub.exceptions import ServiceUnavailable
from llmhub.models import TERMINAL_STATUSES, Job, JobStatus
from llmhub.reporting import JobCancelled, JobInputError

logger = logging.getLogger(__name__)

J = TypeVar("J", bound=Job)
F_ = TypeVar("F_", bound=Callable[..., Any])
RunnerFn = Callable[[J, "JobContext"], None]

LOG_TAIL_LINES = 400


@dataclass(frozen=True)
class RegisteredRunner:
    model: type[Job]
    function: Callable
    task: object  # the Celery task
    queue: str


_RUNNERS: dict[type[Job], RegisteredRunner] = {}


def job_runner(model: type[J], *, queue: str | None = None) -> Callable[[RunnerFn], object]:
    """Register ``fn(job, ctx)`` as the runner of ``model`` and return its Celery task."""
    from llmhub.celery import app

    def decorator(fn: RunnerFn) -> object:
        task_name = f"{model._meta.app_label}.{fn.__name__}"

        @app.task(name=task_name, bind=True, acks_late=True, ignore_result=True)
        def task(self, job_id: int) -> None:
            execute_job(model, job_id, fn, task_id=self.request.id or "")

        task.__doc__ = fn.__doc__
        _RUNNERS[model] = RegisteredRunner(model, fn, task, queue or model.queue)
        return task

    return decorator


def registered_job_models() -> list[type[Job]]:
    return list(_RUNNERS)


def runner_for(model: type[Job]) -> RegisteredRunner:
    try:
        return _RUNNERS[model]
    except KeyError:
        raise LookupError(f"No runner is registered for {model.__name__}") from None


# --- enqueueing -------------------------------------------------------------------------------

# A successful broker check is trusted for this long, so a sweep launching 50 trials (or a busy
# API) pays for one round trip, not one per job. Failures are never cached.
_BROKER_CHECK_TTL = 5.0
_broker_ok_until = 0.0


def check_broker(*, timeout: float | None = None) -> None:
    """Raise :class:`ServiceUnavailable` unless the job queue's broker answers within ``timeout``.

    Launch services call this (through :func:`enqueue_job`) before anything is committed, so a
    launch while the broker is down creates nothing and answers 503 with the reason. The race
    left (the broker dies between the check and the send) is covered by the sweep's re-send.
    """
    global _broker_ok_until
    if time.monotonic() < _broker_ok_until:
        return
    from llmhub.celery import app

    timeout = float(timeout or settings.BROKER_CHECK_TIMEOUT_SECONDS)
    url = app.conf.broker_write_url or app.conf.broker_url or ""
    try:
        if url.startswith("filesystem:"):
            # The filesystem transport has no server: "reachable" means its folder is writable.
            folder = app.conf.broker_transport_options.get("data_folder_in", "")
            if not (folder and os.path.isdir(folder) and os.access(folder, os.W_OK)):
                raise OSError(f"the broker folder {folder or '(unset)'} is missing or read-only")
        else:
            with app.connection_for_write(connect_timeout=timeout) as conn:
                # Connecting a Redis channel pings the server; one try, no retry loop.
                conn.ensure_connection(max_retries=1, interval_start=0, timeout=timeout)
    except Exception as exc:
        logger.warning("The job queue's broker is unreachable: %s", exc)
        raise ServiceUnavailable(
            f"The job queue cannot be reached ({type(exc).__name__}: {exc}); nothing was"
            " launched. Try again when it is back."
        ) from exc
    _broker_ok_until = time.monotonic() + _BROKER_CHECK_TTL


def requires_broker(service: F_) -> F_:
    """Decorate a launch service (above ``@transaction.atomic``) to check the broker before its
    transaction opens: the network round trip then never runs while rows are written or locked.
    ``enqueue_job`` checks again inside, which costs nothing while the last check is fresh."""

    @functools.wraps(service)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        check_broker()
        return service(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def enqueue_job(job: Job) -> None:
    """Send ``job`` to its queue once the current transaction commits (ids only).

    The broker is checked first (raises :class:`ServiceUnavailable`, rolling back the caller's
    transaction, when it is down). A send that still fails after the commit leaves the job
    queued with no message; the sweep sends it again (see :func:`sweep_stale_jobs`). A job is
    never run in the web process instead.
    """
    runner_for(type(job))  # an unknown kind fails here, before anything commits
    check_broker()
    model, job_id = type(job), job.pk
    transaction.on_commit(lambda: send_job(model, job_id))


def send_job(model: type[Job], job_id: int, *, sent_at: datetime | None = None) -> bool:
    """Publish the message of a queued job and note when (``sent_at``, default now); returns
    whether it was sent. A failure is logged and leaves the row queued: the sweep re-sends it.
    """
    runner = runner_for(model)
    sent_at = sent_at or timezone.now()
    try:
        result = runner.task.apply_async(args=[job_id], queue=runner.queue)
    except Exception as exc:
        logger.exception("Could not send %s %s; the sweep will retry", model.__name__, job_id)
        model.objects.filter(pk=job_id, status=JobStatus.QUEUED).update(
            progress_message=(
                f"Waiting for the job queue ({type(exc).__name__}); it will be sent again."
            )[:255]
        )
        return False
    # Only a still-queued row: a fast worker may already have claimed it with its own task id.
    model.objects.filter(pk=job_id, status=JobStatus.QUEUED).update(
        celery_task_id=result.id or "", enqueued_at=sent_at
    )
    return True


# --- execution --------------------------------------------------------------------------------


class JobContext:
    """The runtime's view of its job row: a ``Reporter`` whose writes are batched.

    ``progress`` and ``metrics`` only touch memory; :meth:`flush` (called by the heartbeat thread,
    and once at the end) writes them. ``should_stop`` reflects a cancel request seen by the
    heartbeat.
    """

    def __init__(self, job: Job) -> None:
        self.job = job
        self._model = type(job)
        self._lock = threading.Lock()
        self._progress: tuple[float, str] | None = None
        self._metric_points: list[tuple[int, dict, float | None]] = []
        self._log_lines: deque[str] = deque(
            job.log.splitlines()[-LOG_TAIL_LINES:], maxlen=LOG_TAIL_LINES
        )
        self._log_dirty = False
        self._stop = threading.Event()
        self._cancel_requested = job.cancel_requested_at is not None
        self._hand_back = threading.Event()
        if self._cancel_requested:
            self._stop.set()
        self.success_callbacks: list[Callable[[], None]] = []
        self.summary = ""

    # Reporter protocol
    def progress(self, fraction: float, message: str = "") -> None:
        fraction = min(max(float(fraction), 0.0), 1.0)
        with self._lock:
            self._progress = (fraction, message[:255])

    def metrics(self, step: int, values: dict[str, float], *, epoch: float | None = None) -> None:
        with self._lock:
            self._metric_points.append((int(step), dict(values), epoch))

    def should_stop(self) -> bool:
        return self._stop.is_set()

    # Used by the log handler and the heartbeat.
    def append_log(self, line: str) -> None:
        with self._lock:
            self._log_lines.append(line)
            self._log_dirty = True

    def request_stop(self) -> None:
        self._stop.set()

    def request_hand_back(self) -> None:
        """Stop because the worker stops (not a cancel): the job is handed back, not ended."""
        self._hand_back.set()
        self._stop.set()

    @property
    def hand_back_requested(self) -> bool:
        return self._hand_back.is_set() and not self._cancel_requested

    def record(self, **fields) -> None:
        """Store the job's own outputs (results, device, produced objects) on its row: the one
        way runners write to their job, so no runner writes job rows by hand."""
        self._model.objects.filter(pk=self.job.pk).update(**fields)

    def set_summary(self, message: str) -> None:
        """The status line the job keeps when it succeeds ("12 of 12 items judged"), in place
        of "Done"."""
        self.summary = message[:255]

    def after_success(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` in the transaction that records the job as succeeded (e.g. to
        update what reads succeeded jobs), so both are seen together; keep it to quick database
        work. Its errors are logged and undone, the job stays succeeded."""
        self.success_callbacks.append(callback)

    def flush(self) -> None:
        """Write buffered progress, log tail and metric points; check for a cancel request."""
        with self._lock:
            progress, self._progress = self._progress, None
            points, self._metric_points = self._metric_points, []
            log_text = "\n".join(self._log_lines) if self._log_dirty else None
            self._log_dirty = False
        fields: dict = {"heartbeat_at": timezone.now()}
        if progress is not None:
            fields["progress"], fields["progress_message"] = progress
        if log_text is not None:
            fields["log"] = log_text
        if points:
            self._model.write_metric_points(self.job.pk, points)
        # Only a running row is touched: a swept or finished job is not revived by a late beat.
        self._model.objects.filter(pk=self.job.pk, status=JobStatus.RUNNING).update(**fields)
        cancel_requested = (
            self._model.objects.filter(pk=self.job.pk)
            .values_list("cancel_requested_at", flat=True)
            .first()
        )
        if cancel_requested is not None:
            self._cancel_requested = True
            self._stop.set()


class _JobLogHandler(logging.Handler):
    """Copies log records of the running job's thread onto its row (the last lines)."""

    def __init__(self, ctx: JobContext) -> None:
        super().__init__(level=logging.INFO)
        self.ctx = ctx
        self.thread_id = threading.get_ident()
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread != self.thread_id or record.name.startswith("django.db"):
            return
        try:
            self.ctx.append_log(self.format(record))
        except Exception:  # logging must never break the job
            self.handleError(record)


class _Heartbeat(threading.Thread):
    def __init__(self, ctx: JobContext, interval: float) -> None:
        super().__init__(name=f"heartbeat-{ctx.job.pk}", daemon=True)
        self.ctx = ctx
        self.interval = interval
        self.stopped = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopped.wait(self.interval):
                try:
                    self.ctx.flush()
                except Exception:
                    logger.exception("Heartbeat of job %s failed", self.ctx.job.pk)
        finally:
            connection.close()


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# --- worker shutdown: running jobs are handed back ---------------------------------------------

# Re-entrant: the signal handler may interrupt the main thread while it holds the lock.
_running_lock = threading.RLock()
_running_contexts: dict[int, tuple[type[Job], JobContext]] = {}  # id(ctx) -> (model, ctx)
_all_done = threading.Condition(_running_lock)

SHUTDOWN_REASON = "the worker was stopped while the job was running"


_starting = 0  # jobs between their claim and their registration (under _running_lock)
_hand_back_starting = False  # a stop came while some were starting


def _end_start(model: type[Job], ctx: JobContext | None) -> None:
    global _starting, _hand_back_starting
    with _running_lock:
        _starting -= 1
        if ctx is not None:
            _running_contexts[id(ctx)] = (model, ctx)
            if _hand_back_starting:
                ctx.request_hand_back()
        if not _starting:
            _hand_back_starting = False
        _all_done.notify_all()


def hand_back_running_jobs(*, grace: float | None = None, exit_after: bool = True) -> int:
    """Ask every job running in this process to stop and be handed back; returns how many.

    Called from signal handlers (no database work here): the worker's ``worker_shutting_down``
    and a pool process's SIGTERM (``llmhub.celery``). Each job stops at its runtime's next
    ``should_stop()`` poll and :func:`execute_job` hands it back. A job still running after
    ``grace`` seconds (default ``JOB_SHUTDOWN_GRACE_SECONDS``: a runtime stuck in one long call)
    is handed back from a watchdog thread and, with ``exit_after``, the process exits, so a
    stopping worker never waits on its jobs for long.
    """
    global _hand_back_starting
    with _running_lock:
        contexts = [ctx for _model, ctx in _running_contexts.values()]
        starting = _starting
        _hand_back_starting = _hand_back_starting or bool(starting)
    for ctx in contexts:
        ctx.request_hand_back()
    if contexts or starting:
        grace = float(settings.JOB_SHUTDOWN_GRACE_SECONDS if grace is None else grace)
        threading.Thread(
            target=_shutdown_watchdog,
            args=(grace, exit_after),
            name="llmhub-job-shutdown-watchdog",
            daemon=True,
        ).start()
    return len(contexts) + starting


def _shutdown_watchdog(grace: float, exit_after: bool) -> None:
    deadline = time.monotonic() + grace
    with _running_lock:
        while (_running_contexts or _starting) and time.monotonic() < deadline:
            _all_done.wait(max(deadline - time.monotonic(), 0.01))
        left = list(_running_contexts.values())
    if not left:
        return
    for model, ctx in left:
        logger.warning("%s did not stop within %ss; handing it back now", ctx.job, grace)
        try:
            ctx.append_log(f"The job did not stop within {grace:g}s of the worker stopping.")
            _hand_back(model, ctx)
        except Exception:  # the process exits anyway; the sweep recovers the row
            logger.exception("Could not hand back %s", ctx.job)
        finally:
            connection.close()
    if exit_after:
        logging.shutdown()
        os._exit(1)


def _hand_back(model: type[Job], ctx: JobContext) -> JobStatus | None:
    """Give a job back after its worker stopped: queued again, for the next sweep to send, when its
    kind resumes from a checkpoint (``max_attempts > 1``; the hand-back does not count as an
    attempt), else failed with the reason. Returns the new status, or None when the row was
    no longer running (finished, swept)."""
    now = timezone.now()
    job_id = ctx.job.pk
    # A cancel asked just before the stop (not yet seen by the heartbeat) still cancels.
    running = model.objects.filter(pk=job_id, status=JobStatus.RUNNING)
    if running.exclude(cancel_requested_at=None).update(
        status=JobStatus.CANCELLED, error="Cancelled on request.", finished_at=now
    ):
        return JobStatus.CANCELLED
    running = running.filter(cancel_requested_at=None)
    if model.max_attempts > 1:
        message = f"Re-queued: {SHUTDOWN_REASON}; it resumes from its last checkpoint."
        ctx.append_log(message)
        _flush_quietly(ctx)
        # No message is sent from here: the stopping worker still consumes for a moment and
        # would take the job back itself (in a pool process started after the stop, killed
        # with it). ``enqueued_at=None`` on a job that has run makes it due for the next sweep:
        # the next worker's first, or any live process's within JOB_SWEEP_INTERVAL_SECONDS.
        if running.update(
            status=JobStatus.QUEUED,
            attempts=F("attempts") - 1,
            worker_host="",
            progress_message=message[:255],
            enqueued_at=None,
        ):
            logger.warning("Handed back %s: queued for the next sweep to send", ctx.job)
            return JobStatus.QUEUED
        return None
    error = (
        f"Stopped: {SHUTDOWN_REASON} (a {model._meta.verbose_name} cannot resume); start it again."
    )
    ctx.append_log(f"FAILED: {error}")
    _flush_quietly(ctx)
    if running.update(status=JobStatus.FAILED, error=error, finished_at=now):
        logger.warning("Handed back %s: failed (%s)", ctx.job, error)
        return JobStatus.FAILED
    return None


def _flush_quietly(ctx: JobContext) -> None:
    try:
        ctx.flush()
    except Exception:
        logger.exception("Final flush of %s failed", ctx.job)


def execute_job(
    model: type[J],
    job_id: int,
    fn: RunnerFn,
    *,
    task_id: str = "",
    heartbeat: bool = True,
) -> JobStatus | None:
    """Claim and run one job; returns its final status, or None if it was not ours to run."""
    global _starting
    # Between the claim and the registration of its context the job is "starting": a worker
    # stop then hands it back as soon as it is registered (see hand_back_running_jobs).
    with _running_lock:
        _starting += 1
    ctx = None
    try:
        now = timezone.now()
        claimed = model.objects.filter(pk=job_id, status=JobStatus.QUEUED).update(
            status=JobStatus.RUNNING,
            started_at=now,
            heartbeat_at=now,
            finished_at=None,
            worker_host=worker_identity(),
            attempts=F("attempts") + 1,
            **({"celery_task_id": task_id} if task_id else {}),
        )
        if not claimed:
            # Already running elsewhere, finished, cancelled while queued, or deleted: a
            # redelivered message must not run the job twice.
            logger.info("%s %s is not queued; nothing to do", model.__name__, job_id)
            return None
        job = model.objects.get(pk=job_id)
        ctx = JobContext(job)
    finally:
        _end_start(model, ctx)
    handler = _JobLogHandler(ctx)
    root = logging.getLogger()
    root.addHandler(handler)
    previous_level = root.level
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    beat = _Heartbeat(ctx, settings.JOB_HEARTBEAT_SECONDS) if heartbeat else None
    if beat:
        beat.start()

    status, error, trace = JobStatus.SUCCEEDED, "", ""
    input_error = False
    try:
        try:
            logger.info("Started %s on %s", job, job.worker_host)
            fn(job, ctx)
        except JobCancelled:
            status, error = JobStatus.CANCELLED, "Cancelled on request."
        except JobInputError as exc:
            status, error, input_error = JobStatus.FAILED, str(exc) or type(exc).__name__, True
        except Exception as exc:
            status = JobStatus.FAILED
            error = f"The job crashed: {type(exc).__name__}: {exc}"
            trace = traceback.format_exc()
            logger.exception("%s crashed", job)
        finally:
            if beat:
                beat.stopped.set()
                beat.join()
            root.removeHandler(handler)
            root.setLevel(previous_level)
        # Stopped because the worker stops (a crash then is most likely the stop itself, e.g.
        # torchrun's ranks killed with the worker): handed back, not ended. A job that finished
        # anyway, or failed on its input, keeps its outcome.
        if ctx.hand_back_requested and status != JobStatus.SUCCEEDED and not input_error:
            return _hand_back(model, ctx)
    finally:
        with _running_lock:
            _running_contexts.pop(id(ctx), None)
            _all_done.notify_all()

    if status == JobStatus.SUCCEEDED:
        ctx.progress(1.0, ctx.summary or "Done")
    elif status == JobStatus.FAILED:
        ctx.append_log(f"FAILED: {error}")
    try:
        ctx.flush()
    except Exception:
        logger.exception("Final flush of %s failed", job)
    # The outcome and what it changes (a goal measured by this evaluation) commit together: a
    # page that reloads when it sees the job end never shows the old goal status.
    with transaction.atomic():
        finished = model.objects.filter(pk=job_id, status=JobStatus.RUNNING).update(
            status=status, error=error[:10_000], traceback=trace, finished_at=timezone.now()
        )
        if finished and status == JobStatus.SUCCEEDED:
            for callback in ctx.success_callbacks:
                try:
                    # A savepoint each: a failing callback is undone alone, the job succeeds.
                    with transaction.atomic():
                        callback()
                except Exception:
                    logger.exception("A success callback of %s failed", job)
    job.status = status
    if status == JobStatus.FAILED:
        logger.warning("Finished %s: %s", job, error)
    else:
        logger.info("Finished %s", job)
    if not finished:
        logger.warning("%s was changed by someone else while running (swept?)", job)
        return model.objects.filter(pk=job_id).values_list("status", flat=True).first()
    if status in TERMINAL_STATUSES:
        job_ended(model, job_id)
    return status


def run_job_inline(job: Job) -> JobStatus | None:
    """Run a queued job in this process, without the heartbeat thread: for management
    commands and tests that must not depend on a worker."""
    runner = runner_for(type(job))
    return execute_job(type(job), job.pk, runner.function, heartbeat=False)


# --- cancellation and the stale-heartbeat sweep -----------------------------------------------


def job_ended(model: type[Job], pk: int) -> None:
    """Tell whoever listens (``hooks.JOB_ENDED``) that job ``pk`` has ended. Called by every
    path that ends a job; a reaction's error is logged and never undoes or hides the ending."""
    from llmhub import hooks

    if not hooks.registered(hooks.JOB_ENDED):
        return
    job = model.objects.filter(pk=pk).first()
    if job is None:
        return
    for fn in hooks.registered(hooks.JOB_ENDED):
        try:
            fn(job=job)
        except Exception:
            logger.exception("A reaction to the end of %s failed", job)


def request_cancel(job: Job) -> JobStatus:
    """Cancel a queued job at once, or ask a running one to stop; returns the status after.

    The caller checks permissions (see ``llmhub.services.job_cancel``).
    """
    model, now = type(job), timezone.now()
    if model.objects.filter(pk=job.pk, status=JobStatus.QUEUED).update(
        status=JobStatus.CANCELLED,
        cancel_requested_at=now,
        finished_at=now,
        error="Cancelled before it started.",
    ):
        job_ended(model, job.pk)
        return JobStatus.CANCELLED
    model.objects.filter(pk=job.pk, status=JobStatus.RUNNING, cancel_requested_at=None).update(
        cancel_requested_at=now
    )
    return model.objects.filter(pk=job.pk).values_list("status", flat=True).get()


def sweep_stale_jobs(*, now: datetime | None = None) -> dict[str, int]:
    """Recover jobs nobody is working on; returns ``{"failed", "requeued", "resent"}`` counts.

    - A running job whose heartbeat is older than ``JOB_STALE_AFTER_SECONDS`` lost its worker:
      it is re-queued while attempts remain (kinds that resume from a checkpoint), else failed.
    - A queued job whose message was sent longer than ``JOB_RESEND_AFTER_SECONDS`` ago (or never
      sent) and that no worker claimed may have lost its message (a broker restarted without
      persistence): it is sent again. A duplicate is harmless, the claim is conditional. A job
      handed back by a stopping worker is sent at once.

    Safe to run concurrently, in any number of processes: every change is a conditional update
    on the row as it was read, so only one sweep acts on a job and re-sends are rate-limited by
    the row's ``enqueued_at``. Sends happen after the row's update has committed.
    """
    now = now or timezone.now()
    counts = {"failed": 0, "requeued": 0, "resent": 0}
    for model in registered_job_models():
        _sweep_running(model, now, counts)
        _resend_queued(model, now, counts)
    if any(counts.values()):
        logger.warning("Swept jobs: %s", counts)
    return counts


def _sweep_running(model: type[Job], now: datetime, counts: dict[str, int]) -> None:
    cutoff = now - timedelta(seconds=settings.JOB_STALE_AFTER_SECONDS)
    stale = model.sweepable().filter(status=JobStatus.RUNNING, heartbeat_at__lt=cutoff)
    for job in stale.only("id", "attempts", "heartbeat_at", "worker_host", "log"):
        when = timezone.localtime(job.heartbeat_at).strftime("%Y-%m-%d %H:%M:%S %Z")
        reason = (
            f"The worker running this job ({job.worker_host or 'unknown host'}) stopped"
            f" responding: no heartbeat since {when}."
        )
        same_row = model.objects.filter(
            pk=job.pk, status=JobStatus.RUNNING, heartbeat_at=job.heartbeat_at
        )
        if job.attempts < model.max_attempts:
            if same_row.update(
                status=JobStatus.QUEUED,
                progress_message=f"Re-queued: {reason}"[:255],
                log=(job.log + f"\nRe-queued to resume: {reason}").strip(),
                worker_host="",
                enqueued_at=now,
            ):
                counts["requeued"] += 1
                _send_after_commit(model, job.pk, now)
        elif same_row.update(
            status=JobStatus.FAILED,
            error=reason + (f" It was started {job.attempts} times." if job.attempts > 1 else ""),
            finished_at=now,
        ):
            counts["failed"] += 1
            job_ended(model, job.pk)


def _resend_queued(model: type[Job], now: datetime, counts: dict[str, int]) -> None:
    cutoff = now - timedelta(seconds=settings.JOB_RESEND_AFTER_SECONDS)
    # A row never sent (the web process died between commit and send, or the send failed)
    # counts from its creation; one handed back by a stopping worker (it ran, and its message
    # was left to the sweep, see _hand_back) is due at once.
    lost = model.sweepable().filter(
        Q(enqueued_at__lt=cutoff)
        | Q(enqueued_at__isnull=True, created_at__lt=cutoff)
        | Q(enqueued_at__isnull=True, started_at__isnull=False),
        status=JobStatus.QUEUED,
    )
    for job_id, enqueued_at in lost.values_list("id", "enqueued_at"):
        # Claim the re-send: of several concurrent sweeps, only the one whose update matches
        # the row as read sends.
        if model.objects.filter(pk=job_id, status=JobStatus.QUEUED, enqueued_at=enqueued_at).update(
            enqueued_at=now
        ):
            counts["resent"] += 1
            logger.warning(
                "%s %s is still queued %s after its message was sent; sending it again",
                model.__name__,
                job_id,
                "long" if enqueued_at is None else now - enqueued_at,
            )
            _send_after_commit(model, job_id, now)


def _send_after_commit(model: type[Job], job_id: int, now: datetime) -> None:
    # Outside a transaction on_commit runs at once; inside one (a test, a caller's atomic
    # block), only once the row's new state is visible to the worker. The send time is the
    # sweep's ``now``, so concurrent sweeps compare against the value they claimed.
    transaction.on_commit(lambda: send_job(model, job_id, sent_at=now))


def wait_until(predicate: Callable[[], bool], *, timeout: float, interval: float = 0.2) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass (tests, benchmarks)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
