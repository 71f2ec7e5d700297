"""What the HTTP-layer tests share: the app under uvicorn in a thread, snapshots, key hashes,
and a backend wrapper that counts model calls (the model underneath is a real tiny one)."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import uvicorn

from serving.engine.types import FeedbackRecord, RequestRecord


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class LiveServer:
    """Serves an ASGI app with uvicorn on a free local port, in a daemon thread."""

    def __init__(self, app: Any) -> None:
        # A free port, then uvicorn binds it itself: handing uvicorn a bound socket
        # (``sockets=``) costs ~40 ms per answer here (Nagle and delayed ACKs on the
        # accepted connections), which uvicorn's own bind does not.
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
            timeout_keep_alive=30,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def v1(self) -> str:
        return f"{self.url}/v1"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


class CountingBackend:
    """A real backend, with its generate/embed/classify calls counted."""

    def __init__(self, inner: Any, calls: list) -> None:
        self._inner = inner
        self._calls = calls

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def generate(self, params: Any) -> Any:
        self._calls.append(("generate", self._inner.spec.version_id))
        return self._inner.generate(params)

    async def embed(self, texts: list[str]) -> Any:
        self._calls.append(("embed", self._inner.spec.version_id))
        return await self._inner.embed(texts)

    async def classify(self, texts: list[str]) -> Any:
        self._calls.append(("classify", self._inner.spec.version_id))
        return await self._inner.classify(texts)


def counting_loader(calls: list, loads: list | None = None) -> Callable:
    from serving.engine.backends import load_backend

    def load(spec: Any, settings: Any) -> CountingBackend:
        if loads is not None:
            loads.append(spec.version_id)
        return CountingBackend(load_backend(spec, settings), calls)

    return load


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll until ``predicate()`` is truthy (records of a stream land after its last byte)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.01)


def requests_of(sink: Any) -> list[RequestRecord]:
    return [r for r in sink.records if isinstance(r, RequestRecord)]


def feedback_of(sink: Any) -> list[FeedbackRecord]:
    return [r for r in sink.records if isinstance(r, FeedbackRecord)]


def record_for(sink: Any, response_id: str, timeout: float = 10.0) -> RequestRecord | None:
    def find() -> RequestRecord | None:
        for r in requests_of(sink):
            if r.response_id == response_id:
                return r
        return None

    return wait_for(find, timeout)
