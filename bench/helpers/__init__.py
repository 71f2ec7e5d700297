"""Helpers the benchmarks share: a scratch PostgreSQL database and a local web server."""

from __future__ import annotations

import http.client
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

REPO = Path(__file__).resolve().parents[2]


def postgres_server() -> str | None:
    """DATABASE_URL, or the local PostgreSQL, if something answers there."""
    url = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    parsed = urlparse(url)
    if not parsed.scheme.startswith("postgres"):
        return None
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 5432), 1):
            return url
    except OSError:
        return None


def psql(server: str, sql: str) -> None:
    url = urlparse(server)
    subprocess.run(
        [
            "psql",
            "-h",
            url.hostname or "127.0.0.1",
            "-p",
            str(url.port or 5432),
            "-U",
            url.username or "postgres",
            "-d",
            "postgres",
            "-qc",
            sql,
        ],
        check=True,
        capture_output=True,
    )


def unique_name(prefix: str) -> str:
    """A name no other run uses: ``prefix``, this process's id and a random suffix (a valid
    PostgreSQL identifier for a lowercase ``prefix``), so parallel benches never drop each
    other's databases."""
    return f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"


def fresh_database(server: str, name: str) -> str:
    """Create database ``name`` (from ``unique_name``) on ``server``; returns its URL. Nothing
    is dropped first: a unique name cannot belong to anyone else's run."""
    psql(server, f"CREATE DATABASE {name}")
    return urlparse(server)._replace(path=f"/{name}").geturl()


def configure_django(scratch: Path, server: str | None, database: str | None) -> None:
    """For benches that call Django in their own process: point it at the scratch folder and
    the bench's own database, then set it up."""
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "llmhub.settings",
            "LLMHUB_VAR_DIR": str(scratch),
            "DEBUG": "false",
            "LLMHUB_ENV": "development",
        }
    )
    os.environ.pop("REDIS_URL", None)
    if server and database:
        os.environ["DATABASE_URL"] = fresh_database(server, database)
    else:
        os.environ.pop("DATABASE_URL", None)
    import django

    django.setup()


def drop_database(server: str, name: str) -> None:
    """Drop database ``name``, closing sessions still connected to it (a web server that has
    not quite exited)."""
    psql(server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def stop_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so a bench that is killed (not only one interrupted with
    Ctrl-C, which raises KeyboardInterrupt) still runs its ``finally`` clean-up."""

    def _exit(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)


def stop_process(process: subprocess.Popen | None, timeout: float = 10) -> None:
    """Terminate a child process and wait for it; kill it if it does not exit in time."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_web_server(
    env: dict[str, str], *, gunicorn: bool = False, workers: int = 1, threads: int = 1
) -> tuple[subprocess.Popen, int]:
    """The web server on a free port, once it answers: ``manage.py runserver --noreload`` (one
    process: its RSS is the web process's), or with ``gunicorn`` what production runs
    (``workers`` processes of ``threads`` threads; one sync worker by default), for latencies
    that should not include the development server's."""
    port = free_port()
    if gunicorn:
        command = [sys.executable, "-m", "gunicorn", "llmhub.wsgi", "--workers", str(workers)]
        command += ["--threads", str(threads), "--bind", f"127.0.0.1:{port}"]
    else:
        command = [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"]
    server = subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                http.client.HTTPConnection("127.0.0.1", port, timeout=1).request("GET", "/login/")
                return server, port
            except OSError:
                time.sleep(0.2)
        raise SystemExit("The web server did not start.")
    except BaseException:  # also Ctrl-C while waiting: the caller has no handle to stop it
        stop_process(server)
        raise
