"""The model backends: dynamic batching, batch-independent answers, streaming, limits, closing.

Tiny random-weight models on the CPU (float32). Each test drives the backend from its own
event loop (asyncio.run), as the ASGI app does.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import shutil
from pathlib import Path

import pytest

from serving.engine.backends import (
    BackendClosed,
    BackendError,
    Delta,
    Finish,
    GenerationParams,
    ModelLoadError,
    QueueFull,
    load_backend,
)
from serving.engine.backends.generate import (
    DEFAULT_CHAT_TEMPLATE,
    _decoder,
    _held_back,
    _IncrementalDecoder,
    default_chat_prompt,
)
from serving.engine.config import EngineSettings
from serving.engine.types import SERVE_CLASSIFY, SERVE_EMBED, SERVE_GENERATE, VersionSpec
from tests.serving.engine.models import (
    LABELS,
    tiny_causal_lm_dir,
    tiny_classifier_dir,
    tiny_encoder_dir,
)

PROMPTS = [
    "Hello world",
    "The quick brown fox jumps over",
    "Café",
    "A model serves answers to questions, one token",
    "Numbers 0 1 2",
    "Batching",
]


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("serving-models")
    return {
        "lm": tiny_causal_lm_dir(root),
        "cls": tiny_classifier_dir(root),
        "enc": tiny_encoder_dir(root),
    }


@pytest.fixture(scope="module")
def reference(model_dirs):
    """The loader's own model, for unbatched HF generate answers."""
    from evaluation.runtime.models import load_model

    return load_model(model_dirs["lm"], device="cpu")


@pytest.fixture
def backends():
    """Start backends with given settings; every one is closed (and its thread joined) after."""
    started = []

    def start(model_dir: Path, kind: str = SERVE_GENERATE, **settings):
        settings.setdefault("device", "cpu")
        spec = VersionSpec(len(started) + 1, f"tiny v{len(started) + 1}", str(model_dir), kind)
        backend = load_backend(spec, EngineSettings(**settings))
        started.append(backend)
        return backend

    yield start
    for backend in started:
        backend.close(drain=False)
        assert backend.wait_closed(10)


def hf_greedy(reference, prompt: str, max_new_tokens: int) -> tuple[list[int], str]:
    """Unbatched HF greedy generate: the new token ids before the end token, and the finish
    reason that implies."""
    import torch

    ids = torch.tensor([reference.tokenizer(prompt)["input_ids"]])
    out = reference.model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=reference.pad_id,
    )
    new = out[0, ids.shape[1] :].tolist()
    eos = reference.tokenizer.eos_token_id
    return (new[: new.index(eos)], "stop") if eos in new else (new, "length")


def hf_text(reference, prompt: str, max_new_tokens: int) -> tuple[str, str]:
    ids, reason = hf_greedy(reference, prompt, max_new_tokens)
    return reference.tokenizer.decode(ids, skip_special_tokens=True), reason


def params(backend, prompt: str, max_tokens: int = 12, **kw) -> GenerationParams:
    kw.setdefault("temperature", 0.0)
    return GenerationParams(prompt_ids=tuple(backend.encode(prompt)), max_tokens=max_tokens, **kw)


async def collect(stream) -> dict[int, dict]:
    """Per choice: its text (the deltas joined), delta token count and Finish."""
    out: dict[int, dict] = {}
    async for event in stream:
        choice = out.setdefault(event.index, {"text": "", "tokens": 0, "finish": None})
        assert choice["finish"] is None, "an event after the choice's Finish"
        if isinstance(event, Delta):
            choice["text"] += event.text
            choice["tokens"] += event.tokens
        else:
            assert isinstance(event, Finish)
            choice["finish"] = event
    return out


async def run_all(backend, all_params: list[GenerationParams]) -> list[dict[int, dict]]:
    return await asyncio.gather(*(collect(backend.generate(p)) for p in all_params))


# --- batching --------------------------------------------------------------------------------


def test_batched_answers_equal_unbatched_hf_generate(model_dirs, reference, backends) -> None:
    backend = backends(model_dirs["lm"], max_batch_size=8, max_wait_ms=200)
    expected = [hf_text(reference, p, 12) for p in PROMPTS]
    assert {reason for _, reason in expected} == {"stop", "length"}  # both kinds of ending

    results = asyncio.run(run_all(backend, [params(backend, p) for p in PROMPTS]))

    assert backend.batches_run == 1  # six concurrent requests ran as one batch
    for prompt, result, (text, reason) in zip(PROMPTS, results, expected, strict=True):
        assert result[0]["text"] == text, prompt
        assert result[0]["finish"].finish_reason == reason, prompt
    # And each alone gives the same answer.
    for prompt, (text, _) in zip(PROMPTS[:3], expected[:3], strict=True):
        (alone,) = asyncio.run(run_all(backend, [params(backend, prompt)]))
        assert alone[0]["text"] == text


def test_eight_concurrent_requests_run_in_fewer_than_eight_batches(model_dirs, backends) -> None:
    backend = backends(model_dirs["lm"], max_batch_size=8, max_wait_ms=100)
    results = asyncio.run(run_all(backend, [params(backend, PROMPTS[i % 6], 6) for i in range(8)]))
    assert len(results) == 8 and all(r[0]["finish"] for r in results)
    assert backend.batches_run < 8
    # One prefill plus at most five decoding steps for all eight together.
    assert backend.forward_passes <= 6 * backend.batches_run


def test_one_loop_callback_per_decoding_step_for_the_whole_batch(model_dirs, backends) -> None:
    """The scheduler hands each step's events of every request to the loop in one callback (a
    wake-up per token per request was most of the event loop's work under batched load)."""
    backend = backends(model_dirs["lm"], max_batch_size=8, max_wait_ms=200)
    callbacks = []

    async def main() -> list[dict[int, dict]]:
        loop = asyncio.get_running_loop()
        original = loop.call_soon_threadsafe

        def counted(callback, *args, **kwargs):
            callbacks.append(callback)
            return original(callback, *args, **kwargs)

        loop.call_soon_threadsafe = counted
        try:
            return await run_all(backend, [params(backend, PROMPTS[i % 6], 8) for i in range(6)])
        finally:
            del loop.call_soon_threadsafe

    results = asyncio.run(main())
    assert backend.batches_run == 1
    assert sum(r[0]["tokens"] for r in results) > 6 * 3  # most rows ran several steps
    assert len(callbacks) <= backend.forward_passes  # not one per request per step


def test_collect_gives_the_same_answer_in_one_piece(model_dirs, backends, monkeypatch) -> None:
    """collect(): the events __anext__ gives, at once when every choice has finished, each with
    its arrival time; a failure comes after the events before it."""
    backend = backends(model_dirs["lm"], max_batch_size=8, max_wait_ms=50)
    asks = [params(backend, PROMPTS[3], 9), params(backend, PROMPTS[1], 7, n=2, temperature=0.8)]
    asks[1] = GenerationParams(**{**asks[1].__dict__, "seed": 3})

    async def collected(p: GenerationParams) -> tuple[list, list[float]]:
        stream = backend.generate(p)
        first = await stream.__anext__()
        arrived = await stream.collect()
        with pytest.raises(StopAsyncIteration):
            await stream.collect()
        return [first] + [e for _, e in arrived], [t for t, _ in arrived]

    async def iterated(p: GenerationParams) -> list:
        return [e async for e in backend.generate(p)]

    async def both() -> tuple[list, list]:
        return await asyncio.gather(*map(collected, asks)), await asyncio.gather(
            *map(iterated, asks)
        )

    by_collect, by_iteration = asyncio.run(both())
    for (events, times), expected in zip(by_collect, by_iteration, strict=True):
        assert events == expected
        assert times == sorted(times) and len(set(times)) > 1  # stamped as they arrived
    assert sum(isinstance(e, Finish) for e in by_collect[1][0]) == 2

    real_forward = backend._loaded.model.forward
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("device fell over")
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(backend._loaded.model, "forward", flaky)

    async def failing() -> list:
        stream = backend.generate(params(backend, PROMPTS[0], 10))
        arrived = await stream.collect()
        with pytest.raises(BackendError, match="device fell over"):
            await stream.collect()
        return arrived

    arrived = asyncio.run(failing())
    assert [e.tokens for _, e in arrived] == [1, 1, 1]  # the three steps before the failure


def test_a_collecting_reader_is_woken_once_and_its_progress_still_shows(
    model_dirs, backends, monkeypatch
) -> None:
    """The scheduler holds a collecting reader's events until its answer finishes (no loop
    callback per step), while last_arrival() (what the app's wait limit counts from) moves on."""
    import time

    backend = backends(model_dirs["lm"], max_wait_ms=0)
    real_forward = backend._loaded.model.forward

    def slow(*args, **kwargs):
        time.sleep(0.02)
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(backend._loaded.model, "forward", slow)
    callbacks, progress = [], []

    async def main() -> list:
        loop = asyncio.get_running_loop()
        original = loop.call_soon_threadsafe

        def counted(callback, *args, **kwargs):
            callbacks.append(callback)
            return original(callback, *args, **kwargs)

        loop.call_soon_threadsafe = counted
        stream = backend.generate(params(backend, PROMPTS[1], 12))
        await stream.__anext__()
        before = len(callbacks)
        task = asyncio.ensure_future(stream.collect())
        while not task.done():
            progress.append(stream.last_arrival())
            await asyncio.sleep(0.03)
        del loop.call_soon_threadsafe
        return [before, len(callbacks), await task]

    before, after, arrived = asyncio.run(main())
    assert isinstance(arrived[-1][1], Finish) and len(arrived) >= 3
    assert after - before <= 2  # the held events and the Finish, not one callback per step
    assert progress[-1] - progress[0] > 0.1  # it moved on while nothing reached the loop
    assert all(b > a - 0.001 for a, b in itertools.pairwise(progress))  # clock jitter


@pytest.mark.parametrize(
    ("running_prompt", "joining_prompt"),
    [(PROMPTS[0], PROMPTS[3]), (PROMPTS[3], PROMPTS[5])],
    ids=["longer-prompt-joins", "shorter-prompt-joins"],
)
def test_requests_join_a_running_batch_and_keep_their_answers(
    model_dirs, reference, backends, running_prompt, joining_prompt
) -> None:
    backend = backends(model_dirs["lm"], max_batch_size=8, max_wait_ms=0)
    long_text, _ = hf_text(reference, running_prompt, 100)
    short_text, _ = hf_text(reference, joining_prompt, 5)
    finished: list[str] = []

    async def main() -> tuple[dict, dict]:
        async def consume(name: str, stream) -> dict:
            result = await collect(stream)
            finished.append(name)
            return result

        long_stream = backend.generate(params(backend, running_prompt, 100))
        first = await long_stream.__anext__()  # the long one is running now
        long_task = asyncio.create_task(consume("long", long_stream))
        short = await consume("short", backend.generate(params(backend, joining_prompt, 5)))
        long = await long_task
        long[0]["text"] = first.text + long[0]["text"]
        return long, short

    long, short = asyncio.run(main())
    assert finished == ["short", "long"]  # the short request did not wait for the long one
    assert backend.batches_run == 2
    # Padded onto the running cache, then trimmed off it when the short one left: the long
    # answer is still the unbatched one.
    assert long[0]["text"] == long_text
    assert short[0]["text"] == short_text


# --- sampling, stops, lengths, choices -----------------------------------------------------


def test_a_seed_gives_the_same_text_whatever_runs_beside_it(model_dirs, backends) -> None:
    backend = backends(model_dirs["lm"], max_batch_size=8, max_wait_ms=100)
    seeded = params(backend, PROMPTS[0], 20, temperature=1.0, top_p=0.9, seed=7)
    (alone,) = asyncio.run(run_all(backend, [seeded]))
    company = [
        params(backend, PROMPTS[i], 20 + i, temperature=0.8, seed=i) for i in range(1, 5)
    ] + [params(backend, PROMPTS[5], 3)]
    together = asyncio.run(run_all(backend, [*company[:2], seeded, *company[2:]]))
    assert backend.batches_run == 2
    assert together[2][0]["text"] == alone[0]["text"]
    other_seed = params(backend, PROMPTS[0], 20, temperature=1.0, top_p=0.9, seed=8)
    (other,) = asyncio.run(run_all(backend, [other_seed]))
    assert other[0]["text"] != alone[0]["text"]


def test_top_p_keeps_the_head_of_the_distribution(model_dirs, backends) -> None:
    backend = backends(model_dirs["lm"], max_wait_ms=0)
    greedy, nucleus = asyncio.run(
        run_all(
            backend,
            [
                params(backend, PROMPTS[4], 16),
                params(backend, PROMPTS[4], 16, temperature=2.0, top_p=1e-6, seed=1),
            ],
        )
    )
    assert nucleus[0]["text"] == greedy[0]["text"]  # only the most likely token survives


def test_stop_strings_cut_the_text_and_finish_stop(model_dirs, backends) -> None:
    backend = backends(model_dirs["lm"], max_wait_ms=0)
    prompt = PROMPTS[3]
    (full,) = asyncio.run(run_all(backend, [params(backend, prompt, 30)]))
    text = full[0]["text"]
    start = next(i for i in range(3, len(text) - 2) if "\ufffd" not in text[i : i + 2])
    stop = text[start : start + 2]
    expected = text[: text.find(stop)]

    (cut,) = asyncio.run(
        run_all(backend, [params(backend, prompt, 30, stop=("never-there", stop))])
    )
    assert cut[0]["text"] == expected
    assert stop not in cut[0]["text"]
    finish = cut[0]["finish"]
    assert finish.finish_reason == "stop"
    assert finish.completion_tokens < 30
    assert cut[0]["tokens"] == finish.completion_tokens


def test_text_that_may_start_a_stop_string_is_held_back() -> None:
    assert _held_back("abc<e", 0, ("<end>",)) == 2
    assert _held_back("abc<e", 3, ("<end>",)) == 2
    assert _held_back("abc<e", 4, ("<end>",)) == 0  # "<" was handed out: no stop can start there
    assert _held_back("abc", 0, ("<end>", "c")) == 0  # a whole stop string is a match, not held
    assert _held_back("abc", 0, ()) == 0


def test_streamed_text_never_splits_a_character(reference) -> None:
    tok = reference.tokenizer
    text = "Café au lait, naïve 🙂 日本語"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > len(text)  # some characters span several tokens
    decoder = _IncrementalDecoder(tok, [])
    pieces = [decoder.add(i) for i in ids]
    assert all("\ufffd" not in piece for piece in pieces)
    assert "".join(pieces) + decoder.flush() == text


def test_the_fast_decoder_decodes_as_the_tokenizer_does(reference) -> None:
    tok = reference.tokenizer
    ids = tok("Café au lait 🙂 ok", add_special_tokens=False)["input_ids"]
    specials = [i for i in (tok.eos_token_id, tok.pad_token_id, tok.bos_token_id) if i is not None]
    decode = _decoder(tok)
    assert decode is not None and decode.__code__ is not _decoder(object()).__code__  # the fast one
    for cut in (ids, ids[:3], ids[2:5], specials + ids[:4] + specials, []):
        assert decode(cut) == tok.decode(cut, skip_special_tokens=True)


def test_max_tokens_finishes_length_with_exact_counts(model_dirs, backends) -> None:
    backend = backends(model_dirs["lm"], max_wait_ms=0)
    (result,) = asyncio.run(run_all(backend, [params(backend, PROMPTS[2], 9)]))
    assert result[0]["finish"].finish_reason == "length"
    assert result[0]["finish"].completion_tokens == 9
    assert result[0]["tokens"] == 9


def test_the_end_token_finishes_stop(model_dirs, reference, backends, tmp_path) -> None:
    greedy, _ = hf_greedy(reference, PROMPTS[0], 6)
    model_dir = tmp_path / "eos-early"
    shutil.copytree(model_dirs["lm"], model_dir)
    config = json.loads((model_dir / "generation_config.json").read_text())
    end = greedy[3]  # this model's 4th greedy token ends the answer
    first = greedy.index(end)
    config["eos_token_id"] = [reference.tokenizer.eos_token_id, end]
    (model_dir / "generation_config.json").write_text(json.dumps(config))
    backend = backends(model_dir, max_wait_ms=0)

    (result,) = asyncio.run(run_all(backend, [params(backend, PROMPTS[0], 6)]))
    assert result[0]["finish"].finish_reason == "stop"
    assert result[0]["finish"].completion_tokens == first + 1
    assert result[0]["text"] == reference.tokenizer.decode(greedy[:first])


def test_n_choices(model_dirs, backends) -> None:
    backend = backends(model_dirs["lm"], max_wait_ms=0)
    (greedy,) = asyncio.run(run_all(backend, [params(backend, PROMPTS[0], 8, n=2)]))
    assert sorted(greedy) == [0, 1]
    assert greedy[0]["text"] == greedy[1]["text"]
    assert all(c["finish"].completion_tokens == 8 for c in greedy.values())
    (sampled,) = asyncio.run(
        run_all(backend, [params(backend, PROMPTS[0], 20, n=2, temperature=1.0, seed=3)])
    )
    assert sampled[0]["text"] != sampled[1]["text"]
    (again,) = asyncio.run(
        run_all(backend, [params(backend, PROMPTS[0], 20, n=2, temperature=1.0, seed=3)])
    )
    assert [again[i]["text"] for i in (0, 1)] == [sampled[i]["text"] for i in (0, 1)]


def test_bad_parameters_are_refused_at_once(model_dirs, backends) -> None:
    backend = backends(model_dirs["lm"], max_wait_ms=0)

    async def main() -> None:
        with pytest.raises(ValueError, match="context of 128"):
            backend.generate(params(backend, PROMPTS[0], 200))
        with pytest.raises(ValueError, match="At most 4 stop strings"):
            backend.generate(params(backend, PROMPTS[0], 4, stop=tuple("abcde")))

    asyncio.run(main())
    assert backend.queue_depth() == 0


# --- limits, cancellation, closing ------------------------------------------------------------


def test_a_full_queue_is_refused_at_once(model_dirs, backends) -> None:
    backend = backends(
        model_dirs["lm"], max_batch_size=1, max_queue_depth=1, queue_full_retry_after=3
    )

    async def main() -> None:
        running = backend.generate(params(backend, PROMPTS[0], 120))
        await running.__anext__()
        assert backend.running() == 1
        waiting = backend.generate(params(backend, PROMPTS[1], 4))  # queued behind it
        assert backend.queue_depth() == 1
        with pytest.raises(QueueFull) as refused:
            backend.generate(params(backend, PROMPTS[2], 4))
        assert refused.value.retry_after == 3
        await running.aclose()
        assert (await collect(waiting))[0]["finish"].completion_tokens == 4

    asyncio.run(main())


def test_a_queue_waiting_for_its_batch_is_full_too(model_dirs, backends) -> None:
    backend = backends(model_dirs["lm"], max_batch_size=4, max_wait_ms=1000, max_queue_depth=1)

    async def main() -> None:
        first = backend.generate(params(backend, PROMPTS[0], 4))
        with pytest.raises(QueueFull):
            backend.generate(params(backend, PROMPTS[1], 4))
        await first.aclose()  # leaves the queue at once
        assert backend.queue_depth() == 0
        assert (await collect(backend.generate(params(backend, PROMPTS[1], 4))))[0]["finish"]

    asyncio.run(main())


def test_closing_the_stream_frees_its_slot(model_dirs, backends) -> None:
    backend = backends(model_dirs["lm"], max_batch_size=1, max_wait_ms=0)

    async def main() -> dict:
        stream = backend.generate(params(backend, PROMPTS[0], 120))
        await stream.__anext__()
        await stream.aclose()
        return await collect(backend.generate(params(backend, PROMPTS[1], 5)))

    result = asyncio.run(main())
    assert result[0]["finish"].completion_tokens == 5
    assert backend.forward_passes < 120  # the abandoned request stopped early
    assert backend.running() == 0


def test_a_cancelled_consumer_task_frees_its_slot(model_dirs, backends) -> None:
    backend = backends(model_dirs["lm"], max_batch_size=1, max_wait_ms=0)

    async def main() -> dict:
        started = asyncio.Event()

        async def consume() -> None:
            async for _ in backend.generate(params(backend, PROMPTS[0], 120)):
                started.set()

        task = asyncio.create_task(consume())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return await collect(backend.generate(params(backend, PROMPTS[1], 5)))

    result = asyncio.run(main())
    assert result[0]["finish"].completion_tokens == 5
    assert backend.forward_passes < 120


def test_close_drains_the_queue_then_refuses(model_dirs, backends) -> None:
    backend = backends(model_dirs["lm"], max_batch_size=1, max_wait_ms=0)

    async def main() -> list:
        streams = [backend.generate(params(backend, p, 5)) for p in PROMPTS[:3]]
        backend.close()
        with pytest.raises(BackendClosed):
            backend.generate(params(backend, PROMPTS[0], 5))
        return await asyncio.gather(*(collect(s) for s in streams))

    results = asyncio.run(main())
    assert [r[0]["finish"].completion_tokens for r in results] == [5, 5, 5]
    assert backend.wait_closed(10)
    assert backend._loaded is None  # the model was dropped


def test_close_without_drain_fails_the_queue(model_dirs, backends) -> None:
    backend = backends(model_dirs["lm"], max_batch_size=1, max_wait_ms=0)

    async def main() -> None:
        running = backend.generate(params(backend, PROMPTS[0], 120))
        await running.__anext__()
        waiting = backend.generate(params(backend, PROMPTS[1], 5))
        backend.close(drain=False)
        with pytest.raises(BackendClosed):
            await collect(waiting)
        with pytest.raises(BackendError, match="unloaded"):
            await collect(running)

    asyncio.run(main())
    assert backend.wait_closed(10)


def test_a_failing_batch_fails_its_requests_and_the_backend_goes_on(
    model_dirs, backends, monkeypatch
) -> None:
    backend = backends(model_dirs["lm"], max_wait_ms=0)
    model = backend._loaded.model
    real_forward = model.forward
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("device fell over")
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", flaky)
    with pytest.raises(BackendError, match="device fell over"):
        asyncio.run(run_all(backend, [params(backend, PROMPTS[0], 10)]))
    (after,) = asyncio.run(run_all(backend, [params(backend, PROMPTS[0], 4)]))
    assert after[0]["finish"].completion_tokens == 4


# --- prompts ---------------------------------------------------------------------------------


def test_chat_prompt_default_and_the_tokenizers_template(model_dirs, backends, tmp_path) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": [{"type": "text", "text": "Why?"}]},
    ]
    backend = backends(model_dirs["lm"])
    expected = "System: Be brief.\nUser: Hi\nAssistant: Hello.\nUser: Why?\nAssistant:"
    assert backend.chat_prompt(messages) == expected == default_chat_prompt(messages)
    assert "Assistant:" in DEFAULT_CHAT_TEMPLATE

    from transformers import AutoTokenizer

    templated = tmp_path / "templated"
    shutil.copytree(model_dirs["lm"], templated)
    tok = AutoTokenizer.from_pretrained(templated)
    tok.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    tok.save_pretrained(templated)
    with_template = backends(templated)
    assert with_template.chat_prompt(messages[1:3]) == "<user>Hi<assistant>Hello.<assistant>"
    assert with_template.max_context == 128
    assert with_template.encode("Hello world") == list(tok("Hello world")["input_ids"])


# --- embeddings and classification ---------------------------------------------------------------


def test_embeddings_are_unit_vectors_batched_together(model_dirs, backends) -> None:
    backend = backends(model_dirs["enc"], SERVE_EMBED, max_batch_size=8, max_wait_ms=100)
    texts = ["Hello world", "The quick brown fox", "Café au lait"]

    async def main() -> list:
        return await asyncio.gather(backend.embed(texts[:2]), backend.embed(texts[2:]))

    (two, tokens_two), (one, tokens_one) = asyncio.run(main())
    assert backend.batches_run == 1
    vectors = two + one
    assert len(vectors) == 3 and all(len(v) == 32 for v in vectors)
    assert all(math.isclose(math.fsum(x * x for x in v), 1.0, rel_tol=1e-5) for v in vectors)
    counted = [len(backend.encode(t)) for t in texts]
    assert (tokens_two, tokens_one) == (sum(counted[:2]), counted[2])
    (alone,), _ = asyncio.run(backend.embed(texts[2:]))  # padding in a batch changes nothing
    assert alone == pytest.approx(one[0], abs=1e-5)


def test_classifier_scores_sum_to_one_best_first(model_dirs, backends) -> None:
    backend = backends(model_dirs["cls"], SERVE_CLASSIFY, max_wait_ms=0)
    results, tokens = asyncio.run(backend.classify(["I loved it", "Awful.", "Hm"]))
    assert len(results) == 3 and tokens == sum(
        len(backend.encode(t)) for t in ["I loved it", "Awful.", "Hm"]
    )
    for result in results:
        assert sorted(label for label, _ in result.labels) == sorted(LABELS)
        scores = [score for _, score in result.labels]
        assert scores == sorted(scores, reverse=True)
        assert math.isclose(sum(scores), 1.0, rel_tol=1e-5)


# --- loading ---------------------------------------------------------------------------------


def test_loading_failures_are_model_load_errors(model_dirs, tmp_path) -> None:
    settings = EngineSettings(device="cpu")
    with pytest.raises(ModelLoadError, match="no model directory"):
        load_backend(VersionSpec(1, "gone v1", str(tmp_path / "gone"), SERVE_GENERATE), settings)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match=r"empty v1: .*no config\.json"):
        load_backend(VersionSpec(1, "empty v1", str(tmp_path / "empty"), SERVE_GENERATE), settings)
    with pytest.raises(ModelLoadError, match="cannot generate"):
        load_backend(VersionSpec(1, "cls v1", str(model_dirs["cls"]), SERVE_GENERATE), settings)
    with pytest.raises(ModelLoadError, match="not a sequence classifier"):
        load_backend(VersionSpec(1, "lm v1", str(model_dirs["lm"]), SERVE_CLASSIFY), settings)
    with pytest.raises(ModelLoadError, match="unknown serve kind"):
        load_backend(VersionSpec(1, "lm v1", str(model_dirs["lm"]), "dance"), settings)


def test_direct_batched_generate_counts_every_token(model_dirs) -> None:
    from serving.engine.backends.direct import direct_batched_generate

    seconds, tokens = direct_batched_generate(model_dirs["lm"], PROMPTS[:4], 7, device="cpu")
    assert tokens == 4 * 7
    assert seconds > 0


def test_seq2seq_models_are_not_served_yet(tmp_path) -> None:
    from transformers import BartConfig, BartForConditionalGeneration

    from tests.serving.engine.models import _byte_level_tokenizer

    tok = _byte_level_tokenizer()
    model_dir = tmp_path / "bart"
    BartForConditionalGeneration(
        BartConfig(
            vocab_size=len(tok),
            d_model=16,
            encoder_layers=1,
            decoder_layers=1,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=32,
            decoder_ffn_dim=32,
            max_position_embeddings=64,
        )
    ).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    spec = VersionSpec(1, "bart v1", str(model_dir), SERVE_GENERATE)
    with pytest.raises(ModelLoadError, match="seq2seq models are not served yet"):
        load_backend(spec, EngineSettings(device="cpu"))
