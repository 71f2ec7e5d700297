"""Team pages: create a team, see its members and projects, manage roles."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from frontend.forms import MemberAddForm, TeamForm
from frontend.views.helpers import call_service, run_action, team_context
from projects import selectors, services
from projects.models import Role


@login_required
def team_create(request: HttpRequest) -> HttpResponse:
    form = TeamForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        team = call_service(form, services.team_create, actor=request.user, **form.cleaned_data)
        if team:
            messages.success(request, f"Team {team.name} created. You are its admin.")
            return redirect("team-detail", slug=team.slug)
    return render(request, "frontend/team_form.html", {"form": form})


@login_required
def team_detail(request: HttpRequest, slug: str) -> HttpResponse:
    team = selectors.get_team_by_slug_for_user(request.user, slug)
    context = team_context(request, team)
    add_form = MemberAddForm(request.POST or None)
    if request.method == "POST" and add_form.is_valid():
        member = call_service(
            add_form,
            services.membership_add,
            actor=request.user,
            team=team,
            user_identifier=add_form.cleaned_data["user"],
            role=add_form.cleaned_data["role"],
        )
        if member:
            messages.success(request, f"{member.user.username} joined as {member.role}.")
            return redirect("team-detail", slug=team.slug)
    context.update(
        members=selectors.members_for_user(request.user).filter(team=team),
        projects=selectors.projects_for_user(request.user).filter(team=team),
        add_form=add_form,
        roles=Role.choices,
    )
    return render(request, "frontend/team_detail.html", context)


@login_required
@require_POST
def member_role(request: HttpRequest, pk: int) -> HttpResponse:
    membership = get_object_or_404(selectors.members_for_user(request.user), pk=pk)
    role = request.POST.get("role", "")
    if run_action(
        request,
        services.membership_change_role,
        actor=request.user,
        membership=membership,
        role=role,
    ):
        messages.success(request, f"{membership.user.username} is now {role}.")
    return redirect("team-detail", slug=membership.team.slug)


@login_required
@require_POST
def member_remove(request: HttpRequest, pk: int) -> HttpResponse:
    membership = get_object_or_404(selectors.members_for_user(request.user), pk=pk)
    team = membership.team
    if not run_action(
        request, services.membership_remove, actor=request.user, membership=membership
    ):
        return redirect("team-detail", slug=team.slug)
    messages.success(request, f"{membership.user.username} left {team.name}.")
    if membership.user_id == request.user.pk:
        return redirect("dashboard")
    return redirect("team-detail", slug=team.slug)
