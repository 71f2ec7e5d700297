"""Perplexity of long text: a window of the model's context slid over the whole text, every
token scored once, with bits per character and per byte beside it (issue 17).

The expected values are computed here token by token, one forward pass per scored token on
exactly the ids its window shows the model, so batching, padding and the window bookkeeping of
``evaluation.runtime.sliding`` are checked against the plain definition.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from evaluation.runtime.config import validate_settings
from evaluation.runtime.evaluate_model import ROW_SEPARATOR, EvalConfig, evaluate_model
from evaluation.runtime.sliding import plan_windows, sliding_token_nll
from llmhub.reporting import JobInputError
from tests.tiny_tokenizers import byte_level_tokenizer

CONTEXT = 16
# Rows of a text-file upload (lines), non-ASCII included so characters and bytes differ.
ROWS = [
    "First Citizen:",
    "Before we proceed any further, hear me speak.",
    "",
    "All: Speak, speak — café, naïve, 1½ ❤.",
    "You are all resolved rather to die than to famish?",
    "Resolved. resolved.",
]


class Reporter:
    def progress(self, fraction: float, message: str = "") -> None:
        pass

    def should_stop(self) -> bool:
        return False


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random GPT-2 with a 16-token context, so the rows need many windows."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    root = tmp_path_factory.mktemp("sliding")
    tok = byte_level_tokenizer(ROWS * 3, vocab_size=300)
    torch.manual_seed(0)
    GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(tok),
            n_positions=CONTEXT,
            n_embd=16,
            n_layer=1,
            n_head=2,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
        )
    ).save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    pd.DataFrame({"text": ROWS}).to_parquet(root / "rows.parquet")
    return root


def _load(tiny_lm: Path):
    from evaluation.runtime.models import load_model

    return load_model(tiny_lm / "model", device="cpu")


def _hand_nll(model, ids: list[int], stride: int) -> list[float]:
    """NLL of each position 1..len-1, each from its own forward pass on the ids of its window:
    the window of target j starts at k * stride for the first k whose window reaches j."""
    import torch

    out = []
    with torch.no_grad():
        for j in range(1, len(ids)):
            k = max(0, math.ceil((j - CONTEXT) / stride))
            start = k * stride
            logits = model(input_ids=torch.tensor([ids[start:j]])).logits[0, -1].double()
            out.append(-float(torch.log_softmax(logits, -1)[ids[j]]))
    return out


def _evaluate(tiny_lm: Path, metrics: list[str], **settings) -> object:
    config = EvalConfig(
        model_dir=tiny_lm / "model",
        task_type="generation",
        data_path=settings.pop("data_path", tiny_lm / "rows.parquet"),
        column_roles={"text": "text"},
        metrics=metrics,
        device="cpu",
        n_bootstrap=0,
        **settings,
    )
    return evaluate_model(config, reporter=Reporter())


@pytest.mark.parametrize(
    ("n_ids", "window", "stride"),
    [(2, 16, 16), (17, 16, 16), (18, 16, 16), (100, 16, 16), (100, 16, 5), (100, 16, 1), (5, 8, 3)],
)
def test_windows_score_every_position_once_with_the_left_context_the_stride_leaves(
    n_ids: int, window: int, stride: int
) -> None:
    windows = plan_windows(n_ids, window, stride)
    scored = [j for w in windows for j in range(w.first_scored, w.end + 1)]
    assert scored == list(range(1, n_ids))  # each once, in order
    for k, w in enumerate(windows):
        assert w.start == k * stride and 0 < w.end - w.start <= window
        if k:  # every scored token sees at least window - stride + 1 ids before it
            assert w.first_scored - w.start >= min(window - stride + 1, w.end - w.start)
    with pytest.raises(ValueError, match="stride"):
        plan_windows(10, 4, 5)


@pytest.mark.parametrize("stride", [CONTEXT, CONTEXT // 2, 3])
def test_sliding_nll_equals_a_token_by_token_hand_computation(tiny_lm: Path, stride: int) -> None:
    loaded = _load(tiny_lm)
    text = ROW_SEPARATOR.join(ROWS)
    ids = list(loaded.tokenizer(text, add_special_tokens=False)["input_ids"])
    assert len(ids) > 4 * CONTEXT
    expected = _hand_nll(loaded.model, ids, stride)
    # Two sequences of different lengths in batches of 3 windows: padding and sorting mixed in.
    got = sliding_token_nll(
        loaded.model,
        [ids, ids[:37]],
        window=CONTEXT,
        stride=stride,
        batch_size=3,
        device="cpu",
        pad_id=loaded.pad_id,
    )
    assert math.isnan(got[0][0]) and math.isnan(got[1][0])
    assert got[0][1:].tolist() == pytest.approx(expected, rel=1e-5, abs=1e-5)
    assert got[1][1:].tolist() == pytest.approx(expected[:36], rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("stride", [None, CONTEXT // 2])
def test_joined_rows_score_every_token_once_with_bits_per_char_and_byte(
    tiny_lm: Path, stride: int | None
) -> None:
    loaded = _load(tiny_lm)
    text = ROW_SEPARATOR.join(ROWS)
    enc = loaded.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    hand = _hand_nll(loaded.model, ids, stride or CONTEXT)
    total = sum(hand)
    # The first token is context only: its characters are not scored.
    first_end = enc["offset_mapping"][1][0]
    chars = len(text) - first_end
    nbytes = len(text.encode()) - len(text[:first_end].encode())
    assert nbytes > chars  # the non-ASCII row

    result = _evaluate(
        tiny_lm,
        ["perplexity", "loss", "bits_per_char", "bits_per_byte"],
        join_rows=True,
        stride=stride,
    )
    assert result.scoring == {
        "tokens": len(ids),
        "scored_tokens": len(ids) - 1,
        "characters": len(text),
        "scored_characters": chars,
        "bytes": len(text.encode()),
        "scored_bytes": nbytes,
        "windows": len(plan_windows(len(ids), CONTEXT, stride or CONTEXT)),
        "window": CONTEXT,
        "stride": stride or CONTEXT,
        "joined": True,
        "end_token": False,
    }
    values = {name: v["value"] for name, v in result.metrics.items()}
    assert values["loss"] == pytest.approx(total / (len(ids) - 1), rel=1e-6)
    assert values["perplexity"] == pytest.approx(math.exp(total / (len(ids) - 1)), rel=1e-6)
    assert values["bits_per_char"] == pytest.approx(total / math.log(2) / chars, rel=1e-6)
    assert values["bits_per_byte"] == pytest.approx(total / math.log(2) / nbytes, rel=1e-6)
    # One example per row; their counts add up to the whole text's.
    stats = [e["stats"] for e in result.examples]
    assert len(stats) == len(ROWS)
    assert sum(s["n_tokens"] for s in stats) == len(ids) - 1
    assert sum(s["n_chars"] for s in stats) == chars
    assert sum(s["nll_sum"] for s in stats) == pytest.approx(total, rel=1e-6)
    assert any(
        "scored" in w and f"{len(ids) - 1:,} of {len(ids):,} tokens" in w for w in result.warnings
    )


def test_a_smaller_stride_gives_more_left_context_and_more_windows(tiny_lm: Path) -> None:
    disjoint = _evaluate(tiny_lm, ["loss"], join_rows=True)
    overlapping = _evaluate(tiny_lm, ["loss"], join_rows=True, stride=4)
    assert overlapping.scoring["scored_tokens"] == disjoint.scoring["scored_tokens"]
    assert overlapping.scoring["windows"] > 3 * disjoint.scoring["windows"]
    assert overlapping.metrics["loss"]["value"] != pytest.approx(disjoint.metrics["loss"]["value"])


def test_rows_as_documents_and_the_end_token_setting(tiny_lm: Path) -> None:
    loaded = _load(tiny_lm)
    tok = loaded.tokenizer
    lengths = [len(tok(r, add_special_tokens=False)["input_ids"]) for r in ROWS]
    plain = _evaluate(tiny_lm, ["perplexity", "bits_per_char"], join_rows=False)
    ended = _evaluate(
        tiny_lm, ["perplexity", "bits_per_char"], join_rows=False, score_end_token=True
    )
    # Each row a document after the BOS: every text token scored, and every character.
    assert [e["stats"]["n_tokens"] for e in plain.examples] == lengths
    assert [e["stats"]["n_chars"] for e in plain.examples] == [len(r) for r in ROWS]
    # The end token: exactly one more scored token per row, no more characters.
    assert [e["stats"]["n_tokens"] for e in ended.examples] == [n + 1 for n in lengths]
    assert ended.scoring["scored_characters"] == plain.scoring["scored_characters"]
    assert ended.scoring["scored_tokens"] == plain.scoring["scored_tokens"] + len(ROWS)
    # The first row by hand: <s> + its tokens (+ </s>), one window.
    ids = [tok.bos_token_id, *tok(ROWS[0], add_special_tokens=False)["input_ids"]]
    first = sum(_hand_nll(loaded.model, [*ids, tok.eos_token_id], CONTEXT))
    assert ended.examples[0]["stats"]["nll_sum"] == pytest.approx(first, rel=1e-6)
    # Joined rows: the end token is appended to the whole text once.
    joined = _evaluate(tiny_lm, ["loss"], join_rows=True)
    joined_end = _evaluate(tiny_lm, ["loss"], join_rows=True, score_end_token=True)
    assert joined_end.scoring["scored_tokens"] == joined.scoring["scored_tokens"] + 1


def test_join_rows_follows_the_data_unless_set(tiny_lm: Path) -> None:
    """Empty join_rows: a split whose only column is the text (a .txt upload) is one text, as
    the training runtime's stream packing decides; a table with other columns is documents."""
    table = tiny_lm / "table.parquet"
    pd.DataFrame({"text": ROWS, "id": range(len(ROWS))}).to_parquet(table)
    assert _evaluate(tiny_lm, ["loss"]).scoring["joined"]
    assert not _evaluate(tiny_lm, ["loss"], join_rows=False).scoring["joined"]
    assert not _evaluate(tiny_lm, ["loss"], data_path=table).scoring["joined"]
    assert _evaluate(tiny_lm, ["loss"], data_path=table, join_rows=True).scoring["joined"]


def test_the_settings_validator_and_the_runtime_refuse_bad_values(tiny_lm: Path) -> None:
    assert validate_settings({"stride": 32, "join_rows": None, "score_end_token": True}) == {
        "stride": 32,
        "join_rows": None,
        "score_end_token": True,
    }
    for bad, message in (
        ({"stride": 0}, "stride must be between 1"),
        ({"stride": 2.5}, "stride must be a whole number"),
        ({"join_rows": "yes"}, "join_rows must be true or false"),
        ({"score_end_token": None}, "score_end_token needs a value"),
    ):
        with pytest.raises(JobInputError, match=message):
            validate_settings(bad)
    with pytest.raises(JobInputError, match=r"at most the model's context \(16 tokens\)"):
        _evaluate(tiny_lm, ["perplexity"], stride=17)


def test_bits_metrics_need_a_causal_lm(tiny_lm: Path) -> None:
    from evaluation.metrics.catalog import METRICS, check_metrics_fit
    from evaluation.runtime.evaluate_model import _check_model_fits

    for name in ("bits_per_char", "bits_per_byte"):
        info = METRICS[name]
        assert not info.higher_is_better and not info.needs_references and not info.bounded
        check_metrics_fit("generation", [name])
        check_metrics_fit("classification", [name])
    with pytest.raises(JobInputError, match="bits_per_char are measured on a causal LM"):
        _check_model_fits("masked_lm", "generation", ["bits_per_char"])
    with pytest.raises(JobInputError, match="bits_per_byte"):
        _check_model_fits("seq2seq", "summarization", ["loss", "bits_per_byte"])


def test_bits_per_char_by_hand_on_the_metric_family() -> None:
    from evaluation.metrics.compute import compute_metrics

    result = compute_metrics(
        ["bits_per_char", "bits_per_byte", "perplexity"],
        predictions=None,
        references=None,
        per_example_extra={
            "nll_sum": [3.0, 5.0],
            "n_tokens": [2, 4],
            "n_chars": [4, 6],
            "n_bytes": [4, 9],
        },
        n_bootstrap=200,
    )
    assert result.metrics["bits_per_char"]["value"] == pytest.approx(8 / math.log(2) / 10)
    assert result.metrics["bits_per_byte"]["value"] == pytest.approx(8 / math.log(2) / 13)
    assert result.metrics["perplexity"]["value"] == pytest.approx(math.exp(8 / 6))
    assert result.per_example["bits_per_char"] == pytest.approx(
        [3 / math.log(2) / 4, 5 / math.log(2) / 6]
    )
    low, high = (
        result.metrics["bits_per_char"]["ci_low"],
        result.metrics["bits_per_char"]["ci_high"],
    )
    assert low <= 8 / math.log(2) / 10 <= high


# --- the one validator at launch: API and form ------------------------------------------------


@pytest.fixture
def launchable(world):
    """A registered causal LM with tokenizer files and a text-only dataset version (rows only
    in the database: nothing here runs)."""
    from datasets_app.models import Dataset, DatasetVersion
    from training.models import ModelVersion, RegisteredModel

    registered = RegisteredModel.objects.create(project=world.project, name="lm")
    model = ModelVersion.objects.create(
        registered_model=registered,
        number=1,
        task_kind="pretrain_clm",
        files_prefix="models/x",
        files=["config.json", "model.safetensors", "tokenizer.json"],
    )
    dataset = Dataset.objects.create(project=world.project, name="corpus")
    version = DatasetVersion.objects.create(
        dataset=dataset,
        number=1,
        file="tables/x.parquet",
        content_sha256="0" * 64,
        row_count=10,
        size_bytes=100,
        schema=[{"name": "text", "type": "string"}],
        column_roles={"text": "text"},
    )
    return model, version


@pytest.mark.django_db
def test_the_api_refuses_a_bad_stride_with_the_workers_message_and_stores_good_ones(
    world, api, launchable
) -> None:
    from evaluation.models import EvaluationRun

    model, version = launchable
    body = {"model_version": model.pk, "dataset_version": version.pk, "split": ""}
    client = api(world.users["engineer"])
    refused = client.post(
        "/api/v1/evaluation-runs/",
        {**body, "metrics": ["bits_per_char"], "settings": {"stride": 0}},
        format="json",
    )
    assert refused.status_code == 400
    with pytest.raises(JobInputError) as worker:
        validate_settings({"stride": 0})
    assert refused.json()["error"]["fields"]["settings"] == [str(worker.value)]
    assert not EvaluationRun.objects.exists()
    settings = {"stride": 32, "join_rows": False, "score_end_token": True}
    made = client.post(
        "/api/v1/evaluation-runs/",
        {**body, "metrics": ["perplexity", "bits_per_char", "bits_per_byte"], "settings": settings},
        format="json",
    )
    assert made.status_code == 201, made.content
    run = EvaluationRun.objects.get()
    assert run.settings == settings
    assert run.metrics == ["perplexity", "bits_per_char", "bits_per_byte"]


@pytest.mark.django_db
def test_the_evaluate_form_offers_the_perplexity_settings(world, client, launchable) -> None:
    import html

    from django.urls import reverse

    from evaluation.models import EvaluationRun

    model, version = launchable
    client.force_login(world.users["engineer"])
    url = reverse("evaluate-stage", args=[world.project.pk])
    form = {
        "model_version": model.pk,
        "dataset_version": version.pk,
        "split": "",
        # A causal LM generates: the form asks for its generation settings too.
        "max_new_tokens": 64,
        "temperature": 0,
        "top_p": 1,
        "num_beams": 1,
    }
    page = client.get(url).content.decode()
    for name in ("stride", "join_rows", "score_end_token", "bits_per_char"):
        assert f'name="{name}"' in page or f'value="{name}"' in page
    # The field's bounds are the table's: 0 is refused on the page, over the bound too.
    refused = client.post(url, {**form, "stride": 0}).content.decode()
    assert "greater than or equal to 1" in refused
    refused = client.post(url, {**form, "stride": 600_000}).content.decode()
    assert "less than or equal to 524288" in refused
    assert html.escape("Score rows as one text") in refused
    assert not EvaluationRun.objects.exists()
    client.post(
        url,
        {
            **form,
            "metrics": ["bits_per_char"],
            "stride": 8,
            "join_rows": "true",
            "score_end_token": "on",
        },
    )
    run = EvaluationRun.objects.get()
    assert {k: run.settings.get(k) for k in ("stride", "join_rows", "score_end_token")} == {
        "stride": 8,
        "join_rows": True,
        "score_end_token": True,
    }
    assert run.metrics == ["bits_per_char"]


@pytest.mark.django_db
def test_the_compare_page_charts_bits_per_character_and_goals_can_target_it(
    world, client, launchable
) -> None:
    from django.utils import timezone

    from evaluation.models import EvaluationRun
    from projects.models import Goal

    model, version = launchable
    runs = [
        EvaluationRun.objects.create(
            project=world.project,
            model_version=model,
            dataset_version=version,
            split="validation",
            task_type=world.project.task_type,
            metrics=["perplexity", "bits_per_char", "bits_per_byte"],
            status="succeeded",
            finished_at=timezone.now(),
            results={
                "perplexity": {"value": 5.0 + i},
                "bits_per_char": {"value": 2.0 + i, "ci_low": 1.9 + i, "ci_high": 2.1 + i},
                "bits_per_byte": {"value": 1.8 + i},
            },
        )
        for i in range(2)
    ]
    client.force_login(world.users["engineer"])
    response = client.get(
        f"/projects/{world.project.pk}/evaluate/compare/", {"runs": [r.pk for r in runs]}
    )
    bits = response.context["bits"]
    assert [t["x"] for t in bits["data"]] == [["Bits per character", "Bits per byte"]] * 2
    assert [t["y"] for t in bits["data"]] == [[2.0, 1.8], [3.0, 2.8]]
    assert 'data-figure="bits-figure"' in response.content.decode()
    goal = Goal(
        project=world.project, metric="bits_per_char", comparison="<=", target=2.0, split="test"
    )
    goal.full_clean()  # a known metric, lower is better: "bits_per_char <= 2.0"
