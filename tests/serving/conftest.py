"""Fixtures for the deploy stage: a project with an endpoint serving a tiny causal LM, a serving
key, and a running inference stack (uvicorn + the engine + the runner) on a free port.

``deployed`` builds the rows through the real services (the version is registered the way a
training run registers it, with its files in storage); ``serving_stack`` starts the stack in
this process (uvicorn in a thread, the runner's poller and writer threads against the test
database). Both make the test transactional (the threads read and write committed rows).

    def test_it(deployed, serving_stack):
        stack = serving_stack()
        client = stack.client(deployed.plaintext)
        client.completions.create(model=deployed.endpoint.slug, prompt="Hi", max_tokens=4)
        stack.flush()  # the request log rows are written
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.serving.engine.models import tiny_causal_lm_dir


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory) -> Path:
    """One tiny GPT-2 directory for the session (registered as many versions as tests need)."""
    return tiny_causal_lm_dir(tmp_path_factory.mktemp("serving-models"))


def register_version(project, model_dir: Path, *, actor, name: str = "bard", kind="pretrain_clm"):
    """A ModelVersion of ``project`` holding ``model_dir``, registered as a finished training
    job registers its model (files stored, numbered, stage candidate)."""
    from training import services as training_services
    from training.models import TrainingJob

    job = TrainingJob.objects.create(
        project=project, name=name, kind=kind, created_by=actor, status="succeeded"
    )
    return training_services.model_version_register(
        job=job, model_dir=model_dir, metrics={}, parameters=1
    )


@dataclass
class Deployed:
    world: object
    manager: object
    endpoint: object
    version: object  # what the endpoint serves
    key: object  # a ServingKey of the project
    plaintext: str  # its bearer
    model_dir: Path
    versions: list = field(default_factory=list)

    def new_version(self):
        """Another version of the same registered model (same weights, a new id)."""
        version = register_version(self.world.project, self.model_dir, actor=self.manager)
        self.versions.append(version)
        return version

    def new_key(self, **limits) -> tuple[object, str]:
        from serving.services import serving_key_create

        return serving_key_create(
            actor=self.manager, project=self.world.project, name="another", **limits
        )

    def promote(self, version):
        from serving.services import endpoint_promote

        deployment = endpoint_promote(actor=self.manager, endpoint=self.endpoint, version=version)
        self.endpoint.refresh_from_db()
        return deployment


@pytest.fixture
def deployed(transactional_db, world, tiny_lm_dir) -> Deployed:
    """A staging endpoint ``chat`` in ``world.project`` serving a tiny causal LM (promoted), and
    a project-wide serving key without limits."""
    from serving.services import endpoint_create, endpoint_promote, serving_key_create

    manager = world.users["manager"]
    version = register_version(world.project, tiny_lm_dir, actor=manager)
    endpoint = endpoint_create(actor=manager, project=world.project, name="Chat", slug="chat")
    endpoint_promote(actor=manager, endpoint=endpoint, version=version)
    endpoint.refresh_from_db()
    key, plaintext = serving_key_create(actor=manager, project=world.project, name="app")
    return Deployed(
        world=world,
        manager=manager,
        endpoint=endpoint,
        version=version,
        key=key,
        plaintext=plaintext,
        model_dir=tiny_lm_dir,
        versions=[version],
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class UvicornThread:
    """An ASGI app under uvicorn in a daemon thread, on a free port of 127.0.0.1."""

    def __init__(self, app) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=self.port,
                log_level="warning",
                timeout_graceful_shutdown=5,
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start in a thread.")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)


class ServingStack:
    """The inference process's parts in this process: EngineState + create_app under uvicorn in
    a thread, and a ServingRunner (poller + writer threads) on the test database."""

    def __init__(self, *, engine_settings=None, sync_seconds: float = 0.1, **runner_kw) -> None:
        from serving.engine.config import EngineSettings

        self.engine_settings = engine_settings or EngineSettings(max_wait_ms=2.0)
        self.sync_seconds = sync_seconds
        self.runner_kw = {"flush_seconds": 0.05, **runner_kw}
        self.state = None
        self.runner = None
        self._http: UvicornThread | None = None

    def start(self) -> ServingStack:
        from serving.engine.app import create_app
        from serving.engine.state import EngineState
        from serving.runner import ServingRunner

        self.runner = ServingRunner(sync_seconds=self.sync_seconds, **self.runner_kw)
        self.state = EngineState(settings=self.engine_settings, sink=self.runner.sink)
        self.runner.start(self.state)  # the first snapshot before the port opens, as serve does
        self._http = UvicornThread(create_app(self.state))
        self.url = self._http.url
        self.base_url = f"{self.url}/v1"
        return self

    def sync(self) -> None:
        """Make the engine serve what the database says now (without waiting for the poller)."""
        self.runner.sync(force=True)

    def flush(self) -> int:
        """Write the request log records queued so far."""
        return self.runner.flush()

    def client(self, api_key: str, **options):
        import openai

        return openai.OpenAI(
            base_url=self.base_url, api_key=api_key, **{"max_retries": 0, "timeout": 30, **options}
        )

    def stop(self) -> None:
        if self._http is not None:
            self._http.stop()
        if self.runner is not None:
            self.runner.stop()
        if self.state is not None:
            self.state.close()


@pytest.fixture
def serving_stack(transactional_db):
    """``serving_stack(**kw)`` -> a started :class:`ServingStack`; stopped after the test
    (before the database is flushed)."""
    stacks: list[ServingStack] = []

    def start(**kw) -> ServingStack:
        stack = ServingStack(**kw).start()
        stacks.append(stack)
        return stack

    yield start
    for stack in reversed(stacks):
        stack.stop()


def plain_engine(model_dir: Path, *, slug: str, api_key: str, label: str = "upstream"):
    """An inference engine with no database (its own snapshot: one endpoint ``slug`` serving
    ``model_dir``, one key ``api_key``) under uvicorn: what an external engine (vLLM, TGI) is
    to LLMHub. Returns (UvicornThread, EngineState, ListSink); stop both when done."""
    import hashlib

    from serving.engine.app import create_app
    from serving.engine.config import EngineSettings
    from serving.engine.state import EngineState
    from serving.engine.types import EndpointSpec, KeySpec, ListSink, Snapshot, VersionSpec

    sink = ListSink()
    state = EngineState(settings=EngineSettings(max_wait_ms=2.0), sink=sink)
    state.apply(
        Snapshot(
            endpoints=(
                EndpointSpec(
                    endpoint_id=1,
                    project_id=1,
                    slug=slug,
                    revision=1,
                    primary=VersionSpec(
                        version_id=1, label=label, model_dir=str(model_dir), serve_kind="generate"
                    ),
                ),
            ),
            keys=(
                KeySpec(
                    key_id=1, key_hash=hashlib.sha256(api_key.encode()).hexdigest(), project_id=1
                ),
            ),
        )
    )
    return UvicornThread(create_app(state)), state, sink
