"""The ML runtimes are plain Python: importing any of them loads no Django and no Celery.

Every ``.py`` under the runtime folders is found by walking them, so a new module is covered
without touching this test. The imports run in a fresh interpreter (this one has Django loaded
already), without DJANGO_SETTINGS_MODULE.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
RUNTIME_FOLDERS = (
    "datasets_app/cleaning",
    "training/runtime",
    "evaluation/metrics",
    "evaluation/runtime",
    "evaluation/feedback/runtime",
    "serving/engine",
    "serving/monitoring/runtime",  # the drift statistics
    "shared_runtime",  # what the training and evaluation runtimes share (input formatting)
)

# Imports each module in turn and reports, per module, the django/celery modules it loaded.
PROBE = r"""
import importlib, json, sys
def forbidden():
    return {m for m in sys.modules if m.split(".")[0] in ("django", "celery")}
report = {}
for name in json.loads(sys.argv[1]):
    before = forbidden()
    importlib.import_module(name)
    loaded = sorted(forbidden() - before)
    if loaded:
        report[name] = loaded
print(json.dumps(report))
"""


def runtime_modules() -> list[str]:
    modules = []
    for folder in RUNTIME_FOLDERS:
        root = REPO_ROOT / folder
        if not root.is_dir():
            continue  # a runtime not written yet (serving/engine)
        for path in sorted(root.rglob("*.py")):
            parts = path.relative_to(REPO_ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules.append(".".join(parts))
    return modules


def test_the_walk_finds_the_runtimes() -> None:
    modules = runtime_modules()
    assert "training.runtime.run" in modules
    assert "datasets_app.cleaning" in modules and "evaluation.metrics" in modules
    assert "shared_runtime.inputs" in modules


def forbidden_imports(modules: list[str]) -> dict[str, list[str]]:
    """Per module of ``modules`` that loads any, the django/celery modules importing it loads,
    in a fresh interpreter without DJANGO_ settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    result = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(modules)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_no_runtime_module_loads_django_or_celery() -> None:
    dirty = forbidden_imports(runtime_modules())
    assert dirty == {}, "\n".join(
        f"{module} loads {', '.join(loaded[:8])}{' ...' if len(loaded) > 8 else ''}"
        for module, loaded in dirty.items()
    )
