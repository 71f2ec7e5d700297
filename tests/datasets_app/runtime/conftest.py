from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "data"


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """The Shakespeare sample as a Parquet table of ~800-character chunks."""
    from datasets_app.cleaning.readers import convert_to_parquet

    return convert_to_parquet(
        FIXTURES / "tinyshakespeare_sample.txt",
        txt_mode="chunks",
        chunk_chars=800,
        output=tmp_path_factory.mktemp("corpus") / "corpus.parquet",
    ).path


@pytest.fixture(scope="session")
def tokenizer_dir(corpus, tmp_path_factory) -> Path:
    """A small byte-level BPE tokenizer trained on the corpus."""
    from datasets_app.cleaning.tokenizer_training import train_tokenizer

    directory = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer(corpus, output_dir=directory, text_columns=["text"], vocab_size=400)
    return directory
