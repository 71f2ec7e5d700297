"""The architecture's own settings (dropouts, tied embeddings, activation, biases, rotary base)
and the optimizer's (AdamW betas and epsilon, clipping, the floor of the cosine decay): each
reaches the built model, the optimizer or the schedule, is refused where it does not fit, and
the parameter estimate follows the settings and the chosen tokenizer."""

from __future__ import annotations

import html
import math
import re
from pathlib import Path

import pytest

from llmhub.reporting import JobInputError
from tests.frontend.test_forms_follow_data import _launch_form, data, engineer  # noqa: F401
from tests.tiny_tokenizers import byte_level_tokenizer
from training.models import TrainingJob
from training.runtime.config import TrainingConfig, optimizer_args, validate_hyperparameters
from training.runtime.presets import ModelSpec, build_config, count_parameters

TEXTS = ["To be, or not to be, that is the question.", "Whether 'tis nobler in the mind."] * 4


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tok")
    byte_level_tokenizer(TEXTS, vocab_size=300).save_pretrained(str(path))
    return path


def built(tokenizer_dir: Path, tmp_path: Path, family: str, kind: str, **hyperparameters):
    """The model the runtime builds for a job of ``kind`` on ``family`` (tiny)."""
    from training.runtime.run import _build_model, _load_tokenizer

    train = tmp_path / "train.parquet"
    train.write_bytes(b"")  # the builder never reads it; the config checks it exists
    config = TrainingConfig(
        kind=kind,
        train_path=train,
        output_dir=tmp_path / "out",
        model_spec=ModelSpec(family=family),
        tokenizer_dir=tokenizer_dir,
        **hyperparameters,
    )
    tokenizer = _load_tokenizer(config)
    return _build_model(config, tokenizer, None), tokenizer


def real_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_dropout_zero_reaches_every_gpt2_dropout(tokenizer_dir, tmp_path) -> None:
    model, _ = built(tokenizer_dir, tmp_path, "gpt2", "pretrain_clm", dropout=0.0)
    config = model.config
    assert (config.resid_pdrop, config.embd_pdrop, config.attn_pdrop) == (0.0, 0.0, 0.0)
    default, _ = built(tokenizer_dir, tmp_path, "gpt2", "pretrain_clm")
    assert default.config.resid_pdrop == 0.1  # the family's own, untouched


def test_the_familys_own_names_win_over_dropout(tokenizer_dir, tmp_path) -> None:
    model, _ = built(
        tokenizer_dir,
        tmp_path,
        "gpt2",
        "pretrain_clm",
        dropout=0.2,
        attn_pdrop=0.05,
        activation="relu",
        tie_word_embeddings=False,
    )
    config = model.config
    assert (config.resid_pdrop, config.embd_pdrop, config.attn_pdrop) == (0.2, 0.2, 0.05)
    assert config.activation_function == "relu" and config.tie_word_embeddings is False
    assert model.lm_head.weight.data_ptr() != model.transformer.wte.weight.data_ptr()


def test_llama_settings_reach_the_model(tokenizer_dir, tmp_path) -> None:
    model, tokenizer = built(
        tokenizer_dir,
        tmp_path,
        "llama",
        "pretrain_clm",
        dropout=0.1,
        activation="gelu",
        attention_bias=True,
        mlp_bias=True,
        rope_theta=500_000.0,
        tie_word_embeddings=True,
    )
    config = model.config
    assert config.attention_dropout == 0.1 and config.hidden_act == "gelu"
    assert config.attention_bias and config.mlp_bias
    assert config.rope_parameters["rope_theta"] == 500_000.0
    assert model.model.layers[0].self_attn.q_proj.bias is not None
    settings = {"tie_word_embeddings": True, "attention_bias": True, "mlp_bias": True}
    assert real_count(model) == count_parameters(
        ModelSpec("llama"), vocab_size=len(tokenizer), kind="pretrain_clm", settings=settings
    )


def test_bert_dropouts_reach_the_model(tokenizer_dir, tmp_path) -> None:
    model, _ = built(
        tokenizer_dir,
        tmp_path,
        "bert",
        "pretrain_mlm",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.3,
    )
    assert model.config.hidden_dropout_prob == 0.0
    assert model.config.attention_probs_dropout_prob == 0.3


@pytest.mark.parametrize(
    ("family", "kind", "settings"),
    [
        ("gpt2", "pretrain_clm", {}),
        ("gpt2", "pretrain_clm", {"tie_word_embeddings": False}),
        ("gpt2", "classification", {"tie_word_embeddings": False}),
        ("llama", "pretrain_clm", {}),
        ("llama", "pretrain_clm", {"tie_word_embeddings": True, "mlp_bias": True}),
        ("bert", "pretrain_mlm", {"tie_word_embeddings": False}),
        ("roberta", "pretrain_mlm", {}),
    ],
)
def test_the_estimate_is_the_real_count_under_the_settings(family, kind, settings) -> None:
    import transformers

    auto = {
        "pretrain_clm": transformers.AutoModelForCausalLM,
        "pretrain_mlm": transformers.AutoModelForMaskedLM,
        "classification": transformers.AutoModelForSequenceClassification,
    }[kind]
    spec = ModelSpec(family)
    config = build_config(
        spec, vocab_size=300, pad_token_id=0, bos_token_id=1, eos_token_id=2, settings=settings
    )
    model = auto.from_config(config)
    assert real_count(model) == count_parameters(spec, vocab_size=300, kind=kind, settings=settings)


def test_untied_embeddings_change_the_estimate() -> None:
    spec = ModelSpec("gpt2")
    tied = count_parameters(spec, vocab_size=300, kind="pretrain_clm")
    untied = count_parameters(
        spec, vocab_size=300, kind="pretrain_clm", settings={"tie_word_embeddings": False}
    )
    assert untied - tied == 300 * 64  # a second vocabulary x width matrix


def test_the_baby_gpt_estimate_with_a_65_character_vocabulary() -> None:
    """The issue's baby GPT (4 layers, 4 heads, 128 dimensions, context 64) on 65 characters:
    809,856 parameters, the real model's count (not 1,825,536 from an assumed 8,000)."""
    import transformers

    spec = ModelSpec(
        "gpt2", overrides={"n_layer": 4, "n_head": 4, "n_embd": 128, "n_positions": 64}
    )
    model = transformers.GPT2LMHeadModel(build_config(spec, vocab_size=65))
    assert count_parameters(spec, vocab_size=65, kind="pretrain_clm") == real_count(model)
    assert real_count(model) == 809_856


def test_optimizer_settings_reach_the_optimizer_and_the_schedule(tmp_path) -> None:
    """Betas, epsilon, weight decay and clipping reach the Trainer's AdamW; the cosine decay
    ends at min_lr at the last step."""
    import torch
    import transformers

    train = tmp_path / "train.parquet"
    train.write_bytes(b"")
    tok = tmp_path / "tok"
    tok.mkdir()
    config = TrainingConfig(
        kind="pretrain_clm",
        train_path=train,
        output_dir=tmp_path / "out",
        model_spec=ModelSpec("gpt2"),
        tokenizer_dir=tok,
        learning_rate=1e-3,
        lr_scheduler="cosine",
        min_lr=1e-4,
        warmup_steps=10,
        max_steps=100,
        adam_beta1=0.8,
        adam_beta2=0.99,
        adam_epsilon=1e-6,
        weight_decay=0.1,
        max_grad_norm=0.5,
    )
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "ckpt"),
        learning_rate=config.learning_rate,
        max_steps=config.max_steps,
        report_to="none",
        **optimizer_args(config),
    )
    assert args.max_grad_norm == 0.5
    model = torch.nn.Linear(4, 4)
    trainer = transformers.Trainer(model=model, args=args)
    trainer.create_optimizer_and_scheduler(num_training_steps=config.max_steps)
    group = trainer.optimizer.param_groups[0]
    assert group["betas"] == (0.8, 0.99) and group["eps"] == 1e-6
    assert {g["weight_decay"] for g in trainer.optimizer.param_groups} == {0.1, 0.0}
    rates = []
    for _ in range(config.max_steps):
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
        rates.append(trainer.lr_scheduler.get_last_lr()[0])
    assert max(rates) == pytest.approx(1e-3)
    assert rates[-1] == pytest.approx(1e-4)  # the floor, as nanoGPT's 1e-3 -> 1e-4


@pytest.mark.parametrize(
    ("values", "family", "message"),
    [
        ({"dropout": 1.5}, "gpt2", "dropout must be at most 0.95"),
        ({"dropout": -0.1}, "gpt2", "dropout must be at least 0"),
        ({"resid_pdrop": 0.0}, "llama", "A llama model has no setting resid_pdrop"),
        ({"rope_theta": 1e4}, "gpt2", "A gpt2 model has no setting rope_theta"),
        ({"attention_bias": True}, "bert", "A bert model has no setting attention_bias"),
        ({"tie_word_embeddings": True}, "t5", "A t5 model has no setting tie_word_embeddings"),
        ({"tie_word_embeddings": "yes"}, "gpt2", "tie_word_embeddings must be true or false"),
        ({"activation": "tanh"}, "gpt2", "activation must be one of"),
        ({"dropout": 0.0}, "", "a pretrained model keeps its own"),
        ({"min_lr": 1e-5}, "gpt2", "min_lr is the floor of the cosine decay"),
        (
            {"min_lr": 1e-2, "lr_scheduler": "cosine", "learning_rate": 1e-3},
            "gpt2",
            "must be at most the learning_rate",
        ),
        ({"adam_beta2": 1.0}, "gpt2", "adam_beta2 must be at most"),
        ({"max_grad_norm": -1}, "gpt2", "max_grad_norm must be at least 0"),
    ],
)
def test_invalid_settings_are_refused(values, family, message) -> None:
    with pytest.raises(JobInputError, match=message):
        validate_hyperparameters(values, family=family)


def test_a_model_spec_override_of_a_setting_points_to_the_hyperparameters() -> None:
    with pytest.raises(JobInputError, match="set with the job's hyperparameters"):
        ModelSpec.from_dict({"family": "gpt2", "resid_pdrop": 0.0})


# --- through the API ---------------------------------------------------------------------------


def test_a_launched_job_takes_the_settings_and_the_estimate_is_its_real_count(
    world, api, prepared
) -> None:
    """Dropout 0, an untied head and a cosine decay to a floor, launched through the API: the
    registered model has them, its parameter count is the estimate endpoint's (with the
    tokenizer, or with only the dataset version), and the learning rate ends at min_lr."""
    from tests.training.conftest import TINY
    from tests.training.test_training_api import pretrain, run_training
    from training.models import ModelVersion

    client = api(world.users["engineer"])
    settings = {"dropout": 0, "tie_word_embeddings": False}
    schedule = {"lr_scheduler": "cosine", "learning_rate": 3e-3, "min_lr": 3e-4}
    response = pretrain(client, world, prepared, hyperparameters={**TINY, **settings, **schedule})
    assert response.status_code == 201, response.content
    [job] = run_training()
    assert job.status == "succeeded", job.error
    version = ModelVersion.objects.get()
    assert version.config["resid_pdrop"] == 0 and version.config["attn_pdrop"] == 0
    assert version.config["tie_word_embeddings"] is False
    curve = client.get(f"/api/v1/training-jobs/{job.pk}/curves/?names=learning_rate").json()
    # The rate the last (30th) step used: the cosine at 29/30 of the way down to the floor,
    # which the schedule reaches after that step (test above).
    last = 3e-4 + (3e-3 - 3e-4) * 0.5 * (1 + math.cos(math.pi * 29 / 30))
    assert curve["curves"]["learning_rate"]["values"][-1] == pytest.approx(last)

    body = {
        "model_spec": {"family": "gpt2", "size": "tiny"},
        "kind": "pretrain_clm",
        "hyperparameters": settings,
        "max_seq_length": TINY["max_seq_length"],
    }
    url = "/api/v1/training-jobs/estimate/"
    with_tokenizer = client.post(
        url, {**body, "tokenizer": prepared.tokenizer.pk}, format="json"
    ).json()
    with_version = client.post(url, {**body, "train_version": prepared.corpus.pk}, format="json")
    tied = client.post(
        url,
        {**body, "tokenizer": prepared.tokenizer.pk, "hyperparameters": {}},
        format="json",
    ).json()
    assumed = client.post(url, body, format="json").json()
    assert with_tokenizer["parameters"] == version.parameters == job.estimate["parameters"]
    assert with_tokenizer["vocab_source"] == "tokenizer"
    assert with_version.json()["parameters"] == version.parameters
    assert with_version.json()["vocab_source"] == "dataset"
    assert tied["parameters"] == version.parameters - prepared.tokenizer.vocab_size * 64
    assert assumed["vocab_source"] == "assumed" and assumed["vocab_size"] == 8000


@pytest.mark.parametrize(
    ("hyperparameters", "model_spec", "message"),
    [
        ({"resid_pdrop": 0}, {"family": "llama", "size": "tiny"}, "no setting resid_pdrop"),
        ({"dropout": 2}, {"family": "gpt2", "size": "tiny"}, "dropout must be at most"),
        ({}, {"family": "gpt2", "size": "tiny", "resid_pdrop": 0}, "hyperparameters"),
    ],
)
def test_bad_settings_are_400_at_launch_and_estimate(
    world, api, prepared, hyperparameters, model_spec, message
) -> None:
    from tests.training.conftest import TINY
    from tests.training.test_training_api import pretrain
    from training.models import TrainingJob

    client = api(world.users["engineer"])
    response = pretrain(
        client,
        world,
        prepared,
        model_spec=model_spec,
        hyperparameters={**TINY, **hyperparameters},
    )
    assert response.status_code == 400, response.content
    assert message in response.json()["error"]["message"]
    assert not TrainingJob.objects.exists()
    estimate = client.post(
        "/api/v1/training-jobs/estimate/",
        {"model_spec": model_spec, "hyperparameters": hyperparameters},
        format="json",
    )
    assert estimate.status_code == 400, estimate.content
    assert message in estimate.json()["error"]["message"]


# --- the launch form ---------------------------------------------------------------------------


def test_the_launch_form_offers_each_setting_for_its_families_only(world, engineer, data) -> None:  # noqa: F811
    """The form builds the settings' fields from the table: each shown for random weights of
    the families that have it; a hidden one (another family's) is neither validated nor sent,
    a shown one reaches the job."""
    url = f"/projects/{world.project.pk}/train/new/"
    page = html.unescape(engineer.get(url).content.decode())
    dropout = re.search(r'<div class="field"[^>]*>\s*<label for="id_hp_dropout"', page).group(0)
    assert "base_source=random;family=gpt2,llama,bert,roberta,bart,t5" in dropout
    resid = re.search(r'<div class="field"[^>]*>\s*<label for="id_hp_resid_pdrop"', page)
    assert "family=gpt2" in resid.group(0)

    # A bert classifier: gpt2's resid_pdrop (out of range, too) is hidden, so ignored; the
    # shared dropout and bert's own tie_word_embeddings choice reach the job.
    response = engineer.post(
        url,
        _launch_form(data, hp_resid_pdrop="5", hp_dropout="0", hp_tie_word_embeddings="False"),
    )
    assert response.status_code == 302, response.context["form"].errors
    job = TrainingJob.objects.get()
    assert job.hyperparameters["dropout"] == 0.0
    assert job.hyperparameters["tie_word_embeddings"] is False
    assert job.hyperparameters["resid_pdrop"] is None  # the family's own
    # "Clone this run" selects the job's choice again.
    clone = html.unescape(engineer.get(f"{url}?clone={job.pk}").content.decode())
    select = re.search(r'<select name="hp_tie_word_embeddings".*?</select>', clone, re.S).group(0)
    assert re.search(r'<option value="False"\s+selected>', select), select
    # Out of range where it applies: refused next to its field.
    response = engineer.post(url, _launch_form(data, name="second", hp_dropout="2"))
    assert response.status_code == 200 and "hp_dropout" in response.context["form"].errors
