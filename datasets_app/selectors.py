"""Reads of the data stage, scoped to the user's teams."""

from __future__ import annotations

from django.db.models import Count, Prefetch, QuerySet

from datasets_app.models import (
    CleaningRecipe,
    DataJob,
    Dataset,
    DatasetSplit,
    DatasetVersion,
    Tokenizer,
)
from projects.selectors import User, get_visible, visible_to


def datasets_for_user(user: User) -> QuerySet[Dataset]:
    return visible_to(
        Dataset.objects.select_related("project__team", "card__updated_by", "created_by")
        .annotate(version_count=Count("versions", distinct=True))
        .order_by("-created_at", "-id"),
        user,
    )


def get_dataset_for_user(user: User, pk) -> Dataset:
    return get_visible(datasets_for_user(user), user, pk)


def versions_for_user(user: User) -> QuerySet[DatasetVersion]:
    return visible_to(
        DatasetVersion.objects.select_related(
            "dataset__project__team", "parent", "created_by"
        ).prefetch_related(Prefetch("splits", queryset=DatasetSplit.objects.order_by("id"))),
        user,
        team_path="dataset__project__team",
    )


def get_version_for_user(user: User, pk) -> DatasetVersion:
    return get_visible(versions_for_user(user), user, pk, team_path="dataset__project__team")


def recipes_for_user(user: User) -> QuerySet[CleaningRecipe]:
    return visible_to(CleaningRecipe.objects.select_related("project__team", "created_by"), user)


def tokenizers_for_user(user: User) -> QuerySet[Tokenizer]:
    return visible_to(
        Tokenizer.objects.select_related("project__team", "source_version__dataset", "created_by"),
        user,
    )


def data_jobs_for_user(user: User) -> QuerySet[DataJob]:
    return visible_to(
        DataJob.objects.select_related(
            "project__team",
            "dataset",
            "source_version",
            "result_version",
            "recipe",
            "result_tokenizer",
            "created_by",
        ),
        user,
    )


def latest_profile(version: DatasetVersion) -> DataJob | None:
    return (
        DataJob.objects.filter(source_version=version, kind="profile", status="succeeded")
        .order_by("-finished_at", "-id")
        .first()
    )


def lineage(version: DatasetVersion) -> list[DatasetVersion]:
    """The version and its ancestors, oldest first (one query per ancestor; chains are short)."""
    chain = [version]
    while chain[-1].parent_id is not None:
        chain.append(DatasetVersion.objects.select_related("dataset").get(pk=chain[-1].parent_id))
    return list(reversed(chain))
