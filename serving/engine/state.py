"""What the inference process serves right now: the snapshot in force, its loaded backends, keys.

The runner calls :meth:`EngineState.apply` from its own thread whenever the database changed;
the event loop reads the routing table (:class:`_Table`, never mutated once built) through one
attribute, so a swap is a single assignment: a request sees the old table or the new one, never
half of each. Backends the new table no longer needs are closed with ``drain=True`` after the
swap: requests already queued on them finish; one that routed to a backend just before it
closed gets :class:`BackendClosed` when it submits and routes again (see ``app.py``).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from serving.engine.config import EngineSettings
from serving.engine.protocol import OpenAIError
from serving.engine.types import EndpointSpec, KeySpec, RecordSink, Snapshot, VersionSpec

if TYPE_CHECKING:
    from serving.engine.backends import Backend
    from serving.engine.cache import ResponseCache
    from serving.engine.limits import RateLimiter
    from serving.engine.metrics import EngineMetrics

log = logging.getLogger("llmhub.serving.engine")

RESPONSE_INDEX_SIZE = 100_000  # response ids remembered for /v1/feedback
LOAD_RETRY_SECONDS = 60.0  # a version that failed to load is tried again after this


def _default_loader(spec: VersionSpec, settings: EngineSettings) -> Backend:
    from serving.engine.backends import load_backend  # torch: imported only when serving

    return load_backend(spec, settings)


@dataclass(frozen=True)
class _Table:
    endpoints: dict[tuple[int, str], EndpointSpec] = field(default_factory=dict)  # (project, slug)
    by_id: dict[int, EndpointSpec] = field(default_factory=dict)
    keys: dict[str, KeySpec] = field(default_factory=dict)  # sha256 hex -> key
    backends: dict[int, Any] = field(default_factory=dict)  # version id -> Backend
    unavailable: dict[int, str] = field(default_factory=dict)  # version id -> why
    internal_token_hash: str = ""


@dataclass(frozen=True)
class Principal:
    """Who is calling: a serving key, or the web process's playground for one project."""

    project_id: int
    key: KeySpec | None = None

    @property
    def source(self) -> str:
        return "api" if self.key is not None else "playground"

    @property
    def key_id(self) -> int | None:
        return self.key.key_id if self.key is not None else None


@dataclass(frozen=True)
class Answered:
    endpoint_id: int
    project_id: int


class ResponseIndex:
    """Response id -> (endpoint, project) of the last ``size`` answers, for /v1/feedback."""

    def __init__(self, size: int = RESPONSE_INDEX_SIZE) -> None:
        self.size = size
        self._items: OrderedDict[str, Answered] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, response_id: str, *, endpoint_id: int, project_id: int) -> None:
        with self._lock:
            self._items[response_id] = Answered(endpoint_id, project_id)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def get(self, response_id: str) -> Answered | None:
        with self._lock:
            return self._items.get(response_id)

    def __len__(self) -> int:
        return len(self._items)


def key_hash(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


class EngineState:
    def __init__(
        self,
        *,
        settings: EngineSettings,
        sink: RecordSink,
        loader: Callable[[VersionSpec, EngineSettings], Backend] = _default_loader,
        limiter: RateLimiter | None = None,
        cache: ResponseCache | None = None,
        metrics: EngineMetrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if limiter is None:
            from serving.engine.limits import RateLimiter

            limiter = RateLimiter()
        if cache is None:
            from serving.engine.cache import ResponseCache

            cache = ResponseCache(settings.cache_entries)
        if metrics is None:
            from serving.engine.metrics import EngineMetrics

            metrics = EngineMetrics()
        self.settings = settings
        self.sink = sink
        self.limiter = limiter
        self.cache = cache
        self.metrics = metrics
        self.clock = clock
        self.responses = ResponseIndex()
        self.in_flight = 0  # requests being answered (event loop only)
        self._loader = loader
        self._table = _Table()
        self._snapshot: Snapshot | None = None
        self._apply_lock = threading.Lock()
        # version id -> (spec, when its load failed)
        self._failures: dict[int, tuple[VersionSpec, float]] = {}

    # --- the runner's side ----------------------------------------------------------------

    def apply(self, snapshot: Snapshot) -> None:
        """Serve ``snapshot``: load what it needs (slow, before the swap), swap, close the rest.

        Thread-safe; called from the runner's thread. A version whose files cannot be loaded is
        marked unavailable (its requests get 503 model_unavailable) and tried again by the first
        snapshot applied LOAD_RETRY_SECONDS later (at once if its spec changed); the other
        endpoints load and serve.
        """
        with self._apply_lock:
            if snapshot == self._snapshot:
                return
            old = self._table
            needed: dict[int, VersionSpec] = {}
            for endpoint in snapshot.endpoints:
                if endpoint.upstream is not None:
                    continue
                if endpoint.primary is not None:
                    needed[endpoint.primary.version_id] = endpoint.primary
                if endpoint.canary is not None and endpoint.canary_percent > 0:
                    needed[endpoint.canary.version_id] = endpoint.canary
            backends: dict[int, Any] = {}
            unavailable: dict[int, str] = {}
            for version_id, spec in needed.items():
                current = old.backends.get(version_id)
                if current is not None and current.spec == spec:
                    backends[version_id] = current
                    continue
                failed = self._failures.get(version_id)
                if (
                    failed is not None
                    and failed[0] == spec
                    and time.monotonic() - failed[1] < LOAD_RETRY_SECONDS
                ):
                    unavailable[version_id] = old.unavailable.get(version_id, "")
                    continue  # it failed a moment ago: not every refresh reloads a broken model
                try:
                    backends[version_id] = self._loader(spec, self.settings)
                    self._failures.pop(version_id, None)
                except Exception as exc:  # ModelLoadError, and anything a broken file raises
                    log.warning("model version %s could not be loaded: %s", spec.version_id, exc)
                    unavailable[version_id] = str(exc) or type(exc).__name__
                    self._failures[version_id] = (spec, time.monotonic())
            self.limiter.sync_keys(
                snapshot.keys, usage_flushed_before=getattr(snapshot, "usage_flushed_before", None)
            )
            table = _Table(
                endpoints={(e.project_id, e.slug): e for e in snapshot.endpoints},
                by_id={e.endpoint_id: e for e in snapshot.endpoints},
                keys={k.key_hash: k for k in snapshot.keys},
                backends=backends,
                unavailable=unavailable,
                internal_token_hash=snapshot.internal_token_hash,
            )
            self._table = table  # the swap: one assignment
            self._snapshot = snapshot
            for endpoint_id, before in old.by_id.items():
                after = table.by_id.get(endpoint_id)
                if after is None or after.revision != before.revision:
                    self.cache.clear_endpoint(endpoint_id)
            for version_id, backend in old.backends.items():
                if backends.get(version_id) is not backend:
                    try:
                        backend.close(drain=True)
                    except Exception:  # a backend failing to close must not stop the swap
                        log.exception("closing model version %s failed", version_id)

    def close(self) -> None:
        """Unload everything (process shutdown)."""
        self.apply(Snapshot())

    # --- the request side -----------------------------------------------------------------

    def authenticate(self, authorization: str | None, project_header: str | None) -> Principal:
        """The caller of a request from its headers, or the OpenAI 401."""
        if not authorization:
            raise OpenAIError(
                401,
                "You didn't provide an API key. Send it as `Authorization: Bearer <key>`.",
                code="missing_api_key",
            )
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise OpenAIError(
                401,
                "The Authorization header must be `Bearer <key>`.",
                code="invalid_api_key",
            )
        table = self._table
        digest = key_hash(token)
        if table.internal_token_hash and hmac.compare_digest(digest, table.internal_token_hash):
            try:
                project_id = int(project_header or "")
            except ValueError:
                raise OpenAIError(
                    400,
                    "The playground token needs the header X-LLMHub-Project: <project id>.",
                    param="X-LLMHub-Project",
                ) from None
            return Principal(project_id=project_id)
        key = self.key_for(token)
        return Principal(project_id=key.project_id, key=key)

    def key_for(self, bearer: str) -> KeySpec:
        """The serving key with this plaintext, or the 401 saying why it is refused."""
        key = self._table.keys.get(key_hash(bearer))
        if key is None:
            shown = bearer[:3] + "..." + bearer[-4:] if len(bearer) > 10 else "***"
            raise OpenAIError(401, f"Incorrect API key provided: {shown}.", code="invalid_api_key")
        if key.revoked:
            raise OpenAIError(401, "This API key was revoked.", code="api_key_revoked")
        if key.expires_at is not None and key.expires_at <= self.clock():
            when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(key.expires_at))
            raise OpenAIError(401, f"This API key expired on {when}.", code="api_key_expired")
        return key

    def endpoint_for(self, key: KeySpec | None, model: str, project_id: int | None) -> EndpointSpec:
        """The endpoint ``model`` names in the caller's project (404), if the key may call it
        (403)."""
        if key is not None:
            project_id = key.project_id
        endpoint = self._table.endpoints.get((project_id, model)) if project_id else None
        if endpoint is None:
            raise OpenAIError(
                404,
                f"The model `{model}` does not exist or you do not have access to it.",
                param="model",
                code="model_not_found",
            )
        if (
            key is not None
            and key.endpoint_id is not None
            and key.endpoint_id != endpoint.endpoint_id
        ):
            raise OpenAIError(
                403,
                f"This API key is limited to one endpoint of its project; it may not call "
                f"`{model}`.",
                param="model",
                code="endpoint_not_allowed",
            )
        return endpoint

    def models_for(self, principal: Principal) -> list[str]:
        """The endpoint slugs the caller may name, for GET /v1/models."""
        key = principal.key
        return sorted(
            e.slug
            for e in self._table.by_id.values()
            if e.project_id == principal.project_id
            and (key is None or key.endpoint_id is None or key.endpoint_id == e.endpoint_id)
        )

    def current(self, endpoint: EndpointSpec) -> EndpointSpec:
        """The endpoint as the table in force has it (a request may hold an older copy)."""
        return self._table.by_id.get(endpoint.endpoint_id, endpoint)

    def route(self, endpoint: EndpointSpec) -> tuple[VersionSpec, Backend, bool]:
        """The version that answers this request, its backend, and whether it is the canary.

        Reads the endpoint from the table in force, so a request resolved before a swap routes
        to what is served now. A canary that failed to load sends its share to the primary.
        """
        table = self._table
        endpoint = table.by_id.get(endpoint.endpoint_id, endpoint)
        version, is_canary = endpoint.primary, False
        canary = endpoint.canary
        if (
            canary is not None
            and endpoint.canary_percent > 0
            and canary.version_id in table.backends
            and random.random() * 100 < endpoint.canary_percent
        ):
            version, is_canary = canary, True
        if version is None:
            raise OpenAIError(
                503,
                f"The endpoint `{endpoint.slug}` has no model version deployed.",
                code="model_unavailable",
                headers={"x-should-retry": "false"},
            )
        backend = table.backends.get(version.version_id)
        if backend is None:
            why = table.unavailable.get(version.version_id, "it is not loaded")
            raise OpenAIError(
                503,
                f"The model version {version.label!r} of `{endpoint.slug}` cannot be served: {why}",
                code="model_unavailable",
                headers={"x-should-retry": "false"},
            )
        return version, backend, is_canary

    def backends_by_endpoint(self) -> list[tuple[EndpointSpec, VersionSpec, Any]]:
        """(endpoint, version, backend) for each loaded version an endpoint serves (/metrics)."""
        table = self._table
        out = []
        for endpoint in table.by_id.values():
            for version in (endpoint.primary, endpoint.canary):
                if version is not None and version.version_id in table.backends:
                    out.append((endpoint, version, table.backends[version.version_id]))
        return out

    def loaded(self) -> list[dict]:
        """What /health shows: each needed version, loaded (with its queue) or why not."""
        table = self._table
        slugs: dict[int, list[str]] = {}
        for endpoint in table.by_id.values():
            for version in (endpoint.primary, endpoint.canary):
                if version is not None:
                    slugs.setdefault(version.version_id, []).append(endpoint.slug)
        out = []
        for version_id, backend in sorted(table.backends.items()):
            out.append(
                {
                    "version_id": version_id,
                    "label": backend.spec.label,
                    "serve_kind": backend.serve_kind,
                    "state": "loaded",
                    "endpoints": sorted(set(slugs.get(version_id, []))),
                    "max_context": backend.max_context,
                    "running": backend.running(),
                    "waiting": backend.queue_depth(),
                }
            )
        for version_id, why in sorted(table.unavailable.items()):
            out.append(
                {
                    "version_id": version_id,
                    "state": "unavailable",
                    "endpoints": sorted(set(slugs.get(version_id, []))),
                    "error": why,
                }
            )
        return out

    def upstream_endpoints(self) -> list[EndpointSpec]:
        return [e for e in self._table.by_id.values() if e.upstream is not None]
