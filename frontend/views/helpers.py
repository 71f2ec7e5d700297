"""Small helpers shared by page views."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from django import forms
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, UnreadablePostError
from django.http.multipartparser import MultiPartParserError
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_POST

from projects.models import Project, Team
from projects.permissions import allowed_actions
from projects.selectors import role_in_team

T = TypeVar("T")

STAGES = (
    ("define", "Define"),
    ("data", "Data"),
    ("train", "Train"),
    ("evaluate", "Evaluate"),
    ("deploy", "Deploy"),
    ("monitor", "Monitor"),
    ("feedback", "Feedback"),
)


def call_service(form: forms.Form, service: Callable[..., T], **kwargs: Any) -> T | None:
    """Run ``service``; on a ValidationError attach its messages to ``form`` and return None."""
    try:
        return service(**kwargs)
    except ValidationError as exc:
        if hasattr(exc, "error_dict"):
            for field, errors in exc.message_dict.items():
                target = field if field in form.fields else None
                for message in errors:
                    form.add_error(target, message)
        else:
            for message in exc.messages:
                form.add_error(None, message)
        return None


def team_context(request: HttpRequest, team: Team) -> dict[str, Any]:
    role = getattr(team, "my_role", None) or role_in_team(request.user, team)
    return {"team": team, "my_role": role, "can": allowed_actions(role)}


def project_context(request: HttpRequest, project: Project, stage: str) -> dict[str, Any]:
    """What every project page needs: the project, the user's role and rights, the tabs."""
    role = role_in_team(request.user, project.team_id)
    return {
        "project": project,
        "team": project.team,
        "my_role": role,
        "can": allowed_actions(role),
        "stages": STAGES,
        "stage": stage,
    }


def run_action(request: HttpRequest, service: Callable[..., Any], **kwargs: Any) -> bool:
    """Run a form-less action (a button); a ValidationError becomes an error message."""
    from django.contrib import messages

    try:
        service(**kwargs)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return False
    return True


def size_limited_upload(
    view: Callable[[HttpRequest, int, str | None], HttpResponse],
) -> Callable[[HttpRequest, int], HttpResponse]:
    """A page view that receives a file: the size-limited upload handler is installed before
    anything reads the body (so CSRF is checked afterwards, by the inner view), and the body is
    parsed at once, so one cut off half-way leaves no temporary file. ``view(request, pk,
    error)`` gets the size error, if any, to show on its form."""
    from datasets_app.uploads import parse_upload, prepare_upload

    checked = csrf_protect(view)

    @csrf_exempt  # checked by the inner view, once the size-limited upload handler is set
    @login_required
    @require_POST
    @functools.wraps(view)
    def receive(request: HttpRequest, pk: int) -> HttpResponse:
        error = prepare_upload(request)
        if error is None:
            try:
                parse_upload(request)
            except (MultiPartParserError, UnreadablePostError) as exc:
                return HttpResponseBadRequest(f"The upload could not be read: {exc}")
        return checked(request, pk, error)

    return receive
