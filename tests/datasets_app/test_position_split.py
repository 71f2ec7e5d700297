"""The split by position (issue 17): the first N% / the last M% of rows in file order."""

from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datasets_app.cleaning.options import OptionError, SplitParams
from datasets_app.cleaning.readers import streams
from datasets_app.cleaning.readers.text_reader import txt_batches
from datasets_app.cleaning.splits import split_table

CORPUS = "".join(
    f"SPEAKER {n}:\nLine {n} of the play, with words only it says ({n * 7}).\n\n  indented {n}\n"
    for n in range(400)
)


def _rows(mode: str) -> list[str]:
    import io

    decoder = streams.Decoder("utf-8", "strict")
    batches = txt_batches(io.BytesIO(CORPUS.encode()), decoder, mode=mode, chunk_chars=300)
    return [row["text"] for batch in batches for row in batch]


@pytest.mark.parametrize("mode", ["lines", "chunks"])
def test_position_split_shares_no_text_and_keeps_order(tmp_path, mode) -> None:
    rows = _rows(mode)
    source = tmp_path / "corpus.parquet"
    pq.write_table(pa.table({"text": rows}), source)
    results = split_table(
        source,
        output_dir=tmp_path / "out",
        ratios={"train": 0.9, "validation": 0.1},
        strategy="position",
    )
    train = pq.read_table(results["train"].path).column("text").to_pylist()
    validation = pq.read_table(results["validation"].path).column("text").to_pylist()
    assert train + validation == rows  # the first 90%, then the last 10%, in order
    assert len(validation) == round(len(rows) * 0.1)
    assert not set(train) & set(validation)

    # The validation text is one piece of the corpus's tail, never between training rows.
    def lines_of(texts: list[str]) -> set[int]:
        return {int(n) for n in re.findall(r"Line (\d+) ", "\n".join(texts))}

    assert max(lines_of(train)) < min(lines_of(validation))
    assert max(lines_of(validation)) == 399


def test_the_same_rows_whatever_the_seed(tmp_path) -> None:
    source = tmp_path / "t.parquet"
    pq.write_table(pa.table({"text": [str(i) for i in range(50)]}), source)
    a = split_table(source, output_dir=tmp_path / "a", strategy="position", seed=1)
    b = split_table(source, output_dir=tmp_path / "b", strategy="position", seed=2)
    assert {n: r.sha256 for n, r in a.items()} == {n: r.sha256 for n, r in b.items()}
    test = pq.read_table(a["test"].path).column("text").to_pylist()
    assert test == [str(i) for i in range(45, 50)]


def test_position_takes_ratios_only() -> None:
    assert SplitParams(strategy="position").ratios == {"train": 0.8, "validation": 0.1, "test": 0.1}
    with pytest.raises(OptionError) as error:
        SplitParams(strategy="position", by_column="split", ratios=None)
    assert error.value.field in ("strategy", "by_column")
    with pytest.raises(OptionError) as error:
        SplitParams(strategy="sorted")
    assert error.value.field == "strategy"


def test_chunk_rows_join_back_into_the_text() -> None:
    # Blank lines and indentation at chunk boundaries are kept: the newline is the separator
    # (only the line breaks that end the file are not rows).
    assert "\n".join(_rows("chunks")) == CORPUS.rstrip("\n")
    lines = [line for line in CORPUS.split("\n") if line.strip()]
    assert _rows("lines") == lines


def test_the_shakespeare_corpus_joins_back_from_its_chunks() -> None:
    import io
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "shared/datasets/corpus_tinyshakespeare.txt"
    if not path.is_file():
        pytest.skip("the shared Shakespeare corpus is not beside this checkout")
    text = path.read_text(encoding="utf-8")
    decoder = streams.Decoder("utf-8", "strict")
    batches = txt_batches(io.BytesIO(text.encode()), decoder, mode="chunks", chunk_chars=1000)
    rows = [row["text"] for batch in batches for row in batch]
    assert len(rows) > 500
    assert "\n".join(rows) == text.rstrip("\n")
