"""The benchmarks' switch that turns the inference process's request log off."""

from __future__ import annotations

from serving.runner import REQUEST_LOG_SWITCH, ServingRunner
from tests.serving.builders import request_record


class _Endpoint:
    pk = 1
    version_id = None


def test_the_request_log_is_on_unless_switched_off(monkeypatch) -> None:
    monkeypatch.delenv(REQUEST_LOG_SWITCH, raising=False)
    runner = ServingRunner()
    runner.sink.put(request_record(_Endpoint()))
    assert len(runner.sink) == 1

    monkeypatch.setenv(REQUEST_LOG_SWITCH, "off")
    runner = ServingRunner()
    runner.sink.put(request_record(_Endpoint()))
    assert len(runner.sink) == 0 and runner.sink.dropped == 0
