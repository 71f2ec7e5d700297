"""Sign-up and the account page (API tokens)."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from frontend.forms import ApiTokenForm, SignUpForm
from frontend.views.helpers import call_service
from projects import selectors, services


def signup(request: HttpRequest) -> HttpResponse:
    if not settings.LLMHUB_ALLOW_SIGNUP:
        raise Http404("Sign-up is closed: ask an administrator for an account.")
    if request.user.is_authenticated:
        return redirect("dashboard")
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, "Welcome to LLMHub. Create a team to start your first project.")
        return redirect("team-create")
    return render(request, "registration/signup.html", {"form": form})


@login_required
def account(request: HttpRequest) -> HttpResponse:
    form = ApiTokenForm(request.POST or None)
    new_token = None
    if request.method == "POST" and form.is_valid():
        created = call_service(
            form, services.api_token_create, actor=request.user, **form.cleaned_data
        )
        if created:
            _token, new_token = created
            form = ApiTokenForm()
    return render(
        request,
        "frontend/account.html",
        {
            "form": form,
            "new_token": new_token,
            "tokens": selectors.api_tokens_for_user(request.user),
        },
    )


@login_required
@require_POST
def token_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    token = get_object_or_404(selectors.api_tokens_for_user(request.user), pk=pk)
    services.api_token_revoke(actor=request.user, token=token)
    messages.success(request, f"Token “{token.name}” revoked.")
    return redirect("account")
