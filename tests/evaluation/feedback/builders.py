"""Campaigns the feedback tests build: items whose responses come from real model versions of
the project (named, so blind-mode tests have something to hide), raters who are members of the
team, made through the services as a manager would. Others may add builders at the end."""

from __future__ import annotations

import itertools

from evaluation.feedback.models import Campaign, FeedbackTask
from evaluation.feedback.services.campaigns import (
    campaign_create,
    campaign_launch,
    items_create,
)
from projects.models import Role
from tests.factories import MembershipFactory, UserFactory
from training.models import ModelVersion, RegisteredModel

_numbers = itertools.count(1)
MODEL_NAMES = ("falcon-support", "heron-support", "ibis-support", "jay-support")


def model_versions(project, n: int = 2) -> list[ModelVersion]:
    """``n`` registered versions of distinct, recognisable models (no files: they are not run)."""
    versions = []
    for name in MODEL_NAMES[:n]:
        registered, _ = RegisteredModel.objects.get_or_create(project=project, name=name)
        versions.append(
            ModelVersion.objects.create(
                registered_model=registered,
                number=next(_numbers),
                task_kind="sft_causal",
                files_prefix=f"models/fake-{name}",
            )
        )
    return versions


def extra_raters(world, n: int, *, prefix: str = "rater") -> list:
    """The world's rater and ``n - 1`` more users with the rater role in the team."""
    users = [world.users[Role.RATER]]
    while len(users) < n:
        user = UserFactory(username=f"{prefix}{len(users) + 1}-{next(_numbers)}")
        MembershipFactory(team=world.team, user=user, role=Role.RATER)
        users.append(user)
    return users


def n_responses(task: str) -> int:
    return {FeedbackTask.PAIRWISE: 2, FeedbackTask.RANKING: 3}.get(task, 1)


def campaign_with_items(
    world,
    *,
    task: str = "pairwise",
    n_items: int = 10,
    overlap: int = 2,
    raters=None,
    blind: bool = True,
    launch: bool = True,
    name: str | None = None,
    criteria=None,
    assignment_timeout_seconds: int = 1800,
    responses: int | None = None,
) -> Campaign:
    """A campaign of ``world.project`` with ``n_items`` items of the task's number of responses
    (each by a different model version), ``raters`` (default: ``overlap`` raters, at least 2,
    the world's rater first), launched unless ``launch=False``."""
    project = world.project
    versions = model_versions(project, responses or n_responses(task))
    if raters is None:
        raters = extra_raters(world, max(overlap, 2))
    campaign = campaign_create(
        actor=world.users[Role.MANAGER],
        project=project,
        name=name or f"campaign {next(_numbers)}",
        task=task,
        source="versions",
        source_params={"versions": [v.pk for v in versions]},
        instructions="Prefer the answer that solves the user's problem.",
        criteria=criteria,
        overlap=overlap,
        blind=blind,
        assignment_timeout_seconds=assignment_timeout_seconds,
        raters=raters,
    )
    items_create(
        campaign=campaign,
        items=[
            {
                "prompt": f"Question {i}: how do I reset my password?",
                "responses": [
                    {
                        "text": f"Answer {i} by {v.registered_model.name}.",
                        "model_version_id": v.pk,
                        "label": str(v),
                    }
                    for v in versions
                ],
                "origin": {"prompt_index": i},
            }
            for i in range(n_items)
        ],
    )
    if launch:
        campaign = campaign_launch(actor=world.users[Role.MANAGER], campaign=campaign)
    return campaign
