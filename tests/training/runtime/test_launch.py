"""The multi-process launcher: ranks under torchrun agree on when to stop."""

from __future__ import annotations

import json
from pathlib import Path


def test_the_ranks_stop_together_when_asked(tmp_path, data_dir) -> None:
    import subprocess
    import sys

    from training.runtime.config import TrainingConfig
    from training.runtime.launch import config_to_json
    from training.runtime.presets import ModelSpec

    config = TrainingConfig(
        kind="pretrain_clm",
        train_path=data_dir / "corpus.parquet",
        output_dir=tmp_path / "out",
        column_roles={"text": "text"},
        model_spec=ModelSpec("gpt2", "tiny"),
        tokenizer_dir=data_dir / "tokenizer",
        max_steps=500,
        batch_size=4,
        max_seq_length=32,
    )
    (tmp_path / "job.json").write_text(json.dumps(config_to_json(config)))
    (tmp_path / "stop").touch()  # asked to stop before the first step ends
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "training.runtime.launch",
            "--config",
            str(tmp_path / "job.json"),
            "--events",
            str(tmp_path / "events.jsonl"),
            "--stop",
            str(tmp_path / "stop"),
        ],
        cwd=Path(__file__).resolve().parents[3],
        capture_output=True,
        text=True,
        timeout=300,
    )
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert events[-1] == {"type": "cancelled"}, result.stdout[-2000:] + result.stderr[-2000:]
    assert any(e["type"] == "checkpoint" and e["step"] == 1 for e in events)


def test_the_ranks_stop_together_when_rank_zero_sees_the_loss_diverge(tmp_path, data_dir) -> None:
    import subprocess
    import sys

    from training.runtime.config import TrainingConfig
    from training.runtime.launch import config_to_json
    from training.runtime.presets import ModelSpec

    config = TrainingConfig(
        kind="classification",
        train_path=data_dir / "poems" / "train.parquet",
        output_dir=tmp_path / "out",
        column_roles={"text": "verse_text", "label": "label"},
        model_spec=ModelSpec("bert", "tiny"),
        tokenizer_dir=data_dir / "tokenizer",
        learning_rate=1.0,  # only rank 0 watches the loss; every rank must stop with it
        max_steps=200,
        batch_size=4,
        max_seq_length=32,
    )
    (tmp_path / "job.json").write_text(json.dumps(config_to_json(config)))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "training.runtime.launch",
            "--config",
            str(tmp_path / "job.json"),
            "--events",
            str(tmp_path / "events.jsonl"),
            "--stop",
            str(tmp_path / "stop"),
        ],
        cwd=Path(__file__).resolve().parents[3],
        capture_output=True,
        text=True,
        timeout=300,
    )
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    last = events[-1]
    assert last["type"] == "input_error", result.stdout[-2000:] + result.stderr[-2000:]
    assert last["message"].startswith("Training diverged at step ")
    steps = [e["step"] for e in events if e["type"] == "metrics"]
    assert max(steps) < 200 and not any(e["type"] == "checkpoint" for e in events)
