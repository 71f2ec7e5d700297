"""The inference process's settings: one dataclass, one validator (``__post_init__``).

``manage.py serve`` builds it from ``LLMHUB_SERVING_*`` environment settings, the bench and the
tests build it directly; every path ends in the same checks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields

_DEVICE = re.compile(r"auto|cpu|cuda(:[0-9]+)?")


@dataclass(frozen=True)
class EngineSettings:
    # Dynamic batching: a batch starts when it is full or when its first request has waited
    # max_wait_ms; requests that arrive while a batch runs join the next one.
    max_batch_size: int = 8
    max_wait_ms: float = 5.0
    # Requests admitted but not yet running, per loaded version; one more is answered 429 with
    # Retry-After at once (nothing waits unbounded).
    max_queue_depth: int = 64
    # Requests in flight in this process (running + waiting, all endpoints); over it: 429.
    max_concurrency: int = 256
    # "auto": CUDA when present (in bf16), else the CPU (float32).
    device: str = "auto"
    # Deterministic requests (temperature 0 or a seed) answered from memory; 0 turns it off.
    cache_entries: int = 1024
    # Largest request body, in bytes (413 above it).
    max_body_bytes: int = 1_000_000
    # Retry-After (seconds) sent with a full queue.
    queue_full_retry_after: float = 1.0

    def __post_init__(self) -> None:
        problems = []
        for name, low, high in (
            ("max_batch_size", 1, 256),
            ("max_wait_ms", 0, 1000),
            ("max_queue_depth", 1, 100_000),
            ("max_concurrency", 1, 100_000),
            ("cache_entries", 0, 1_000_000),
            ("max_body_bytes", 1_000, 100_000_000),
            ("queue_full_retry_after", 0, 120),
        ):
            value = getattr(self, name)
            whole = _FIELD_TYPES[name] in ("int", int)
            if isinstance(value, bool) or not isinstance(value, int if whole else int | float):
                kind = "a whole number" if whole else "a number"
                problems.append(f"{name} must be {kind} (got {value!r}).")
            elif not low <= value <= high:  # also refuses NaN
                problems.append(f"{name} must be between {low} and {high} (got {value}).")
        if not isinstance(self.device, str) or not _DEVICE.fullmatch(self.device):
            problems.append(f"device must be auto, cpu, cuda or cuda:N (got {self.device!r}).")
        if problems:
            raise ValueError(" ".join(problems))

    @classmethod
    def from_mapping(cls, values: dict[str, str]) -> EngineSettings:
        """Settings from strings (environment variables named after the fields, upper case,
        prefixed LLMHUB_SERVING_); unknown or absent names keep their defaults."""
        kwargs: dict = {}
        for f in fields(cls):
            raw = values.get(f"LLMHUB_SERVING_{f.name.upper()}")
            if raw is None or raw == "":
                continue
            if f.type in ("int", int):
                try:
                    kwargs[f.name] = int(raw)
                except ValueError as exc:
                    name = f"LLMHUB_SERVING_{f.name.upper()}"
                    raise ValueError(f"{name} must be an integer.") from exc
            elif f.type in ("float", float):
                try:
                    kwargs[f.name] = float(raw)
                except ValueError as exc:
                    raise ValueError(f"LLMHUB_SERVING_{f.name.upper()} must be a number.") from exc
            else:
                kwargs[f.name] = raw
        return cls(**kwargs)


# Field name -> its annotation ("int", "float", "str" under postponed annotations).
_FIELD_TYPES = {f.name: f.type for f in fields(EngineSettings)}
