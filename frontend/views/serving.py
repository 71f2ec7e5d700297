"""The Deploy stage pages: a project's endpoints and serving keys, an endpoint's page (promote
past or through the goal gate, roll back, canary, primary and canary side by side, history,
recent requests, how to call it) and its playground, which streams answers from the inference
process through this web process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from evaluation import selectors as evaluation_selectors
from frontend.forms import (
    CanaryForm,
    EndpointForm,
    EndpointSettingsForm,
    PlaygroundForm,
    PromoteForm,
    ServingKeyForm,
)
from frontend.views.helpers import call_service, project_context, run_action
from projects.models import Project
from projects.permissions import Action
from projects.selectors import get_visible, projects_for_user
from projects.services import require
from serving import selectors, services
from serving.models import Endpoint
from training import selectors as training_selectors

# The window of the traffic figures on the Deploy tab and the endpoint page.
TRAFFIC_WINDOW = timedelta(hours=24)
RECENT_REQUESTS = 50
# The playground waits this long for the inference process: to connect, then between chunks
# (a long generation on a CPU streams a token at a time, so the read timeout is per chunk).
PLAYGROUND_CONNECT_SECONDS = 3.0
PLAYGROUND_READ_SECONDS = 120.0


def serving_url() -> str:
    """Where this web process reaches the inference process (the playground's upstream)."""
    return settings.LLMHUB_SERVING_URL.rstrip("/")


def public_serving_url() -> str:
    """The base URL applications use (behind a load balancer it differs from ours)."""
    return (settings.LLMHUB_SERVING_PUBLIC_URL or serving_url()).rstrip("/")


def _work_project(request: HttpRequest, pk: int) -> Project:
    """The project, for a page showing the team's work: raters (who see the project but not
    its work) get 404, as on the other work pages."""
    return get_visible(
        projects_for_user(request.user), request.user, pk, team_path="team", action=Action.VIEW_WORK
    )


# --- the Deploy tab --------------------------------------------------------------------------


def _deploy_page(
    request: HttpRequest,
    project: Project,
    *,
    endpoint_form: EndpointForm | None = None,
    key_form: ServingKeyForm | None = None,
) -> HttpResponse:
    endpoints = list(
        selectors.endpoints_for_user(request.user).filter(project=project, archived_at=None)
    )
    # Requests, errors and p95 latency of every endpoint in two queries, however many.
    traffic = selectors.endpoint_summaries(endpoints, since=timezone.now() - TRAFFIC_WINDOW)
    for endpoint in endpoints:
        endpoint.traffic = traffic[endpoint.pk]
    keys = list(selectors.serving_keys_for_user(request.user).filter(project=project))
    context = project_context(request, project, "deploy")
    context.update(
        endpoints=endpoints,
        keys=keys,
        now=timezone.now(),
        endpoint_form=endpoint_form or EndpointForm(),
        key_form=key_form or ServingKeyForm(endpoints=endpoints),
        endpoint_form_open=endpoint_form is not None,
        key_form_open=key_form is not None,
        serving_url=public_serving_url(),
    )
    return render(request, "frontend/deploy/stage.html", context)


@login_required
def deploy_stage(request: HttpRequest, pk: int) -> HttpResponse:
    return _deploy_page(request, _work_project(request, pk))


@login_required
@require_POST
def endpoint_create(request: HttpRequest, pk: int) -> HttpResponse:
    project = _work_project(request, pk)
    form = EndpointForm(request.POST)
    if form.is_valid():
        endpoint = call_service(
            form,
            services.endpoint_create,
            actor=request.user,
            project=project,
            **form.service_arguments(),
        )
        if endpoint is not None:
            messages.success(
                request, f"Endpoint {endpoint.name} created: promote a model version to serve it."
            )
            return redirect("endpoint-page", pk=endpoint.pk)
    return _deploy_page(request, project, endpoint_form=form)


@login_required
@require_POST
def serving_key_create(request: HttpRequest, pk: int) -> HttpResponse:
    project = _work_project(request, pk)
    endpoints = selectors.endpoints_for_user(request.user).filter(project=project, archived_at=None)
    form = ServingKeyForm(request.POST, endpoints=endpoints)
    if form.is_valid():
        created = call_service(
            form,
            services.serving_key_create,
            actor=request.user,
            project=project,
            **form.service_arguments(),
        )
        if created is not None:
            key, plaintext = created
            context = project_context(request, project, "deploy")
            context.update(key=key, plaintext=plaintext, serving_url=public_serving_url())
            response = render(request, "frontend/deploy/key_created.html", context)
            # The only time the key exists in plaintext: never cached, never stored.
            response["Cache-Control"] = "no-store"
            return response
    return _deploy_page(request, project, key_form=form)


@login_required
@require_POST
def serving_key_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    key = get_object_or_404(selectors.serving_keys_for_user(request.user), pk=pk)
    if run_action(request, services.serving_key_revoke, actor=request.user, key=key):
        messages.success(request, f"Key {key.name} ({key.prefix}) revoked: it stops working now.")
    return redirect("deploy-stage", pk=key.project_id)


# --- the endpoint page -----------------------------------------------------------------------


def ranked_versions(user, project: Project) -> list[dict[str, Any]]:
    """The project's versions the inference process can serve, best first: most goals met,
    then the first goal's latest value (its better direction), then the newest. Each with its
    goals' status on the version (the latest evaluation on the goal's split), as the
    Evaluate tab measures them."""
    versions = [
        v
        for v in training_selectors.model_versions_for_user(user).filter(
            registered_model__project=project
        )
        if selectors.serve_kind_for(v)
    ]
    progress = evaluation_selectors.goal_progress(project)
    ranked = []
    for version in versions:
        goals = []
        for item in progress:
            mine = [p for p in item["points"] if p["model_version"] == version.pk]
            value = mine[-1]["value"] if mine else None
            goals.append(
                {
                    "goal": item["goal"],
                    "value": value,
                    "met": value is not None and item["goal"].is_met_by(value),
                }
            )
        met = sum(g["met"] for g in goals)
        first = goals[0] if goals else None
        score = 0.0
        if first and first["value"] is not None:
            score = first["value"] if first["goal"].comparison == ">=" else -first["value"]
        if not goals:
            summary = "no goals"
        elif all(g["value"] is None for g in goals):
            summary = "not evaluated"
        else:
            summary = f"{met}/{len(goals)} goals met"
        if version.warnings:
            summary += ", with warnings"
        ranked.append(
            {
                "version": version,
                "goals": goals,
                "met": met,
                "summary": summary,
                "label": f"{version} · {summary}",
                "_key": (
                    -met,
                    first is None or first["value"] is None,
                    -score,
                    -version.created_at.timestamp(),
                    -version.pk,
                ),
            }
        )
    ranked.sort(key=lambda r: r["_key"])
    return ranked


def _version_choices(ranked: list[dict], *, exclude: int | None = None) -> list[tuple]:
    return [(r["version"], r["label"]) for r in ranked if r["version"].pk != exclude]


def _endpoint_page(
    request: HttpRequest,
    endpoint: Endpoint,
    *,
    promote_form: PromoteForm | None = None,
    canary_form: CanaryForm | None = None,
    settings_form: EndpointSettingsForm | None = None,
) -> HttpResponse:
    project = endpoint.project
    ranked = ranked_versions(request.user, project)
    promote_form = promote_form or PromoteForm(
        versions=_version_choices(ranked, exclude=endpoint.version_id)
    )
    canary_form = canary_form or CanaryForm(
        versions=_version_choices(ranked, exclude=endpoint.version_id),
        initial={
            "version": endpoint.canary_version_id,
            "percent": endpoint.canary_percent or 10,
        },
    )
    # A bound form refused for the goal gate lists the reasons and asks for an override.
    gate = {}
    for name, form in (("promote", promote_form), ("canary", canary_form)):
        chosen = form.chosen() if form.is_bound else None
        gate[name] = selectors.promotion_blockers(chosen) if chosen else []
    serve_kind = selectors.serve_kind_for(endpoint.version) if endpoint.version else None
    if endpoint.engine == "external":
        serve_kind = "generate"
    labels = {
        str(v.pk): str(v) for v in (endpoint.version, endpoint.canary_version) if v is not None
    }
    context = project_context(request, project, "deploy")
    context.update(
        endpoint=endpoint,
        ranked=ranked,
        promote_form=promote_form,
        canary_form=canary_form,
        gate=gate,
        previous=selectors.previous_primary(endpoint),
        # Primary, canary, then versions that served in the window before a change.
        columns=selectors.version_stats(endpoint, since=timezone.now() - TRAFFIC_WINDOW),
        deployments=selectors.deployments_for_user(request.user)
        .filter(endpoint=endpoint)
        .select_related("version__registered_model", "started_by")[:100],
        recent=selectors.request_logs_for_user(request.user)
        .filter(endpoint=endpoint)
        .select_related("version__registered_model", "key")[:RECENT_REQUESTS],
        serve_kind=serve_kind,
        serving_url=public_serving_url(),
        playground_form=PlaygroundForm(),
        settings_form=settings_form or EndpointSettingsForm(endpoint=endpoint),
        settings_open=settings_form is not None,
        version_labels=labels,
        gate_url=reverse("endpoint-gate", args=[endpoint.pk]),
        playground_url=reverse("endpoint-playground", args=[endpoint.pk]),
        feedback_url=reverse("endpoint-feedback", args=[endpoint.pk]),
    )
    return render(request, "frontend/deploy/endpoint.html", context)


def _endpoint(request: HttpRequest, pk: int) -> Endpoint:
    return selectors.get_endpoint_for_user(request.user, pk)


@login_required
def endpoint_detail(request: HttpRequest, pk: int) -> HttpResponse:
    return _endpoint_page(request, _endpoint(request, pk))


@login_required
@require_POST
def endpoint_promote(request: HttpRequest, pk: int) -> HttpResponse:
    endpoint = _endpoint(request, pk)
    require(request.user, endpoint.project.team, Action.EDIT_PROJECT)
    ranked = ranked_versions(request.user, endpoint.project)
    form = PromoteForm(request.POST, versions=_version_choices(ranked, exclude=endpoint.version_id))
    if form.is_valid():
        version = form.chosen()
        deployment = call_service(
            form,
            services.endpoint_promote,
            actor=request.user,
            endpoint=endpoint,
            version=version,
            reason=form.cleaned_data["reason"],
            override_reason=form.cleaned_data["override_reason"],
        )
        if deployment is not None:
            note = " past the goal gate (override recorded)" if deployment.override_reason else ""
            messages.success(request, f"{version} now serves {endpoint.name}{note}.")
            return redirect("endpoint-page", pk=endpoint.pk)
    return _endpoint_page(request, endpoint, promote_form=form)


@login_required
@require_POST
def endpoint_rollback(request: HttpRequest, pk: int) -> HttpResponse:
    endpoint = _endpoint(request, pk)
    previous = selectors.previous_primary(endpoint)
    if run_action(
        request,
        services.endpoint_rollback,
        actor=request.user,
        endpoint=endpoint,
        reason=request.POST.get("reason", "").strip(),
    ):
        messages.success(request, f"Rolled back: {previous} serves {endpoint.name} again.")
    return redirect("endpoint-page", pk=endpoint.pk)


@login_required
@require_POST
def endpoint_canary(request: HttpRequest, pk: int) -> HttpResponse:
    endpoint = _endpoint(request, pk)
    require(request.user, endpoint.project.team, Action.EDIT_PROJECT)
    if "stop" in request.POST:
        if run_action(
            request,
            services.endpoint_set_canary,
            actor=request.user,
            endpoint=endpoint,
            version=None,
            percent=0,
            reason=request.POST.get("reason", "").strip(),
        ):
            messages.success(request, "Canary stopped: the primary version takes all the traffic.")
        return redirect("endpoint-page", pk=endpoint.pk)
    ranked = ranked_versions(request.user, endpoint.project)
    form = CanaryForm(request.POST, versions=_version_choices(ranked, exclude=endpoint.version_id))
    if form.is_valid():
        version = form.chosen()
        deployment = call_service(
            form,
            services.endpoint_set_canary,
            actor=request.user,
            endpoint=endpoint,
            version=version,
            percent=form.cleaned_data["percent"],
            reason=form.cleaned_data["reason"],
            override_reason=form.cleaned_data["override_reason"],
        )
        if deployment is not None:
            messages.success(
                request,
                f"Canary: {version} answers {form.cleaned_data['percent']}% of the requests.",
            )
            return redirect("endpoint-page", pk=endpoint.pk)
    return _endpoint_page(request, endpoint, canary_form=form)


@login_required
@require_POST
def endpoint_settings(request: HttpRequest, pk: int) -> HttpResponse:
    endpoint = _endpoint(request, pk)
    require(request.user, endpoint.project.team, Action.EDIT_PROJECT)
    form = EndpointSettingsForm(request.POST, endpoint=endpoint)
    if form.is_valid():
        saved = call_service(
            form, services.endpoint_update, actor=request.user, endpoint=endpoint, **form.changes()
        )
        if saved is not None:
            messages.success(request, f"{saved.name}: settings saved.")
            return redirect("endpoint-page", pk=endpoint.pk)
    return _endpoint_page(request, endpoint, settings_form=form)


@login_required
@require_POST
def endpoint_archive(request: HttpRequest, pk: int) -> HttpResponse:
    endpoint = _endpoint(request, pk)
    if run_action(request, services.endpoint_archive, actor=request.user, endpoint=endpoint):
        messages.success(request, f"Endpoint {endpoint.name} archived: it no longer serves.")
        return redirect("deploy-stage", pk=endpoint.project_id)
    return redirect("endpoint-page", pk=endpoint.pk)


@login_required
@require_GET
def endpoint_gate(request: HttpRequest, pk: int) -> JsonResponse:
    """The goal gate's reasons for ``?version=<id>`` (the promote and canary forms show them
    as the select changes); the POST checks again."""
    endpoint = _endpoint(request, pk)
    version = (
        training_selectors.model_versions_for_user(request.user)
        .filter(registered_model__project=endpoint.project, pk=_int(request.GET.get("version")))
        .first()
    )
    if version is None:
        raise Http404("No such model version in this project.")
    return JsonResponse({"version": version.pk, "blockers": selectors.promotion_blockers(version)})


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


# --- the playground --------------------------------------------------------------------------


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload)}\n\n"


def _engine_error(response: httpx.Response) -> str:
    """The message of an OpenAI error envelope, else the status and the start of the body."""
    try:
        message = str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        text = response.text.strip()[:300]
        message = f"The inference process answered {response.status_code}" + (
            f": {text}" if text else "."
        )
    if response.status_code == 401:
        # The playground's token is derived from SECRET_KEY: the two processes must share it.
        message += " (The inference process refused the playground's token: does it run with"
        message += " this site's SECRET_KEY?)"
    return message


def relay(url: str, body: dict, headers: dict[str, str]) -> Iterator[str]:
    """POST ``body`` to the inference process and pass its server-sent events on as they come.

    The first event is ours: ``{"llmhub": {version, canary, request_id}}`` from the answer's
    headers (the browser cannot see them). Every failure (not running, timeout, an engine
    error) becomes one ``{"error": {"message": ...}}`` event, so the page always says why.
    """
    base = url.split("/v1/", 1)[0]
    timeout = httpx.Timeout(PLAYGROUND_READ_SECONDS, connect=PLAYGROUND_CONNECT_SECONDS)
    try:
        with (
            httpx.Client(timeout=timeout, trust_env=False) as client,
            client.stream("POST", url, json=body, headers=headers) as response,
        ):
            if response.status_code != 200:
                response.read()
                yield _sse({"error": {"message": _engine_error(response)}})
                return
            yield _sse(
                {
                    "llmhub": {
                        "version_id": response.headers.get("x-llmhub-version"),
                        "canary": response.headers.get("x-llmhub-canary") == "true",
                        "request_id": response.headers.get("x-request-id"),
                    }
                }
            )
            for line in response.iter_lines():
                if line.startswith("data:"):
                    yield line + "\n\n"
    except httpx.ConnectError:
        yield _sse(
            {
                "error": {
                    "message": f"The inference process is not running at {base}: start it "
                    "with bin/dev or manage.py serve."
                }
            }
        )
    except httpx.TimeoutException:
        yield _sse(
            {
                "error": {
                    "message": f"The inference process at {base} did not answer in time "
                    f"({PLAYGROUND_READ_SECONDS:.0f} s between tokens)."
                }
            }
        )
    except httpx.HTTPError as exc:
        yield _sse({"error": {"message": f"The inference process at {base} failed: {exc}"}})


def _json_body(request: HttpRequest) -> dict | None:
    if request.content_type == "application/json":
        try:
            data = json.loads(request.body or b"{}")
        except ValueError:
            return None
        return data if isinstance(data, dict) else None
    return request.POST.dict()


@login_required
@require_POST
def endpoint_playground(request: HttpRequest, pk: int) -> HttpResponse:
    """One playground answer, streamed: the form's chat messages and settings go to the
    inference process with the internal token (any endpoint of this project, no limits; the
    request log says "playground")."""
    from serving.runner import internal_token

    endpoint = _endpoint(request, pk)
    require(request.user, endpoint.project.team, Action.RUN_JOBS)
    data = _json_body(request)
    if data is None:
        return JsonResponse({"errors": {"__all__": ["The body is not a JSON object."]}}, status=400)
    form = PlaygroundForm(data)
    if not form.is_valid():
        return JsonResponse({"errors": form.errors.get_json_data()}, status=400)
    response = StreamingHttpResponse(
        relay(
            f"{serving_url()}/v1/chat/completions",
            form.request_body(endpoint.slug),
            {
                "Authorization": f"Bearer {internal_token()}",
                "X-LLMHub-Project": str(endpoint.project_id),
            },
        ),
        content_type="text/event-stream",
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    return response


@login_required
@require_POST
def endpoint_feedback(request: HttpRequest, pk: int) -> JsonResponse:
    """A thumbs up or down on one playground answer, by its response id."""
    endpoint = _endpoint(request, pk)
    data = _json_body(request) or {}
    try:
        feedback = services.feedback_record(
            actor=request.user,
            endpoint=endpoint,
            response_id=str(data.get("response_id", "")),
            score=_int(data.get("score")) or 0,
            comment=str(data.get("comment", "")),
            source="playground",
        )
    except ValidationError as exc:
        # The shape llmhub.js's api() reads.
        return JsonResponse({"error": {"message": " ".join(exc.messages)}}, status=400)
    return JsonResponse({"ok": True, "id": feedback.pk, "score": feedback.score})
