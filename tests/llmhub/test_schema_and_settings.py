"""The OpenAPI schema, and the production settings posture."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from django.core.management import call_command

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_schema_endpoint_serves_openapi_3_with_every_resource(world, api) -> None:
    response = api(world.users["viewer"]).get("/api/v1/schema/?format=json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    for path in (
        "/api/v1/projects/",
        "/api/v1/goals/",
        "/api/v1/teams/",
        "/api/v1/members/",
        "/api/v1/activity/",
        "/api/v1/tokens/",
        "/api/v1/health-checks/{id}/cancel/",
    ):
        assert path in schema["paths"], path
    assert schema["components"]["securitySchemes"]["ApiToken"]["scheme"] == "bearer"


def test_schema_generates_without_warnings(tmp_path) -> None:
    # --fail-on-warn turns any unresolved type or missing serializer into an error.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "s.yml"))
    assert (tmp_path / "s.yml").stat().st_size > 1000


def _manage(args: list[str], env_extra: dict[str, str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "LLMHUB_"))}
    env |= {"DJANGO_SETTINGS_MODULE": "llmhub.settings"} | env_extra
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_production_settings_pass_check_deploy(tmp_path) -> None:
    result = _manage(
        ["check", "--deploy", "--fail-level", "WARNING"],
        {
            "LLMHUB_ENV": "production",
            "SECRET_KEY": "k" * 20 + "a-production-secret-that-is-long-and-random-enough",
            "ALLOWED_HOSTS": "llmhub.example.com",
            "LLMHUB_VAR_DIR": str(tmp_path),
        },
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_refuses_to_start_without_a_secret_key(tmp_path) -> None:
    result = _manage(
        ["check"],
        {"LLMHUB_ENV": "production", "ALLOWED_HOSTS": "x", "LLMHUB_VAR_DIR": str(tmp_path)},
    )
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_secrets_can_come_from_files(tmp_path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("f" * 60 + "\n")
    result = _manage(
        ["shell", "-c", "from django.conf import settings; print(len(settings.SECRET_KEY))"],
        {
            "LLMHUB_ENV": "production",
            "SECRET_KEY_FILE": str(secret_file),
            "ALLOWED_HOSTS": "x",
            "LLMHUB_VAR_DIR": str(tmp_path),
        },
    )
    assert result.stdout.strip().splitlines()[-1] == "60", result.stderr


def test_a_malformed_setting_fails_loudly(tmp_path) -> None:
    result = _manage(
        ["check"], {"LLMHUB_JOB_STALE_AFTER_SECONDS": "soon", "LLMHUB_VAR_DIR": str(tmp_path)}
    )
    assert result.returncode != 0
    assert "LLMHUB_JOB_STALE_AFTER_SECONDS must be an integer, not 'soon'" in result.stderr
