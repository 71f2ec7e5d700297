"""The inference process's settings: every bad value is refused with its name, at once."""

from __future__ import annotations

import dataclasses
import math

import pytest

from serving.engine.config import EngineSettings


def test_the_defaults_are_valid_and_frozen():
    settings = EngineSettings()
    assert settings.max_batch_size == 8 and settings.device == "auto"
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.max_batch_size = 2


@pytest.mark.parametrize(
    "name, low, high",
    [
        ("max_batch_size", 1, 256),
        ("max_wait_ms", 0, 1000),
        ("max_queue_depth", 1, 100_000),
        ("max_concurrency", 1, 100_000),
        ("cache_entries", 0, 1_000_000),
        ("max_body_bytes", 1_000, 100_000_000),
        ("queue_full_retry_after", 0, 120),
    ],
)
def test_each_number_has_its_range(name, low, high):
    assert getattr(EngineSettings(**{name: low}), name) == low
    assert getattr(EngineSettings(**{name: high}), name) == high
    for bad in (low - 1, high + 1):
        with pytest.raises(ValueError, match=f"{name} must be between {low} and {high}"):
            EngineSettings(**{name: bad})


@pytest.mark.parametrize("name", ["max_batch_size", "max_queue_depth", "cache_entries"])
def test_counts_must_be_whole_numbers(name):
    with pytest.raises(ValueError, match=f"{name} must be a whole number"):
        EngineSettings(**{name: 2.5})
    with pytest.raises(ValueError, match=f"{name} must be a whole number"):
        EngineSettings(**{name: 4.0})  # a count is an int, even when the float is whole


@pytest.mark.parametrize("bad", [True, "8", None, math.nan, math.inf])
def test_not_a_number_is_refused(bad):
    with pytest.raises(ValueError, match="max_wait_ms must be"):
        EngineSettings(max_wait_ms=bad)


def test_times_may_be_fractional():
    assert EngineSettings(max_wait_ms=0.5, queue_full_retry_after=1).max_wait_ms == 0.5


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_devices(device):
    assert EngineSettings(device=device).device == device


@pytest.mark.parametrize(
    "device", ["", "gpu", "CUDA", "cudafoo", "cuda:", "cuda:x", "cuda:-1", None]
)
def test_unknown_devices_are_refused(device):
    with pytest.raises(ValueError, match="device must be auto, cpu, cuda or cuda:N"):
        EngineSettings(device=device)


def test_every_problem_is_named_in_one_error():
    with pytest.raises(ValueError) as info:
        EngineSettings(max_batch_size=0, max_body_bytes=10, device="tpu")
    message = str(info.value)
    assert "max_batch_size" in message and "max_body_bytes" in message and "device" in message


def test_from_mapping_reads_the_environment_names():
    settings = EngineSettings.from_mapping(
        {
            "LLMHUB_SERVING_MAX_BATCH_SIZE": "16",
            "LLMHUB_SERVING_MAX_WAIT_MS": "2.5",
            "LLMHUB_SERVING_DEVICE": "cpu",
            "LLMHUB_SERVING_CACHE_ENTRIES": "",  # empty: the default
            "LLMHUB_SERVING_URL": "http://127.0.0.1:8001",  # the web process's, not ours
            "PATH": "/usr/bin",
        }
    )
    assert settings == EngineSettings(max_batch_size=16, max_wait_ms=2.5, device="cpu")


@pytest.mark.parametrize(
    "values, message",
    [
        (
            {"LLMHUB_SERVING_MAX_BATCH_SIZE": "8.0"},
            "LLMHUB_SERVING_MAX_BATCH_SIZE must be an integer",
        ),
        (
            {"LLMHUB_SERVING_MAX_BATCH_SIZE": "many"},
            "LLMHUB_SERVING_MAX_BATCH_SIZE must be an integer",
        ),
        ({"LLMHUB_SERVING_MAX_WAIT_MS": "soon"}, "LLMHUB_SERVING_MAX_WAIT_MS must be a number"),
        ({"LLMHUB_SERVING_MAX_WAIT_MS": "nan"}, "max_wait_ms must be between"),
        ({"LLMHUB_SERVING_MAX_QUEUE_DEPTH": "0"}, "max_queue_depth must be between"),
        ({"LLMHUB_SERVING_DEVICE": "metal"}, "device must be"),
    ],
)
def test_from_mapping_refuses_bad_strings(values, message):
    with pytest.raises(ValueError, match=message):
        EngineSettings.from_mapping(values)
