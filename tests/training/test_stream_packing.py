"""Pre-training reads a corpus as one stream (issue 17): rows joined back into their text,
tokenized once, packed into blocks without spurious BOS/EOS, a random offset per epoch."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datasets_app.cleaning.tokenizer_training import train_tokenizer
from training.runtime.run import StreamBlocks, _pack, _stream_ids, prepare_dataset

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n" * 40


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    tmp = tmp_path_factory.mktemp("tok")
    pq.write_table(pa.table({"text": TEXT.split("\n")}), tmp / "t.parquet")
    train_tokenizer(
        tmp / "t.parquet", output_dir=tmp / "tok", text_columns=["text"], algorithm="char"
    )
    return AutoTokenizer.from_pretrained(str(tmp / "tok"))


def test_the_blocks_end_to_end_are_the_tokenized_text(tokenizer) -> None:
    rows = [line for line in TEXT.split("\n") if line.strip()]  # lines mode: no empty rows
    stream = _stream_ids(tokenizer, rows, "none")
    assert tokenizer.decode(stream) == "\n".join(rows)  # newlines kept, nothing added
    specials = set(tokenizer.all_special_ids)
    assert not specials & set(stream)
    for offset in (0, 5):
        blocks = _pack(tokenizer, rows, 64, offset=offset)
        assert all(len(b) == 64 for b in blocks)
        joined = [t for b in blocks for t in b]
        assert joined == stream[offset : offset + len(joined)]
        assert len(stream) - offset - len(joined) < 64


def test_documents_are_separated_by_the_end_token(tokenizer) -> None:
    stream = _stream_ids(tokenizer, ["ab", "cd"], "eos")
    eos = tokenizer.eos_token_id
    ab, cd = (tokenizer(t, add_special_tokens=False)["input_ids"] for t in ("ab", "cd"))
    assert stream == [*ab, eos, *cd, eos]


def test_the_offset_changes_per_epoch_with_the_seed(tokenizer) -> None:
    rows = [line for line in TEXT.split("\n") if line.strip()]
    data = prepare_dataset("pretrain_clm", {"text": rows}, tokenizer, max_len=32, seed=7)
    assert isinstance(data, StreamBlocks)
    stream = _stream_ids(tokenizer, rows, "none")
    offsets, sizes = [], set()
    for epoch in range(6):
        data.set_epoch(epoch)
        sizes.add(len(data))
        first = data[0]["input_ids"].tolist()
        assert first == stream[data.offset : data.offset + 32]
        assert data[0]["labels"].tolist() == first
        last = data[len(data) - 1]["input_ids"].tolist()
        assert len(last) == 32
        offsets.append(data.offset)
    assert len(set(offsets)) > 1 and len(sizes) == 1
    again = StreamBlocks(stream, 32, seed=7, labels=True)
    other = StreamBlocks(stream, 32, seed=8, labels=True)
    seen_again, seen_other = [], []
    for epoch in range(6):
        again.set_epoch(epoch)
        other.set_epoch(epoch)
        seen_again.append(again.offset)
        seen_other.append(other.offset)
    assert seen_again == offsets and seen_other != offsets
