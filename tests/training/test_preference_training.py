"""Training from feedback (trl): a reward model, DPO and KTO job on a real worker change the
model they start from (DPO moves the chosen/rejected log-ratio margin the right way), and
launch refuses what they cannot train on (wrong columns, no base, a base of the wrong kind)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile

from datasets_app import services as data_services
from datasets_app.models import DatasetVersion
from llmhub import storage
from llmhub.jobs import wait_until
from tests.datasets_app.test_data_api import run_queued
from tests.serving.conftest import register_version
from tests.serving.engine.models import tiny_causal_lm_dir
from training import services
from training.models import TrainingJob

# A few steps at a high rate: enough for a 2-layer, 32-dim GPT-2 to move, a few seconds each.
FAST = {
    "max_steps": 12,
    "batch_size": 4,
    "learning_rate": 0.002,
    "max_seq_length": 64,
    "logging_steps": 2,
}
# The same two answers to every prompt: one preferred, one not.
GOOD, BAD = "Yes, the sky is blue today.", "Cheese moon green never."
PAIRS = [
    {"prompt": f"Question {i}: what colour is the sky?", "chosen": GOOD, "rejected": BAD}
    for i in range(24)
]
THUMBS = [
    {
        "prompt": f"Question {i}: what colour is the sky?",
        "completion": GOOD if i % 2 else BAD,
        "label": bool(i % 2),
    }
    for i in range(24)
]


def _jsonl(rows: list[dict]) -> bytes:
    return "\n".join(json.dumps(row) for row in rows).encode()


def upload_version(world, name: str, rows: list[dict]) -> DatasetVersion:
    """A dataset version of ``rows`` made by the data stage's own upload job."""
    engineer = world.users["engineer"]
    dataset = data_services.dataset_create(actor=engineer, project=world.project, name=name)
    data_services.upload_start(
        actor=engineer,
        dataset=dataset,
        uploaded_file=SimpleUploadedFile(f"{name}.jsonl", _jsonl(rows)),
    )
    run_queued()
    return DatasetVersion.objects.get(dataset=dataset, number=1)


def _weights(directory: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(directory / "model.safetensors"))


def _version_dir(version) -> Path:
    return storage.local_directory(version.files_prefix, version.files)


def _response_logp(model, tokenizer, prompt: str, response: str) -> float:
    """log p(response | prompt) under a causal LM, the prompt joined as the job joins it."""
    import torch

    prompt_ids = tokenizer(prompt + "\n")["input_ids"]
    ids = tokenizer(prompt + "\n" + response + tokenizer.eos_token)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, :-1]
    logps = torch.log_softmax(logits.float(), dim=-1)
    targets = torch.tensor(ids[1:])
    per_token = logps.gather(1, targets[:, None])[:, 0]
    return float(per_token[len(prompt_ids) - 1 :].sum())


def mean_margin(model_dir: Path, pairs: list[dict]) -> float:
    """Mean log p(chosen) - log p(rejected) over ``pairs``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    margins = [
        _response_logp(model, tokenizer, p["prompt"], p["chosen"])
        - _response_logp(model, tokenizer, p["prompt"], p["rejected"])
        for p in pairs
    ]
    return sum(margins) / len(margins)


def _launch(world, *, kind: str, version: DatasetVersion, base, **extra) -> TrainingJob:
    return services.training_job_launch(
        actor=world.users["engineer"],
        project=world.project,
        name=f"{kind} from feedback",
        kind=kind,
        train_version=version,
        base_source="model_version",
        base_model_version=base,
        hyperparameters=FAST,
        **extra,
    )


@pytest.fixture
def base_lm(world, tmp_path):
    """A tiny causal LM registered as a version of the project, and its directory."""
    directory = tiny_causal_lm_dir(tmp_path)
    version = register_version(
        world.project, directory, actor=world.users["engineer"], name="policy", kind="sft_causal"
    )
    return version, directory


# --- on a real worker ---------------------------------------------------------------------------


@pytest.mark.worker
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_reward_dpo_and_kto_jobs_on_the_worker_change_the_model(
    world, base_lm, celery_worker
) -> None:
    base, base_dir = base_lm
    pairs = upload_version(world, "preferences", PAIRS)
    thumbs = upload_version(world, "thumbs", THUMBS)
    jobs = {
        "reward_model": _launch(world, kind="reward_model", version=pairs, base=base),
        "dpo": _launch(world, kind="dpo", version=pairs, base=base),
        "kto": _launch(world, kind="kto", version=thumbs, base=base),
    }

    def ended() -> bool:
        statuses = TrainingJob.objects.filter(pk__in=[j.pk for j in jobs.values()]).values_list(
            "status", flat=True
        )
        return all(s in ("succeeded", "failed", "cancelled") for s in statuses)

    assert wait_until(ended, timeout=240), celery_worker.log()[-5000:]
    done = {kind: TrainingJob.objects.get(pk=job.pk) for kind, job in jobs.items()}
    for kind, job in done.items():
        assert job.status == "succeeded", (kind, job.error, celery_worker.log()[-3000:])
        assert job.global_step == FAST["max_steps"]
        assert job.model_version is not None and job.model_version.task_kind == kind
        assert job.model_version.parent_id == base.pk  # lineage: fine-tuned from the base
        assert job.model_version.dataset_version_id == job.train_version_id
        assert job.metric_points.filter(name="loss").count() >= 3

    start = _weights(base_dir)
    # The reward model: the base's backbone with a one-output head, trained; its accuracy on
    # held-out pairs (a tenth of them, held out automatically) is on the version.
    reward = done["reward_model"].model_version
    reward_weights = _weights(_version_dir(reward))
    assert len(reward.config["id2label"]) == 1  # one output: the score
    assert "score.weight" in reward_weights
    name = "transformer.h.0.attn.c_attn.weight"
    assert not reward_weights[name].equal(start[name])
    assert reward.metrics["eval_accuracy"] == 1.0  # the pairs are easy: every one right
    assert reward.metrics["eval_pairs"] >= 2
    assert reward.metrics["eval_reward_margin"] > 0
    assert done["reward_model"].metric_points.filter(name="eval_accuracy").exists()

    # DPO: weights moved, and the chosen answer gained on the rejected one.
    dpo_dir = _version_dir(done["dpo"].model_version)
    assert not _weights(dpo_dir)[name].equal(start[name])
    before, after = mean_margin(base_dir, PAIRS[:6]), mean_margin(dpo_dir, PAIRS[:6])
    assert after > before + 1.0, (before, after)
    assert done["dpo"].metric_points.filter(name="rewards/margins").exists()

    # KTO: weights moved, and the desirable completion gained on the undesirable one.
    kto_dir = _version_dir(done["kto"].model_version)
    assert not _weights(kto_dir)[name].equal(start[name])
    assert mean_margin(kto_dir, PAIRS[:6]) > before, "KTO moved the wrong way"


# --- launch validation ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_launch_refuses_data_without_the_fields_the_kind_reads(world, base_lm) -> None:
    base, _ = base_lm
    thumbs = upload_version(world, "thumbs", THUMBS)
    pairs = upload_version(world, "preferences", PAIRS)
    with pytest.raises(ValidationError) as refused:
        _launch(world, kind="dpo", version=thumbs, base=base)
    message = refused.value.message_dict["train_version"][0]
    assert "'chosen'" in message and "'rejected'" in message and "completion" in message
    with pytest.raises(ValidationError) as refused:
        _launch(world, kind="reward_model", version=thumbs, base=base)
    assert "'chosen'" in refused.value.message_dict["train_version"][0]
    with pytest.raises(ValidationError) as refused:
        _launch(world, kind="kto", version=pairs, base=base)
    message = refused.value.message_dict["train_version"][0]
    assert "'completion'" in message and "'label'" in message
    # Nothing half-written (the one job is the base's own, which registered it).
    assert not TrainingJob.objects.filter(kind__in=("dpo", "kto", "reward_model")).exists()


@pytest.mark.django_db
def test_launch_refuses_a_missing_or_unfit_base(world, base_lm, tmp_path) -> None:
    base, base_dir = base_lm
    pairs = upload_version(world, "preferences", PAIRS)
    thumbs = upload_version(world, "thumbs", THUMBS)
    engineer = world.users["engineer"]
    for kind, version in (("dpo", pairs), ("kto", thumbs), ("reward_model", pairs)):
        with pytest.raises(ValidationError) as refused:
            services.training_job_launch(
                actor=engineer,
                project=world.project,
                name="no base",
                kind=kind,
                train_version=version,
                hyperparameters=FAST,
            )  # random weights: the default base source
        assert "from random weights" in refused.value.message_dict["base_source"][0]
        with pytest.raises(ValidationError) as refused:
            _launch(world, kind=kind, version=version, base=None)
        assert "Choose the model version" in refused.value.message_dict["base_model_version"][0]
    # DPO tunes a causal LM: a classifier version is refused, naming its kind.
    classifier = register_version(
        world.project, base_dir, actor=engineer, name="clf", kind="classification"
    )
    with pytest.raises(ValidationError) as refused:
        _launch(world, kind="dpo", version=pairs, base=classifier)
    assert "Fine-tune: classification" in refused.value.message_dict["base_model_version"][0]
    # KTO compares completions within a batch: a batch of one is refused before launch.
    with pytest.raises(ValidationError) as refused:
        services.training_job_launch(
            actor=engineer,
            project=world.project,
            name="kto",
            kind="kto",
            train_version=thumbs,
            base_source="model_version",
            base_model_version=base,
            hyperparameters={**FAST, "batch_size": 1},
        )
    assert "batch_size of at least 2" in refused.value.message_dict["hyperparameters"][0]
    assert not TrainingJob.objects.filter(kind__in=("dpo", "kto", "reward_model")).exists()


@pytest.mark.django_db
def test_launch_accepts_preference_data_and_a_causal_base(world, base_lm) -> None:
    base, _ = base_lm
    pairs = upload_version(world, "preferences", PAIRS)
    job = _launch(world, kind="dpo", version=pairs, base=base)
    assert job.status == "queued" and job.kind == "dpo"
    assert job.hyperparameters["beta"] == 0.1  # trl's default, stored with the job
    assert job.estimate["parameters"] > 0


# --- the runtime, without Django ----------------------------------------------------------------


def _parquet(path: Path, rows: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_kto_labels_must_say_yes_or_no(tmp_path) -> None:
    from llmhub.reporting import JobInputError
    from training.runtime.preference import read_examples

    rows = [dict(THUMBS[0], label="yes"), dict(THUMBS[1], label=0), dict(THUMBS[2], label="maybe")]
    path = _parquet(tmp_path / "thumbs.parquet", [{**r, "label": str(r["label"])} for r in rows])
    with pytest.raises(JobInputError, match="Row 3: the label 'maybe'"):
        read_examples(path, "kto", {})
    ok = _parquet(tmp_path / "ok.parquet", [{**r, "label": str(r["label"])} for r in rows[:2]])
    assert [e["label"] for e in read_examples(ok, "kto", {})] == [True, False]


def test_dpo_with_lora_moves_the_merged_model(tmp_path) -> None:
    from llmhub.reporting import RecordingReporter
    from training.runtime.config import TrainingConfig
    from training.runtime.run import train

    base_dir = tiny_causal_lm_dir(tmp_path)
    config = TrainingConfig(
        kind="dpo",
        method="lora",
        train_path=_parquet(tmp_path / "pairs.parquet", PAIRS),
        output_dir=tmp_path / "out",
        base_model_dir=base_dir,
        **{**FAST, "learning_rate": 0.01},
    )
    reporter = RecordingReporter()
    result = train(config, reporter=reporter)
    assert result.trainable_parameters < result.parameters  # only the adapters trained
    assert (tmp_path / "out" / "adapter").is_dir()  # kept apart, and merged into the model
    assert mean_margin(result.model_dir, PAIRS[:4]) > mean_margin(base_dir, PAIRS[:4])
    assert any("rewards/margins" in values for _, values, _ in reporter.metric_points)
