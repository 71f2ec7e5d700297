"""Registered base models: reads (selectors) and writes (services) of ``BaseModel`` rows.

A base model is a pretrained starting point registered with a team: either an installed offline
package (a fixed catalog, resolved to its directory on the worker) or an uploaded archive of a
model directory (config.json, safetensors weights, tokenizer files; nothing pickled).
"""

from __future__ import annotations

from django.db.models import QuerySet

from projects.selectors import User, get_visible, visible_to
from training.models import BaseModel


def base_models_for_user(user: User) -> QuerySet[BaseModel]:
    """The base models of the teams where ``user`` may see work."""
    return visible_to(
        BaseModel.objects.select_related("team", "created_by").order_by("name", "id"),
        user,
        team_path="team",
    )


def get_base_model_for_user(user: User, pk) -> BaseModel:
    """One base model among those ``user`` may see, else Http404."""
    return get_visible(base_models_for_user(user), user, pk, team_path="team")
