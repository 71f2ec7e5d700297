"""Pre-training reads a corpus as one stream (issue 17): rows joined back into their text,
tokenized once, packed into blocks without spurious BOS/EOS, a random offset per epoch, and
nanoGPT's targets: a block of T inputs predicts the T tokens that follow them."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from datasets_app.cleaning.tokenizer_training import train_tokenizer
from training.runtime.presets import ModelSpec, build_config
from training.runtime.run import (
    StreamBlocks,
    _pack,
    _stream_ids,
    _takes_shift_labels,
    prepare_dataset,
)

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
        # The targets are the next tokens: the one after the block's last input included.
        assert data[0]["shift_labels"].tolist() == stream[data.offset + 1 : data.offset + 33]
        assert data[0]["labels"].tolist() == data[0]["shift_labels"].tolist()
        last = data[len(data) - 1]
        assert len(last["input_ids"]) == len(last["shift_labels"]) == 32
        offsets.append(data.offset)
    assert len(set(offsets)) > 1 and len(sizes) == 1
    again = StreamBlocks(stream, 32, seed=7, targets="next")
    other = StreamBlocks(stream, 32, seed=8, targets="next")
    seen_again, seen_other = [], []
    for epoch in range(6):
        again.set_epoch(epoch)
        other.set_epoch(epoch)
        seen_again.append(again.offset)
        seen_other.append(other.offset)
    assert seen_again == offsets and seen_other != offsets


@pytest.mark.parametrize("tail", [0, 5])
def test_every_token_after_the_first_is_a_target_once_an_epoch(tail: int) -> None:
    block, count = 16, 7
    stream = list(range(block * count + 1 + tail))  # each id is its position in the stream
    data = StreamBlocks(stream, block, seed=1, targets="next")
    assert len(data) == count  # a block needs block + 1 tokens; blocks share one
    data.offset = 0  # the epoch at offset 0
    rows = [data[i] for i in range(len(data))]
    for row in rows:
        assert row["shift_labels"].tolist() == [t + 1 for t in row["input_ids"].tolist()]
    inputs = [t for row in rows for t in row["input_ids"].tolist()]
    targets = [t for row in rows for t in row["shift_labels"].tolist()]
    assert inputs == stream[: block * count]
    # Each token after the first once, in order; only a tail shorter than a block is left.
    assert targets == stream[1 : 1 + block * count]
    if tail == 0:
        assert targets == stream[1:]
    # Any other offset: as many blocks, the last one coming round to the stream's start, and
    # every token a target once but the one at the offset (and the tail after the last block).
    for offset in range(1, block):
        data.offset = offset
        assert len(data) == count
        seen = [t for i in range(len(data)) for t in data[i]["shift_labels"].tolist()]
        assert seen == [(offset + 1 + j) % len(stream) for j in range(block * count)]
        assert len(set(seen)) == len(seen)
        last = data[len(data) - 1]
        assert last["shift_labels"].tolist() == [
            (t + 1) % len(stream) for t in last["input_ids"].tolist()
        ]


def test_short_streams() -> None:
    stream = list(range(30))
    short = StreamBlocks(stream[:10], 16, seed=3, targets="next")  # shorter than a block
    assert len(short) == 1 and short.block == 9
    short.offset = 0
    assert short[0]["shift_labels"].tolist() == stream[1:10]
    one = StreamBlocks(stream[:17], 16, seed=3, targets="next")  # exactly one block
    one.offset = 0
    assert len(one) == 1 and one[0]["shift_labels"].tolist() == stream[1:17]


def test_the_same_layout_for_a_model_that_shifts_itself() -> None:
    stream = list(range(16 * 5))
    data = StreamBlocks(stream, 16, seed=3, targets="same")
    assert len(data) == (len(stream) - 15) // 16
    assert data[0]["labels"].tolist() == data[0]["input_ids"].tolist()
    assert "shift_labels" not in data[0]
    masked = StreamBlocks(stream, 16, seed=3, targets=None)
    assert set(masked[0]) == {"input_ids", "attention_mask"}


def _tiny(family: str, vocab: int):
    from transformers import AutoModelForCausalLM

    positions = {"gpt2": "n_positions", "llama": "max_position_embeddings"}[family]
    config = build_config(
        ModelSpec(family, "tiny", {positions: 32}), vocab_size=vocab, settings={"dropout": 0.0}
    )
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_the_loss_is_the_mean_cross_entropy_over_the_t_targets(family: str, tmp_path) -> None:
    from transformers import Trainer, TrainingArguments, default_data_collator

    vocab, block = 40, 16
    stream = torch.randint(0, vocab, (block * 6 + 1,), generator=torch.Generator().manual_seed(0))
    data = StreamBlocks(stream.tolist(), block, seed=0, targets="next")
    model = _tiny(family, vocab)
    assert _takes_shift_labels(model)
    trainer = Trainer(
        model=model,
        args=TrainingArguments(
            output_dir=str(tmp_path),
            per_device_eval_batch_size=2,
            report_to="none",
            use_cpu=True,
            remove_unused_columns=False,
        ),
        eval_dataset=data,
        data_collator=default_data_collator,
    )
    rows = [data[i] for i in range(len(data))]
    with torch.no_grad():
        logits = model(input_ids=torch.stack([r["input_ids"] for r in rows])).logits
    targets = torch.stack([r["shift_labels"] for r in rows])
    # By hand: every position's prediction against the next token, T of them a block.
    hand = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1))
    # A training step's loss: the Trainer counts T targets a block (not T - 1).
    batch = default_data_collator(rows[:2])
    count = trainer._get_num_items_in_batch([batch], torch.device("cpu"))
    assert int(count) == 2 * block
    with torch.no_grad():
        step = trainer.compute_loss(model, dict(batch), num_items_in_batch=count)
    first_two = torch.nn.functional.cross_entropy(
        logits[:2].reshape(-1, vocab), targets[:2].reshape(-1)
    )
    torch.testing.assert_close(step, first_two, rtol=1e-5, atol=1e-6)
    # The evaluation loss over every block.
    assert trainer.evaluate()["eval_loss"] == pytest.approx(hand.item(), rel=1e-5)


def test_a_model_with_a_loss_of_its_own_gets_labels_it_shifts_itself() -> None:
    model = _tiny("gpt2", 40)
    model.loss_function = lambda logits, labels, vocab_size, **kwargs: logits.sum()
    assert not _takes_shift_labels(model)
