"""Hyperparameters of some job kinds only (``kinds`` in training/runtime/config.py): the launch
form shows them for those kinds (``data-show-when``), validates them only there, and otherwise
ignores what a hidden field holds, so the job keeps the runtime's default."""

from __future__ import annotations

import html
import re

import pytest

from tests.frontend.test_forms_follow_data import _launch_form, data, engineer  # noqa: F401
from training.models import TrainingJob
from training.runtime.config import HYPERPARAMETERS

pytestmark = pytest.mark.django_db


def _field_wrapper(page: str, name: str) -> str:
    """The ``<div class="field" ...>`` opening the field ``name``."""
    found = re.search(rf'<div class="field"[^>]*>\s*<label for="id_{name}"', page)
    assert found, name
    return found.group(0)


def test_beta_shows_only_for_dpo_and_kto(world, engineer, data) -> None:  # noqa: F811
    page = html.unescape(engineer.get(f"/projects/{world.project.pk}/train/new/").content.decode())
    assert 'data-show-when="kind=dpo,kto"' in _field_wrapper(page, "hp_beta")
    assert 'data-show-when="kind=pretrain_mlm"' in _field_wrapper(page, "hp_mlm_probability")
    # A hyperparameter of every kind has no condition.
    assert "data-show-when" not in _field_wrapper(page, "hp_learning_rate")
    # The kinds come from the config, the one place they are named.
    kinds = {h.name: h.kinds for h in HYPERPARAMETERS if h.kinds}
    assert kinds == {
        "beta": ("dpo", "kto"),
        "mlm_probability": ("pretrain_mlm",),
        "document_separator": ("pretrain_clm", "pretrain_mlm"),
        # The Trainer's kinds: DPO and KTO train through trl, which is not given it.
        "torch_compile": (
            "pretrain_clm",
            "pretrain_mlm",
            "sft_causal",
            "seq2seq",
            "classification",
            "qa",
        ),
    }
    assert 'data-show-when="kind=pretrain_clm,pretrain_mlm"' in _field_wrapper(
        page, "hp_document_separator"
    )


def test_a_hidden_beta_is_neither_validated_nor_used(world, engineer, data) -> None:  # noqa: F811
    # Out of range (beta >= 0.001), but a classification job has no beta: ignored.
    response = engineer.post(
        f"/projects/{world.project.pk}/train/new/", _launch_form(data, hp_beta="0")
    )
    assert response.status_code == 302, response.context["form"].errors
    assert TrainingJob.objects.get().hyperparameters["beta"] == 0.1  # the runtime's default
    # For DPO it applies: the same value is refused next to its field (with the other errors).
    response = engineer.post(
        f"/projects/{world.project.pk}/train/new/",
        _launch_form(data, kind="dpo", hp_beta="0", name="dpo run"),
    )
    assert response.status_code == 200
    assert "hp_beta" in response.context["form"].errors
    assert TrainingJob.objects.count() == 1
