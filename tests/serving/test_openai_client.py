"""The official ``openai`` client against the whole inference stack: uvicorn, the engine, the
runner reading endpoints and keys from the database and writing the request log back.

The stack runs in this process (``serving_stack``); one test runs the real ``manage.py serve``
in a subprocess on the test database.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import openai
import pytest
from django.db import connection
from django.db.models import F

from llmhub.jobs import wait_until
from serving import services
from serving.models import KeyUsage, RequestLog
from serving.runner import internal_token
from tests.serving.conftest import free_port, plain_engine

pytestmark = pytest.mark.django_db(transaction=True)

REPO_ROOT = Path(__file__).resolve().parents[2]


def _logs(stack, count: int) -> list[RequestLog]:
    """The request log once ``count`` rows are written (the writer is asked at once)."""
    stack.flush()
    assert wait_until(lambda: RequestLog.objects.count() >= count, timeout=10)
    return list(RequestLog.objects.order_by("id"))


def test_completions_and_chat_answer_with_usage_and_the_version(deployed, serving_stack) -> None:
    stack = serving_stack()
    client = stack.client(deployed.plaintext)
    raw = client.completions.with_raw_response.create(
        model="chat", prompt="Hello there", max_tokens=5, temperature=0
    )
    completion = raw.parse()
    assert completion.object == "text_completion" and completion.model == "chat"
    assert completion.id.startswith("cmpl-") and raw.headers["x-request-id"] == completion.id
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 5 and completion.usage.prompt_tokens > 0
    assert completion.usage.total_tokens == 5 + completion.usage.prompt_tokens
    assert completion.system_fingerprint == f"llmhub-v{deployed.version.pk}"
    assert raw.headers["x-llmhub-version"] == str(deployed.version.pk)
    assert raw.headers["x-llmhub-canary"] == "false"

    chat = client.chat.completions.create(
        model="chat",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        max_completion_tokens=3,
        n=2,
    )
    assert chat.object == "chat.completion" and len(chat.choices) == 2
    assert {c.message.role for c in chat.choices} == {"assistant"}
    assert chat.usage.completion_tokens == 6  # 3 per choice

    models = client.models.list()
    assert [m.id for m in models.data] == ["chat"]

    rows = _logs(stack, 2)
    assert [(r.route, r.status_code, r.key_id) for r in rows] == [
        ("completions", 200, deployed.key.pk),
        ("chat", 200, deployed.key.pk),
    ]
    first = rows[0]
    assert first.response_id == completion.id and first.version_id == deployed.version.pk
    assert first.prompt_tokens == completion.usage.prompt_tokens and first.completion_tokens == 5
    assert first.latency_ms > 0 and first.ttft_ms is not None and first.ttft_ms <= first.latency_ms
    assert first.prompt_text == "Hello there"
    assert first.completion_text == completion.choices[0].text


def test_streaming_with_usage_ends_with_a_usage_chunk(deployed, serving_stack) -> None:
    stack = serving_stack()
    client = stack.client(deployed.plaintext)
    whole = client.completions.create(model="chat", prompt="Once", max_tokens=6, temperature=0)
    chunks = list(
        client.completions.create(
            model="chat",
            prompt="Once",
            max_tokens=6,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    *text_chunks, last = chunks
    assert last.choices == [] and last.usage.completion_tokens == 6
    assert all(chunk.usage is None for chunk in text_chunks)
    assert "".join(c.choices[0].text for c in text_chunks) == whole.choices[0].text
    assert text_chunks[-1].choices[0].finish_reason == "length"

    chat_chunks = list(
        client.chat.completions.create(
            model="chat",
            messages=[{"role": "user", "content": "Hi"}],
            max_tokens=4,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chat_chunks[0].choices[0].delta.role == "assistant"
    assert chat_chunks[-1].choices == [] and chat_chunks[-1].usage.completion_tokens == 4
    rows = _logs(stack, 3)
    assert [r.stream for r in rows] == [False, True, True]
    assert rows[1].completion_tokens == 6 and rows[1].ttft_ms is not None


def test_errors_come_in_the_openai_envelope(deployed, serving_stack) -> None:
    stack = serving_stack()
    client = stack.client(deployed.plaintext)
    with pytest.raises(openai.NotFoundError) as unknown:
        client.completions.create(model="nope", prompt="x", max_tokens=1)
    assert unknown.value.code == "model_not_found"
    with pytest.raises(openai.AuthenticationError) as bad_key:
        stack.client("llmhub-sk-wrong").completions.create(model="chat", prompt="x", max_tokens=1)
    assert bad_key.value.status_code == 401
    with pytest.raises(openai.BadRequestError) as unsupported:
        client.completions.create(model="chat", prompt="x", max_tokens=1, logprobs=2)
    assert unsupported.value.param == "logprobs"
    assert "not supported" in unsupported.value.message
    with pytest.raises(openai.BadRequestError) as too_long:
        client.completions.create(model="chat", prompt="x", max_tokens=100_000)
    assert too_long.value.param == "max_tokens"
    # Another team's key (their project has no such model) cannot find this one.
    other_key, other_plaintext = services.serving_key_create(
        actor=deployed.world.outsider, project=deployed.world.other_project, name="theirs"
    )
    stack.sync()
    with pytest.raises(openai.NotFoundError):
        stack.client(other_plaintext).completions.create(model="chat", prompt="x", max_tokens=1)
    # A refusal is logged once it names an endpoint (the others have no endpoint to log under).
    rows = _logs(stack, 1)
    assert [(r.status_code, r.error_code, r.key_id) for r in rows] == [
        (400, "context_length_exceeded", deployed.key.pk)
    ]
    assert other_key.pk not in {r.key_id for r in rows}


def test_a_revoked_key_is_refused_once_the_revocation_reaches_the_engine(
    deployed, serving_stack
) -> None:
    stack = serving_stack(sync_seconds=0.1)  # the poller, not a forced sync
    client = stack.client(deployed.plaintext)
    client.completions.create(model="chat", prompt="x", max_tokens=1)
    services.serving_key_revoke(actor=deployed.manager, key=deployed.key)

    def refused() -> bool:
        try:
            client.completions.create(model="chat", prompt="x", max_tokens=1)
        except openai.AuthenticationError as exc:
            return "revoked" in exc.message
        return False

    assert wait_until(refused, timeout=10)


def test_a_rate_limit_answers_429_and_the_client_recovers_by_retrying(
    deployed, serving_stack, monkeypatch
) -> None:
    from serving.engine import limits

    # A 2-second window instead of a minute: the client's wait (Retry-After) stays short.
    monkeypatch.setattr(limits, "WINDOW_SECONDS", 2.0)
    key, plaintext = deployed.new_key(requests_per_minute=2)
    stack = serving_stack()
    client = stack.client(plaintext)
    for _ in range(2):
        raw = client.completions.with_raw_response.create(model="chat", prompt="x", max_tokens=1)
    assert raw.headers["x-ratelimit-limit-requests"] == "2"
    assert raw.headers["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(openai.RateLimitError) as limited:
        client.completions.create(model="chat", prompt="x", max_tokens=1)
    retry_after = float(limited.value.response.headers["retry-after"])
    assert 1 <= retry_after <= 2

    started = time.monotonic()
    raw = client.with_options(max_retries=3).completions.with_raw_response.create(
        model="chat", prompt="x", max_tokens=1
    )
    assert raw.parse().choices[0].finish_reason in ("length", "stop")  # sampled: may end early
    assert raw.retries_taken >= 1  # it was refused, waited Retry-After, and got through
    assert time.monotonic() - started >= 0.5
    refused = 1 + raw.retries_taken
    statuses = Counter(r.status_code for r in _logs(stack, 3 + refused) if r.key_id == key.pk)
    assert statuses == {200: 3, 429: refused}


def test_a_spent_budget_is_refused_without_retries_and_outlives_a_restart(
    deployed, serving_stack
) -> None:
    key, plaintext = deployed.new_key(token_budget=12)
    stack = serving_stack()
    client = stack.client(plaintext, max_retries=3)
    # Greedy, so the answer is the same every run; prompt + answer spend the budget.
    first = client.completions.create(
        model="chat", prompt="Hello there", max_tokens=12, temperature=0
    )
    spent_tokens = first.usage.total_tokens
    assert spent_tokens >= 12
    started = time.monotonic()
    with pytest.raises(openai.RateLimitError) as spent:
        client.completions.create(model="chat", prompt="x", max_tokens=1)
    assert time.monotonic() - started < 1  # x-should-retry: false, so the client did not wait
    assert spent.value.response.headers["x-should-retry"] == "false"
    assert spent.value.code == "insufficient_quota"
    # A process started later learns the usage from the database (KeyUsage), not from memory.
    assert wait_until(
        lambda: (
            stack.flush() >= 0
            and KeyUsage.objects.filter(key=key)
            .annotate(spent=F("prompt_tokens") + F("completion_tokens"))
            .filter(spent__gte=spent_tokens)
            .exists()
        ),
        timeout=10,
    )
    fresh = serving_stack()
    with pytest.raises(openai.RateLimitError):
        fresh.client(plaintext).completions.create(model="chat", prompt="x", max_tokens=1)


def test_with_store_text_off_the_log_keeps_counts_and_no_text(deployed, serving_stack) -> None:
    services.endpoint_update(actor=deployed.manager, endpoint=deployed.endpoint, store_text=False)
    stack = serving_stack()
    client = stack.client(deployed.plaintext)
    client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "my secret"}], max_tokens=3
    )
    list(client.completions.create(model="chat", prompt="my secret", max_tokens=2, stream=True))
    rows = _logs(stack, 2)
    assert [(r.prompt_text, r.completion_text) for r in rows] == [(None, None), (None, None)]
    assert [r.completion_tokens for r in rows] == [3, 2]
    assert all(r.prompt_tokens > 0 and r.latency_ms > 0 for r in rows)


def test_the_playground_token_reaches_any_endpoint_of_the_named_project(
    deployed, serving_stack
) -> None:
    stack = serving_stack()
    playground = stack.client(
        internal_token(), default_headers={"X-LLMHub-Project": str(deployed.world.project.pk)}
    )
    answer = playground.completions.create(model="chat", prompt="x", max_tokens=2)
    assert answer.usage.completion_tokens == 2
    other = stack.client(
        internal_token(),
        default_headers={"X-LLMHub-Project": str(deployed.world.other_project.pk)},
    )
    with pytest.raises(openai.NotFoundError):
        other.completions.create(model="chat", prompt="x", max_tokens=1)
    row = _logs(stack, 1)[0]
    assert (row.source, row.key_id, row.status_code) == ("playground", None, 200)


def _traffic(client, stop: threading.Event, seen: Counter, failures: list) -> None:
    while not stop.is_set():
        try:
            raw = client.completions.with_raw_response.create(
                model="chat", prompt="Hello", max_tokens=2
            )
            seen[raw.headers["x-llmhub-version"]] += 1
        except Exception as exc:  # every failure is what the test counts
            failures.append(repr(exc))


def test_promotion_and_rollback_under_traffic_fail_no_request(deployed, serving_stack) -> None:
    stack = serving_stack(sync_seconds=0.1)
    client = stack.client(deployed.plaintext)
    first = str(deployed.version.pk)
    second_version = deployed.new_version()
    second = str(second_version.pk)
    stop, seen, failures = threading.Event(), Counter(), []
    threads = [
        threading.Thread(target=_traffic, args=(client, stop, seen, failures)) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    try:
        assert wait_until(lambda: seen[first] >= 10, timeout=20)
        deployed.promote(second_version)  # the poller brings it to the engine
        assert wait_until(lambda: seen[second] >= 10, timeout=20)
        services.endpoint_rollback(actor=deployed.manager, endpoint=deployed.endpoint)
        after_rollback = seen[first]
        assert wait_until(lambda: seen[first] >= after_rollback + 10, timeout=20)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert failures == []
    assert set(seen) == {first, second}
    rows = _logs(stack, sum(seen.values()))
    assert {r.status_code for r in rows} == {200}
    assert {r.version_id for r in rows} == {deployed.version.pk, second_version.pk}


def test_a_canary_gets_its_share_of_the_traffic(deployed, serving_stack) -> None:
    canary = deployed.new_version()
    services.endpoint_set_canary(
        actor=deployed.manager, endpoint=deployed.endpoint, version=canary, percent=25
    )
    stack = serving_stack()
    client = stack.client(deployed.plaintext)
    seen: Counter = Counter()
    lock = threading.Lock()

    def send(count: int) -> None:
        for _ in range(count):
            raw = client.completions.with_raw_response.create(
                model="chat", prompt="Hi", max_tokens=1
            )
            with lock:
                seen[(raw.headers["x-llmhub-version"], raw.headers["x-llmhub-canary"])] += 1

    threads = [threading.Thread(target=send, args=(100,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert sum(seen.values()) == 400
    assert set(seen) == {(str(deployed.version.pk), "false"), (str(canary.pk), "true")}
    share = seen[(str(canary.pk), "true")] / 400
    assert 0.17 <= share <= 0.33, seen  # 25% +- 3.7 standard deviations
    rows = _logs(stack, 400)
    assert sum(r.canary for r in rows) == seen[(str(canary.pk), "true")]


def test_an_external_engine_endpoint_forwards_to_the_upstream(deployed, serving_stack) -> None:
    upstream_http, upstream_state, upstream_sink = plain_engine(
        deployed.model_dir, slug="their-model", api_key="upstream-secret"
    )
    try:
        services.endpoint_create(
            actor=deployed.manager,
            project=deployed.world.project,
            name="Big",
            slug="big",
            engine="external",
            upstream_url=f"{upstream_http.url}/v1",
            upstream_model="their-model",
            upstream_api_key="upstream-secret",
        )
        stack = serving_stack()
        client = stack.client(deployed.plaintext)
        assert sorted(m.id for m in client.models.list().data) == ["big", "chat"]
        answer = client.completions.create(model="big", prompt="Hello", max_tokens=3)
        assert answer.model == "big" and answer.usage.completion_tokens == 3
        chunks = list(
            client.chat.completions.create(
                model="big",
                messages=[{"role": "user", "content": "Hi"}],
                max_tokens=4,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        assert {c.model for c in chunks} == {"big"}
        assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4
        # Our key, limits and log in front; the upstream saw its own key.
        rows = _logs(stack, 2)
        assert [(r.route, r.status_code, r.key_id, r.version_id) for r in rows] == [
            ("completions", 200, deployed.key.pk, None),
            ("chat", 200, deployed.key.pk, None),
        ]
        assert rows[0].completion_tokens == 3 and rows[1].completion_tokens == 4
        assert [r.key_id for r in upstream_sink.records] == [1, 1]
    finally:
        upstream_http.stop()
        upstream_state.close()


def _serve(env_extra: dict, log_path: Path, port: int) -> subprocess.Popen:
    env = os.environ | {
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "LLMHUB_TEST_WORKER_DB": str(connection.settings_dict["NAME"]),
        "PYTHONUNBUFFERED": "1",
        **env_extra,
    }
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "manage.py", "serve", "--port", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def test_manage_py_serve_serves_and_writes_its_log_when_stopped(deployed, tmp_path) -> None:
    port = free_port()
    log_path = tmp_path / "serve.log"
    # A flush timer longer than the test: the rows can only come from the flush at SIGTERM.
    process = _serve({"LLMHUB_SERVING_LOG_FLUSH_SECONDS": "600"}, log_path, port)
    try:

        def healthy() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        assert wait_until(healthy, timeout=60), log_path.read_text()
        assert f"http://127.0.0.1:{port}/v1" in log_path.read_text()
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=deployed.plaintext)
        answer = client.completions.create(model="chat", prompt="Hi", max_tokens=3)
        assert answer.usage.completion_tokens == 3
        time.sleep(0.5)
        assert not RequestLog.objects.exists()  # still queued in the process

        os.killpg(process.pid, signal.SIGTERM)
        assert process.wait(20) == 0, log_path.read_text()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
    row = RequestLog.objects.get()
    assert (row.response_id, row.completion_tokens) == (answer.id, 3)
    assert "1 request log records written" in log_path.read_text()


def test_manage_py_serve_refuses_bad_settings_with_the_reason(transactional_db, tmp_path) -> None:
    log_path = tmp_path / "serve.log"
    process = _serve({"LLMHUB_SERVING_MAX_BATCH_SIZE": "0"}, log_path, free_port())
    assert process.wait(60) == 1
    assert "max_batch_size must be between 1 and 256 (got 0)" in log_path.read_text()
