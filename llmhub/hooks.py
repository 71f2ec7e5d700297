"""Named hooks: how a base layer calls into a later one without importing it.

DESIGN.md forbids a base stage calling a later one and the core ``llmhub/`` importing a stage
app. Where the base must still let others react or decide, it fires a named hook, and the app
that knows what to do registers a function for it in its ``AppConfig.ready()``:

- ``GOALS_CHANGED`` (``project=``): a goal was created or changed; evaluation measures it from
  the evaluations it already has (``evaluation/apps.py``).
- ``JOB_AUTHORIZE`` (``actor=, job=, action=``): may ``actor`` do ``action`` (a
  ``projects.permissions.Action`` value) to ``job``? Raises Http404 / PermissionDenied; the core's
  job services call it, and ``projects`` (which owns roles) registers it.
- ``AUDIT`` (``actor=, verb=, target=, changes=``): record an audit event about ``target``
  (``projects`` registers ``projects.audit.record_event``).
- ``JOB_ENDED`` (``job=``): a job reached succeeded, failed or cancelled, whoever recorded it
  (its runner, a sweep that failed it, a cancel of a queued job); fired once the change is
  written, through :func:`llmhub.jobs.job_ended`, which logs a reaction's error instead of
  raising it. ``training`` registers the registration of a sweep's best trial.

A hook the caller cannot do without (authorization) is called with :func:`call_required`,
which fails closed when nothing is registered.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from django.core.exceptions import ImproperlyConfigured

GOALS_CHANGED = "goals.changed"
JOB_AUTHORIZE = "job.authorize"
AUDIT = "audit.record"
JOB_ENDED = "job.ended"

_lock = threading.Lock()
_hooks: dict[str, list[Callable[..., Any]]] = {}


def register(name: str, fn: Callable[..., Any]) -> None:
    """Add ``fn`` to hook ``name`` (once: registering it again, e.g. from a second ``ready()``
    call in tests, changes nothing)."""
    with _lock:
        functions = _hooks.setdefault(name, [])
        if fn not in functions:
            functions.append(fn)


def unregister(name: str, fn: Callable[..., Any]) -> None:
    with _lock:
        if fn in _hooks.get(name, []):
            _hooks[name].remove(fn)


def registered(name: str) -> list[Callable[..., Any]]:
    with _lock:
        return list(_hooks.get(name, []))


def fire(name: str, **kwargs: Any) -> list[Any]:
    """Call every function of hook ``name`` with ``kwargs``, in registration order; returns
    their results. Nothing registered: nothing happens (an optional reaction)."""
    return [fn(**kwargs) for fn in registered(name)]


def call_required(name: str, **kwargs: Any) -> list[Any]:
    """Like :func:`fire`, but a hook nobody registered is an error rather than a silent pass,
    so an authorization check can never be skipped by a missing app."""
    functions = registered(name)
    if not functions:
        raise ImproperlyConfigured(f"No function is registered for the hook '{name}'.")
    return [fn(**kwargs) for fn in functions]
