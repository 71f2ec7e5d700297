"""Objects for generic route tests, built from the models themselves: any model gets a row in
the ``world`` team with no factory written for it.

:func:`build` fills every required field from its type (foreign keys to the team, the project
and users point at the world's; other foreign keys build their target), creates the reverse
one-to-one rows serializers read (a dataset's card), and gives every ``file`` a small real
Parquet table, so the routes that read one work on what is built.
"""

from __future__ import annotations

import io
import itertools
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import models
from django.utils import timezone

from projects.models import Membership, Project, Team

_counter = itertools.count(1)
# Optional links filled all the same, so a list's query count covers the rows serializers read
# through them (an endpoint's versions, a log row's version and key).
OPTIONAL_LINKS = {
    "serving.Endpoint": ("version", "canary_version"),
    "serving.Deployment": ("version",),
    "serving.RequestLog": ("version", "key"),
    "serving.ResponseFeedback": ("key",),
}


def _parquet_file() -> str:
    table = pa.table({"text": ["good service", "slow reply", "thanks"], "label": [1, 0, 1]})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return default_storage.save(f"tests/{uuid.uuid4().hex}.parquet", ContentFile(buffer.getvalue()))


def _unique_together(model: type[models.Model]) -> set[str]:
    names: set[str] = set()
    for constraint in model._meta.constraints:
        names.update(getattr(constraint, "fields", ()) or ())
    for group in model._meta.unique_together:
        names.update(group)
    return names


def _value(field: models.Field, n: int) -> Any:
    if field.choices:
        return field.choices[0][0]
    if isinstance(field, models.JSONField):
        return {}
    if isinstance(field, models.BooleanField):
        return False
    if isinstance(field, models.DateTimeField):
        return timezone.now()
    if isinstance(field, models.DateField):
        return timezone.now().date()
    if isinstance(field, models.FloatField | models.DecimalField):
        return 0.5
    if isinstance(field, models.IntegerField):
        return n
    if isinstance(field, models.UUIDField):
        return uuid.uuid4()
    if isinstance(field, models.EmailField):
        return f"user{n}@example.com"
    if isinstance(field, models.CharField | models.TextField):
        if field.name == "file":
            return _parquet_file()
        text = f"{field.name}-{n}"
        return text[-field.max_length :] if field.max_length else text
    raise NotImplementedError(f"tests/api/objects.py cannot fill {field!r}")


def build(model: type[models.Model], world, *, reverse: bool = True, **given: Any) -> Any:
    """A saved ``model`` row in ``world.team`` (``given`` fields as passed)."""
    n = next(_counter)
    owner = world.users["admin"]
    unique = _unique_together(model)
    values: dict[str, Any] = {}
    for field in model._meta.concrete_fields:
        if field.primary_key or field.name in given or field.attname in given:
            continue
        if field.is_relation:
            target = field.related_model
            if target is Team:
                values[field.name] = world.team
            elif target is Project:
                values[field.name] = world.project
            elif target is get_user_model():
                in_key = field.name in unique or field.unique
                values[field.name] = _user(n) if in_key else owner
            elif field.null and field.name not in OPTIONAL_LINKS.get(model._meta.label, ()):
                continue
            else:
                values[field.name] = build(target, world, reverse=False)
            continue
        if field.has_default() or field.null:
            continue
        if field.blank and isinstance(field, models.CharField | models.TextField):
            continue
        values[field.name] = _value(field, n)
    obj = model.objects.create(**values, **given)
    if model is Team:
        # A team of the world's people, each in the role they have in the world's team.
        for role, user in world.users.items():
            Membership.objects.create(team=obj, user=user, role=role)
    if model._meta.label == "evaluation.Campaign":
        # Raters see (and label in) only the campaigns they rate: the world's people whose role
        # allows labeling rate every campaign built here, so each role meets its own answer.
        from projects.permissions import Action, role_allows

        for role, user in world.users.items():
            if role_allows(role, Action.LABEL):
                obj.rater_rows.get_or_create(user=user)
    if reverse:
        _build_reverse_one_to_one(obj, world)
    return obj


def _user(n: int):
    return get_user_model().objects.create_user(username=f"member{n}", email=f"m{n}@example.com")


def _build_reverse_one_to_one(obj: models.Model, world) -> None:
    # Only required links (a dataset's card); optional ones (a job's model version) stay empty.
    for relation in obj._meta.related_objects:
        if relation.one_to_one and not relation.field.null:
            build(relation.related_model, world, reverse=False, **{relation.field.name: obj})
