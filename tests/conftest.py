"""Fixtures shared by the whole suite: a team with one member per role, API clients, and a
real Celery worker process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from rest_framework.test import APIClient

from projects.models import Role
from projects.services import api_token_create
from tests.factories import MembershipFactory, ProjectFactory, TeamFactory, UserFactory

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATASETS = REPO_ROOT.parent / "shared" / "datasets"


@dataclass
class TeamWorld:
    """A team with one user in each role, an outsider, and a project in the team."""

    team: object
    project: object
    users: dict  # role -> user
    outsider: object
    other_team: object
    other_project: object


@pytest.fixture
def world(db) -> TeamWorld:
    team = TeamFactory(name="Acme AI", slug="acme")
    users = {}
    for role in Role.values:
        user = UserFactory(username=role)
        MembershipFactory(team=team, user=user, role=role)
        users[role] = user
    other_team = TeamFactory(name="Rivals", slug="rivals")
    outsider = UserFactory(username="outsider")
    MembershipFactory(team=other_team, user=outsider, role=Role.ADMIN)
    return TeamWorld(
        team=team,
        project=ProjectFactory(team=team, name="Support triage", slug="support-triage"),
        users=users,
        outsider=outsider,
        other_team=other_team,
        other_project=ProjectFactory(team=other_team, name="Secret", slug="secret"),
    )


@pytest.fixture
def api() -> callable:
    """``api(user)`` -> an APIClient authenticated with a real bearer token of ``user``."""

    def make(user=None) -> APIClient:
        client = APIClient()
        if user is not None:
            _token, plaintext = api_token_create(actor=user, name="tests")
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
        return client

    return make


@pytest.fixture
def broker_down(monkeypatch) -> None:
    """The job queue cannot be reached: the broker URL points where nothing listens, and an
    earlier successful check is forgotten."""
    from llmhub import jobs
    from llmhub.celery import app

    monkeypatch.setattr(jobs, "_broker_ok_until", 0.0)
    monkeypatch.setattr(app.conf, "broker_url", "redis://127.0.0.1:1/0")


# --- a real Celery worker ---------------------------------------------------------------------


class WorkerProcess:
    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(
        self,
        *,
        queues: str = "cpu,gpu",
        timeout: float = 60,
        sweep_every: float | None = None,
        env_extra: dict[str, str] | None = None,
    ) -> WorkerProcess:
        """Start the worker; ``sweep_every`` seconds turns on its in-process job sweep, which
        is off by default so that it cannot race tests that sweep themselves."""
        env = os.environ | {
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "LLMHUB_TEST_WORKER_DB": str(connection.settings_dict["NAME"]),
            "PYTHONUNBUFFERED": "1",
            "LLMHUB_JOB_SWEEP_IN_PROCESS": "true" if sweep_every else "false",
        }
        if sweep_every:
            env["LLMHUB_JOB_SWEEP_INTERVAL_SECONDS"] = str(max(1, round(sweep_every)))
        env |= env_extra or {}
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "llmhub.celery",
                "worker",
                "-Q",
                queues,
                "--pool",
                "solo",
                "-l",
                "info",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-n",
                f"test-{uuid.uuid4().hex[:8]}@%h",
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"The worker exited at start:\n{self.log()}")
            if " ready." in self.log():
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"The worker did not start in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """Kill -9, as when a machine dies: no cleanup runs."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, 9)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        if getattr(self, "_log", None):
            self._log.close()


@pytest.fixture(scope="session")
def celery_worker(django_db_setup, django_db_blocker, tmp_path_factory):
    """One real `celery worker` process for the session, on the test database and broker."""
    worker = WorkerProcess(tmp_path_factory.mktemp("worker") / "worker.log")
    with django_db_blocker.unblock():
        worker.start()
    yield worker
    worker.stop()


@pytest.fixture
def fresh_worker(django_db_setup, tmp_path):
    """A worker of the test's own, which the test may kill."""
    worker = WorkerProcess(tmp_path / "worker.log")
    yield worker
    worker.stop()


@pytest.fixture(autouse=True)
def _media_root_exists() -> None:
    Path(settings.MEDIA_ROOT).mkdir(parents=True, exist_ok=True)


def pytest_sessionfinish(session, exitstatus) -> None:
    """Remove this run's scratch folders (the controller does it once every worker is done)."""
    import shutil

    if not os.environ.get("PYTEST_XDIST_WORKER"):
        shutil.rmtree(os.environ.get("LLMHUB_TEST_RUN_ROOT", ""), ignore_errors=True)
