"""Tiny data sets and tokenizers for training runtime tests, built once per session."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datasets_app.cleaning.readers import convert_to_parquet
from datasets_app.cleaning.splits import split_table
from datasets_app.cleaning.tokenizer_training import train_tokenizer

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "data"


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("training-data")
    convert_to_parquet(
        FIXTURES / "tinyshakespeare_sample.txt",
        output=root / "corpus.parquet",
        txt_mode="chunks",
        chunk_chars=600,
    )
    train_tokenizer(
        root / "corpus.parquet",
        output_dir=root / "tokenizer",
        text_columns=["text"],
        vocab_size=400,
    )
    poems = convert_to_parquet(FIXTURES / "poem_sample.csv", output=root / "poems.parquet")
    split_table(
        poems.path,
        output_dir=root / "poems",
        ratios={"train": 0.8, "test": 0.2},
        stratify_column="label",
    )
    convert_to_parquet(FIXTURES / "scitldr_sample.jsonl", output=root / "papers.parquet")
    convert_to_parquet(FIXTURES / "squad_sample.jsonl", output=root / "squad.parquet")
    # Instructions: ask for a verse's sentiment, answer with its label.
    table = pq.read_table(poems.path)
    pq.write_table(
        pa.table(
            {
                "prompt": [f"Sentiment of: {v}" for v in table.column("verse_text").to_pylist()],
                "target": table.column("label").to_pylist(),
            }
        ),
        root / "instructions.parquet",
    )
    return root
