"""Reads of the data stage, scoped to the user's teams."""

from __future__ import annotations

import functools
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import Count, Prefetch, QuerySet

from datasets_app.models import (
    CleaningRecipe,
    DataJob,
    Dataset,
    DatasetSplit,
    DatasetVersion,
    Tokenizer,
)
from llmhub import storage
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


@functools.lru_cache(maxsize=16)
def _diff(old_file: str, new_file: str, key: str | None, limit: int) -> dict[str, Any]:
    # Tables are stored under their content hash and never change: a diff of two files is
    # the same forever, so a page reload or the API after the page costs nothing.
    from datasets_app.cleaning.diff import diff_tables

    return diff_tables(
        storage.local_copy(old_file),
        storage.local_copy(new_file),
        key=key,
        limit=limit,
        names=("the first version", "the second version"),
    )


def version_diff(
    old: DatasetVersion, new: DatasetVersion, *, key: str | None = None, limit: int = 20
) -> dict[str, Any]:
    """What changed from ``old`` to ``new`` (two versions of one dataset, both already read
    through the user's scope): schema changes, rows added, removed and changed (by ``key``
    when given, else by row content), with up to ``limit`` examples of each. A
    ValidationError names the parameter at fault (``other``, ``key``, ``limit``)."""
    from datasets_app.cleaning.options import OptionError

    if old.dataset_id != new.dataset_id:
        raise ValidationError(
            {"other": f"{new} belongs to another dataset: compare two versions of {old.dataset}."}
        )
    try:
        result = _diff(old.file, new.file, key or None, limit)
    except OptionError as exc:
        raise ValidationError({exc.field: str(exc)}) from None
    return {
        "old": {"id": old.pk, "number": old.number, "label": str(old), "rows": old.row_count},
        "new": {"id": new.pk, "number": new.number, "label": str(new), "rows": new.row_count},
        **result,
    }
