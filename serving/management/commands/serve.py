"""``manage.py serve``: the inference process (the OpenAI-compatible API) under uvicorn."""

from __future__ import annotations

import gc
import os
import signal
import sys

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, connections


def _stopped_already(signum, frame) -> None:
    """uvicorn raises the signal that stopped it again once it has shut down; with this
    handler in place that is a no-op, so the request log is flushed before the process
    exits (the default SIGTERM handler would end it at once)."""


class Command(BaseCommand):
    help = (
        "Run the inference process: the OpenAI-compatible API (/v1/completions, /v1/chat/"
        "completions, /v1/embeddings, /v1/predict, /v1/models, /v1/feedback) serving the active"
        " endpoints, with /health and /metrics. Engine settings come from the LLMHUB_SERVING_*"
        " environment variables (see the README)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="Address to listen on.")
        parser.add_argument("--port", type=int, default=8001, help="Port to listen on.")
        parser.add_argument(
            "--graceful-seconds",
            type=float,
            default=10.0,
            help="On SIGTERM or Ctrl-C, how long requests in flight may take to finish.",
        )

    def handle(self, *args, host: str, port: int, graceful_seconds: float, **options) -> None:
        # The engine (torch, transformers) loads here, not when `manage.py help` lists commands.
        import uvicorn

        from serving.engine.app import create_app
        from serving.engine.config import EngineSettings
        from serving.engine.limits import RateLimiter
        from serving.engine.state import EngineState
        from serving.runner import ServingRunner

        try:
            engine_settings = EngineSettings.from_mapping(dict(os.environ))
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        if not 0 < port < 65536:
            raise CommandError(f"--port must be between 1 and 65535 (got {port}).")

        runner = ServingRunner()
        # Several processes behind a load balancer share per-key limits through Redis.
        limiter = RateLimiter(
            redis_url=settings.REDIS_URL or None,
            redis_prefix=f"llmhub:ratelimit:{settings.CELERY_BROKER_PREFIX}",
        )
        state = EngineState(settings=engine_settings, sink=runner.sink, limiter=limiter)
        # The first snapshot (models loaded) before the port opens: no request ever finds an
        # endpoint missing because the process has only just started.
        try:
            runner.start(state)
        except DatabaseError as exc:
            raise CommandError(
                f"The inference process cannot read the database: {exc} (is it migrated?)"
            ) from exc
        connections.close_all()  # the main thread only serves from here on; the threads read
        # What is imported and loaded by now (torch, transformers, Django, the models) lives as
        # long as the process: keep it out of the garbage collector's full passes, each of which
        # otherwise stops every thread, streams included, for ~200 ms (measured on 2 CPU cores
        # with a tiny model loaded; none longer than 20 ms once frozen).
        gc.collect()
        gc.freeze()
        loaded = state.loaded()
        self.stdout.write(
            f"LLMHub inference process: http://{host}:{port}/v1 ({len(loaded)} model"
            f" version{'s' if len(loaded) != 1 else ''} loaded; polling the database every"
            f" {runner.sync_seconds:g}s)"
        )
        self.stdout.flush()

        server = uvicorn.Server(
            uvicorn.Config(
                create_app(state),
                host=host,
                port=port,
                log_level="info",
                timeout_graceful_shutdown=graceful_seconds,
            )
        )
        previous = {
            sig: signal.signal(sig, _stopped_already) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            # Returns once uvicorn has stopped accepting and the requests in flight are done.
            server.run()
        finally:
            self.stdout.write("Stopping the inference process: writing the request log...")
            runner.stop()
            close = getattr(state, "close", None)
            if close is not None:
                close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.stdout.write(f"Stopped ({runner.written} request log records written this run).")
        if not server.started:
            sys.exit(1)  # uvicorn has logged why (the port is in use, ...)
