"""Small helpers shared by page views."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from django import forms
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    UnreadablePostError,
)
from django.http.multipartparser import MultiPartParserError
from django.shortcuts import redirect
from django.urls import URLPattern, path, reverse
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_POST

from projects.models import Project, Team
from projects.permissions import Action, allowed_actions, role_allows
from projects.selectors import role_in_team, teams_for_user

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


# Every route under it is a page of the project's work (its stages, forms and actions).
PROJECT_PAGES_PREFIX = "projects/<int:pk>/"
# The one project page a rater is sent on from (to their campaigns in the project), not 404.
PROJECT_OVERVIEW = "project-detail"


def my_campaigns_url(project_pk: int) -> str:
    """The rater's own page: their campaigns in one project."""
    return f"{reverse('my-campaigns')}?project={project_pk}"


def raters_to_their_campaigns(
    view: Callable[..., HttpResponse], *, overview: bool = False
) -> Callable[..., HttpResponse]:
    """A page of a project's work, refused before the view runs to a member whose role may not
    see that work (a rater: LABEL without VIEW_WORK): the project's overview sends them to
    their campaigns in the project, every other page (and every action) is a 404, the answer
    for what a role may not see. Outsiders and anonymous users go on to the view (its own 404
    and login redirect)."""

    @functools.wraps(view)  # keeps csrf_exempt and the other markers of the view
    def guarded(request: HttpRequest, pk: int, *args: Any, **kwargs: Any) -> HttpResponse:
        roles = teams_for_user(request.user).filter(projects=pk).values_list("my_role", flat=True)
        role = roles.first()
        if role is not None and not role_allows(role, Action.VIEW_WORK):
            if overview and request.method in ("GET", "HEAD"):
                return redirect(my_campaigns_url(pk))
            raise Http404(f"No project with id {pk} was found.")
        return view(request, pk, *args, **kwargs)

    return guarded


def guard_project_pages(patterns: list) -> list:
    """``patterns`` with every route under ``projects/<pk>/`` behind
    :func:`raters_to_their_campaigns`: one place, so a new project page is covered with
    nobody listing it (tests/frontend/test_feedback_pages.py walks them as a rater)."""
    guarded = []
    for pattern in patterns:
        route = str(pattern.pattern)
        if isinstance(pattern, URLPattern) and route.startswith(PROJECT_PAGES_PREFIX):
            view = raters_to_their_campaigns(
                pattern.callback, overview=pattern.name == PROJECT_OVERVIEW
            )
            pattern = path(route, view, pattern.default_args, name=pattern.name)
        guarded.append(pattern)
    return guarded


def project_context(request: HttpRequest, project: Project, stage: str) -> dict[str, Any]:
    """What every project page needs: the project, the user's role and rights, the tabs. A
    role that may not see the team's work never gets a project page (raters are turned away
    before, by :func:`raters_to_their_campaigns`; this holds for pages elsewhere too)."""
    role = role_in_team(request.user, project.team_id)
    if not role_allows(role, Action.VIEW_WORK):
        raise Http404(f"No project with id {project.pk} was found.")
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
