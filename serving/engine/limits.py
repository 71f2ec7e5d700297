"""Per-key limits: requests and tokens per minute, and a token budget per period.

**Per-minute limits** use a sliding 60 s window log: every admitted request is an entry
``(time, tokens)``; an entry counts while ``now < time + 60``. A request is admitted when the
entries in the window leave room for it (one more request; its reservation of prompt +
max_tokens tokens). ``retry_after`` is the real time until enough entries leave the window, at
least 1 s and never above 120 s (the ``openai`` client does not retry above two minutes).
:meth:`RateLimiter.settle` replaces the reservation by what was really used, in place (the
entry keeps its time), so a burst of long requests cannot overshoot the window, and short
answers give their unused tokens back at once.

With ``redis_url`` the windows live in Redis (two sorted sets and a hash per key, checked and
reserved atomically by one Lua script), so several inference processes behind a load balancer
share them. Times come from this process's clock (the processes' clocks must agree, as NTP
keeps them); if Redis is unreachable a process falls back to its own windows and logs it
rather than refusing traffic.

**The token budget** is per process: the snapshot's ``budget_used`` (what the database had when
the runner built it) plus what this process settled since, plus its reservations in flight. A
budget is exhausted when that reaches ``token_budget``: a request is refused only once the
budget is spent, so the last admitted request may overshoot it by its own size. Refusals say
``x-should-retry: false``. Several processes may each overshoot by what they used since the
last snapshot (the runner refreshes it often).

No double count: settled usage is kept with its time. The runner drains the engine's records
into the database, notes ``t`` = the time just before it took the batch it wrote, reads
``budget_used`` back and calls ``sync_keys(keys, usage_flushed_before=t)``: local usage
settled before ``t`` is then in the snapshot and is dropped; later usage is kept until the
next snapshot. ``usage_flushed_before=None`` means the snapshot includes everything settled so
far. When a period ends (``budget_resets_at`` passed) before a new snapshot brings the next
one, the old ``budget_used`` no longer counts, only usage settled since the reset.

Headers (OpenAI's names): ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` and
``x-ratelimit-{limit,remaining,reset}-budget``; a dimension without a limit is left out. Reset
times are durations in Go's style, as OpenAI sends them: ``"850ms"``, ``"12s"``, ``"1m30.5s"``,
``"6m0s"``, ``"26h0m0s"``: the time until the window is empty again (until the period ends for
the budget).

Plain Python: no Django, no Celery. Thread-safe (one lock); the Redis calls are synchronous
and short (one round trip per admission).
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from serving.engine.types import KeySpec

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60.0
MAX_RETRY_AFTER = 120.0  # the openai client ignores a larger Retry-After (and does not retry)
MIN_RETRY_AFTER = 1.0
# A reservation never settled (a bug in the caller) stops holding budget after this long.
STALE_RESERVATION_SECONDS = 3600.0

KIND_REQUESTS = "requests"
KIND_TOKENS = "tokens"
KIND_BUDGET = "budget"


@dataclass
class Admission:
    """An admitted request: what it reserved, and the headers to put on its answer."""

    key_id: int
    reserved_tokens: int
    headers: dict[str, str]
    admission_id: int = 0  # settles this admission (private to the limiter that made it)


class LimitExceeded(Exception):
    """A refusal: answer 429 with ``headers`` and ``message``.

    ``code`` is OpenAI's error code: ``rate_limit_exceeded``, or ``insufficient_quota`` for an
    exhausted budget. ``retryable`` is False for a spent budget and for a request the limit can
    never admit (bigger than the tokens-per-minute limit, or a limit of 0).
    """

    def __init__(
        self,
        *,
        kind: str,
        retry_after: float,
        headers: dict[str, str],
        message: str,
        retryable: bool = True,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.retry_after = retry_after
        self.headers = headers
        self.message = message
        self.retryable = retryable
        self.code = "insufficient_quota" if kind == KIND_BUDGET else "rate_limit_exceeded"


def format_duration(seconds: float) -> str:
    """A duration in Go's style, as OpenAI's ``x-ratelimit-reset-*`` headers: 850ms, 12s,
    1m30.5s, 6m0s, 2h0m0s (rounded up to the millisecond)."""
    ms = max(0, math.ceil(round(seconds * 1000, 6)))
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def clamp_retry_after(seconds: float) -> float:
    """What a client is told to wait: at least 1 s, at most 120 s."""
    return min(MAX_RETRY_AFTER, max(MIN_RETRY_AFTER, seconds))


def _retry_headers(retry_after: float, *, retryable: bool) -> dict[str, str]:
    headers = {
        "retry-after": str(math.ceil(retry_after)),
        # The openai client prefers this one (and so waits 1.2 s rather than 2 s).
        "retry-after-ms": str(math.ceil(retry_after * 1000)),
    }
    if not retryable:
        headers["x-should-retry"] = "false"
    return headers


@dataclass
class _WindowResult:
    """One window check: refused (kind set) or admitted/peeked, with the header figures."""

    refused: str = ""  # "", KIND_REQUESTS or KIND_TOKENS
    retry_after: float = 0.0
    never: bool = False  # the limit can never admit this request
    requests_used: int = 0
    requests_reset: float = 0.0
    tokens_used: int = 0
    tokens_reset: float = 0.0


def _retry_for_requests(times: list[float], limit: int, now: float) -> tuple[float, bool]:
    """Seconds until one more request fits under ``limit`` (times in order); never?"""
    if limit <= 0:
        return MAX_RETRY_AFTER, True
    # count - limit + 1 entries must leave: the one at index count - limit is the last of them.
    return times[len(times) - limit] + WINDOW_SECONDS - now, False


def _retry_for_tokens(
    entries: list[tuple[float, int]], limit: int, need: int, now: float
) -> tuple[float, bool]:
    """Seconds until ``need`` more tokens fit under ``limit`` (entries in time order)."""
    if need > limit:
        return MAX_RETRY_AFTER, True
    excess = sum(tokens for _, tokens in entries) + need - limit
    freed = 0
    for stamp, tokens in entries:
        freed += tokens
        if freed >= excess:
            return stamp + WINDOW_SECONDS - now, False
    return WINDOW_SECONDS, False  # not reached: the entries hold the excess


@dataclass
class _Window:
    """One key's window in this process."""

    times: deque[float] = field(default_factory=deque)  # admitted requests, oldest first
    # member -> [time, tokens], oldest first (dicts keep insertion order).
    entries: dict[str, list] = field(default_factory=dict)
    tokens: int = 0  # the sum of the entries' tokens, kept as they come and go


class _LocalWindows:
    """The sliding windows of this process (callers hold the limiter's lock). An admission
    costs O(1) plus the entries that leave the window; only a refusal walks the window."""

    def __init__(self) -> None:
        self._windows: dict[int, _Window] = {}

    def _prune(self, key_id: int, now: float) -> _Window:
        cutoff = now - WINDOW_SECONDS
        window = self._windows.get(key_id)
        if window is None:
            window = self._windows[key_id] = _Window()
        times, entries = window.times, window.entries
        while times and times[0] <= cutoff:
            times.popleft()
        while entries:
            first = next(iter(entries))
            stamp, tokens = entries[first]
            if stamp > cutoff:
                break
            del entries[first]
            window.tokens -= tokens
        return window

    def check(
        self,
        key_id: int,
        now: float,
        rpm: int | None,
        tpm: int | None,
        reserve: int,
        member: str | None,
    ) -> _WindowResult:
        """Admit (reserve) when ``member`` is given and there is room, else only look."""
        window = self._prune(key_id, now)
        times, entries = window.times, window.entries
        result = _WindowResult(requests_used=len(times), tokens_used=window.tokens)
        if member is not None:
            if rpm is not None and len(times) >= rpm:
                result.refused = KIND_REQUESTS
                result.retry_after, result.never = _retry_for_requests(list(times), rpm, now)
            elif tpm is not None and window.tokens + reserve > tpm:
                result.refused = KIND_TOKENS
                token_list = [(stamp, tokens) for stamp, tokens in entries.values()]
                result.retry_after, result.never = _retry_for_tokens(token_list, tpm, reserve, now)
            else:
                if rpm is not None:
                    times.append(now)
                    result.requests_used += 1
                if tpm is not None:
                    entries[member] = [now, reserve]
                    window.tokens += reserve
                    result.tokens_used += reserve
        result.requests_reset = times[-1] + WINDOW_SECONDS - now if times else 0.0
        result.tokens_reset = (
            entries[next(reversed(entries))][0] + WINDOW_SECONDS - now if entries else 0.0
        )
        return result

    def settle(self, key_id: int, member: str, tokens: int) -> None:
        window = self._windows.get(key_id)
        entry = window.entries.get(member) if window is not None else None
        if entry is not None:  # else it has left the window already
            window.tokens += tokens - entry[1]
            entry[1] = tokens

    def forget(self, key_ids: set[int]) -> None:
        for key_id in key_ids:
            self._windows.pop(key_id, None)


# KEYS: requests zset (member -> time), tokens zset (member -> time), tokens hash (member ->
# tokens), tokens sum (the hash's total, kept as entries come and go). ARGV: now, window, rpm
# (-1: none), tpm (-1: none), reserve, member ("" = only look). Returns {refused (0 none,
# 1 requests, 2 tokens), retry_after, never (0/1), requests used, requests reset, tokens used,
# tokens reset}; floats as strings (a Lua number returned becomes an integer). Every write sets
# all four keys to expire together a second after the window would be empty.
_CHECK_SCRIPT = """
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local rpm = tonumber(ARGV[3])
local tpm = tonumber(ARGV[4])
local reserve = tonumber(ARGV[5])
local member = ARGV[6]
local ttl = math.ceil(window * 1000) + 1000
-- Scores go to Redis as full-precision strings (a Lua number would be cut to 14 digits).
local cutoff = string.format('%.17g', now - window)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', cutoff)
local used = tonumber(redis.call('GET', KEYS[4]) or '0')
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', cutoff)
if #expired > 0 then
  for _, m in ipairs(expired) do
    used = used - tonumber(redis.call('HGET', KEYS[3], m) or '0')
    redis.call('HDEL', KEYS[3], m)
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', cutoff)
  if used < 0 then used = 0 end
  redis.call('SET', KEYS[4], used, 'PX', ttl)
end
local req_count = redis.call('ZCARD', KEYS[1])

local refused, retry, never = 0, 0, 0
if member ~= '' then
  if rpm >= 0 and req_count >= rpm then
    refused = 1
    if rpm <= 0 then
      retry, never = 120, 1
    else
      local e = redis.call('ZRANGE', KEYS[1], req_count - rpm, req_count - rpm, 'WITHSCORES')
      retry = tonumber(e[2]) + window - now
    end
  elseif tpm >= 0 and used + reserve > tpm then
    refused = 2
    if reserve > tpm then
      retry, never = 120, 1
    else
      -- Walk the window from its oldest entry until enough tokens would have left it.
      local excess, freed = used + reserve - tpm, 0
      local tok = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
      retry = window
      for i = 1, #tok, 2 do
        freed = freed + tonumber(redis.call('HGET', KEYS[3], tok[i]) or '0')
        if freed >= excess then retry = tonumber(tok[i + 1]) + window - now; break end
      end
    end
  else
    if rpm >= 0 then
      redis.call('ZADD', KEYS[1], ARGV[1], member)
      redis.call('PEXPIRE', KEYS[1], ttl)
      req_count = req_count + 1
    end
    if tpm >= 0 then
      redis.call('ZADD', KEYS[2], ARGV[1], member)
      redis.call('HSET', KEYS[3], member, reserve)
      used = used + reserve
      redis.call('SET', KEYS[4], used, 'PX', ttl)
      redis.call('PEXPIRE', KEYS[2], ttl)
      redis.call('PEXPIRE', KEYS[3], ttl)
    end
  end
end

local req_reset, tok_reset = 0, 0
if req_count > 0 then
  local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  req_reset = tonumber(last[2]) + window - now
end
local last_tok = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
if #last_tok > 0 then tok_reset = tonumber(last_tok[2]) + window - now end
return {refused, tostring(retry), never, req_count, tostring(req_reset), used, tostring(tok_reset)}
"""

# KEYS: tokens zset, tokens hash, tokens sum. ARGV: member, tokens, ttl (ms). Only while the
# entry is in the window (else its reservation has left the sum already).
_SETTLE_SCRIPT = """
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  local old = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
  local used = tonumber(redis.call('GET', KEYS[3]) or '0') + tonumber(ARGV[2]) - old
  if used < 0 then used = 0 end
  redis.call('SET', KEYS[3], used, 'PX', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
return 0
"""


class _RedisWindows:
    """The sliding windows in Redis, shared by every process using the same prefix."""

    def __init__(self, url: str, prefix: str) -> None:
        import redis  # here, so that a process without Redis never needs the package

        self._client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self._prefix = prefix
        self._check = self._client.register_script(_CHECK_SCRIPT)
        self._settle = self._client.register_script(_SETTLE_SCRIPT)
        self.errors = redis.RedisError

    def _keys(self, key_id: int) -> list[str]:
        # One hash tag per key: its three keys land on the same Redis Cluster slot.
        base = f"{self._prefix}{{{key_id}}}"
        return [f"{base}:req", f"{base}:tok", f"{base}:tokn", f"{base}:toksum"]

    def check(
        self,
        key_id: int,
        now: float,
        rpm: int | None,
        tpm: int | None,
        reserve: int,
        member: str | None,
    ) -> _WindowResult:
        args = [
            repr(now),
            repr(WINDOW_SECONDS),
            -1 if rpm is None else rpm,
            -1 if tpm is None else tpm,
            reserve,
            member or "",
        ]
        out = self._check(keys=self._keys(key_id), args=args)
        codes = {0: "", 1: KIND_REQUESTS, 2: KIND_TOKENS}
        return _WindowResult(
            refused=codes[int(out[0])],
            retry_after=float(out[1]),
            never=bool(int(out[2])),
            requests_used=int(out[3]),
            requests_reset=float(out[4]),
            tokens_used=int(out[5]),
            tokens_reset=float(out[6]),
        )

    def settle(self, key_id: int, member: str, tokens: int) -> None:
        ttl = math.ceil(WINDOW_SECONDS * 1000) + 1000
        self._settle(keys=self._keys(key_id)[1:], args=[member, tokens, ttl])

    def forget(self, key_ids: set[int]) -> None:
        """Nothing to do: Redis expires a key's window a minute after its last request."""


@dataclass
class _Budget:
    """What a key used of its budget: the snapshot's figure plus this process's since, with
    running totals (an admission does not add the list up)."""

    baseline: int = 0
    resets_at: float | None = None
    settled: list[tuple[float, int]] = field(default_factory=list)  # (time settled, tokens)
    reserved: dict[int, tuple[float, int]] = field(default_factory=dict)  # id -> (time, tokens)
    settled_total: int = 0
    reserved_total: int = 0

    def used(self, now: float) -> int:
        if self.resets_at is not None and now >= self.resets_at:
            # The snapshot's period is over and no new snapshot came yet: only what was used
            # since the reset counts toward the next period.
            since = sum(t for stamp, t in self.settled if stamp >= self.resets_at)
            return since + self.reserved_total
        return self.baseline + self.settled_total + self.reserved_total

    def reserve(self, admission_id: int, now: float, tokens: int) -> None:
        self.reserved[admission_id] = (now, tokens)
        self.reserved_total += tokens

    def release(self, admission_id: int) -> None:
        entry = self.reserved.pop(admission_id, None)
        if entry is not None:
            self.reserved_total -= entry[1]

    def settle(self, now: float, tokens: int) -> None:
        self.settled.append((now, tokens))
        self.settled_total += tokens

    def keep_settled_since(self, start: float) -> None:
        self.settled = [(stamp, t) for stamp, t in self.settled if stamp >= start]
        self.settled_total = sum(t for _, t in self.settled)


@dataclass
class _Pending:
    key_id: int
    member: str
    shared: bool  # reserved in Redis (else in this process's windows)
    windowed: bool  # has a tokens-per-minute entry to settle
    budgeted: bool  # holds budget
    admitted_at: float


class RateLimiter:
    """Admits or refuses a key's requests; see the module docstring for the rules."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        redis_url: str | None = None,
        redis_prefix: str = "llmhub:ratelimit:",
    ) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._local = _LocalWindows()
        self._redis = _RedisWindows(redis_url, redis_prefix) if redis_url else None
        self._budgets: dict[int, _Budget] = {}
        self._pending: dict[int, _Pending] = {}
        self._ids = itertools.count(1)
        self._process = uuid.uuid4().hex[:12]  # makes window members unique across processes
        self._redis_warned_at = -math.inf

    # -- snapshots ------------------------------------------------------------------------

    def sync_keys(
        self, keys: Iterable[KeySpec], *, usage_flushed_before: float | None = None
    ) -> None:
        """Take a new snapshot's keys. Usage settled before ``usage_flushed_before`` is in the
        snapshot's ``budget_used`` and stops counting locally (None: all usage settled so far
        is in it); keys no longer in the snapshot are forgotten."""
        with self._lock:
            now = self._clock()
            # None: the snapshot has everything settled so far.
            flushed = math.inf if usage_flushed_before is None else usage_flushed_before
            seen: set[int] = set()
            for key in keys:
                seen.add(key.key_id)
                budget = self._budgets.setdefault(key.key_id, _Budget())
                old_reset = budget.resets_at
                budget.baseline = key.budget_used
                budget.resets_at = key.budget_resets_at
                start = flushed
                if old_reset is not None and old_reset <= now:
                    start = max(start, old_reset)  # usage before the reset was the old period's
                budget.keep_settled_since(start)
            stale = now - STALE_RESERVATION_SECONDS
            for admission_id, pending in list(self._pending.items()):
                if pending.admitted_at < stale:
                    log.warning(
                        "Admission %s was never settled; its reservation is dropped.", admission_id
                    )
                    del self._pending[admission_id]
                    budget = self._budgets.get(pending.key_id)
                    if budget is not None:
                        budget.release(admission_id)
            gone = set(self._budgets) - seen
            for key_id in gone:
                del self._budgets[key_id]
            self._local.forget(gone)

    # -- requests -------------------------------------------------------------------------

    def admit(self, key: KeySpec, *, reserve_tokens: int) -> Admission:
        """Admit one request reserving ``reserve_tokens`` (prompt + max_tokens), or raise
        :class:`LimitExceeded`."""
        rpm, tpm, budget_limit = key.requests_per_minute, key.tokens_per_minute, key.token_budget
        reserve = max(0, int(reserve_tokens))
        if rpm is None and tpm is None and budget_limit is None:
            return Admission(key_id=key.key_id, reserved_tokens=reserve, headers={})
        with self._lock:
            now = self._clock()
            budget = self._budget(key)
            budget_used = budget.used(now)
            if budget_limit is not None and budget_used >= budget_limit:
                window = self._check(key, now, None, reserve)
                headers = self._headers(key, window, budget_used, now)
                raise self._budget_refusal(key, budget_used, now, headers)
            admission_id = next(self._ids)
            member = f"{self._process}:{admission_id}"
            window, shared = self._check_shared(key, now, member, reserve)
            if window.refused:
                headers = self._headers(key, window, budget_used, now)
                raise self._window_refusal(key, window, reserve, headers)
            if budget_limit is not None:
                budget.reserve(admission_id, now, reserve)
                budget_used += reserve
            if tpm is not None or budget_limit is not None:  # else settle has nothing to do
                self._pending[admission_id] = _Pending(
                    key_id=key.key_id,
                    member=member,
                    shared=shared,
                    windowed=tpm is not None,
                    budgeted=budget_limit is not None,
                    admitted_at=now,
                )
            headers = self._headers(key, window, budget_used, now)
        return Admission(
            key_id=key.key_id, reserved_tokens=reserve, headers=headers, admission_id=admission_id
        )

    def settle(self, admission: Admission, *, used_tokens: int) -> None:
        """Replace the admission's reservation by what it really used (prompt + completion,
        also for a stream aborted midway). A second settle of the same admission does nothing."""
        used = max(0, int(used_tokens))
        with self._lock:
            pending = self._pending.pop(admission.admission_id, None)
            if pending is None:
                return  # unlimited key, settled already, or its key left the snapshot
            now = self._clock()
            budget = self._budgets.get(pending.key_id)
            if pending.budgeted and budget is not None:
                budget.release(admission.admission_id)
                budget.settle(now, used)
            if pending.windowed:
                if pending.shared and self._redis is not None:
                    try:
                        self._redis.settle(pending.key_id, pending.member, used)
                    except self._redis.errors as exc:
                        log.warning(
                            "Redis unreachable; settle of key %s lost: %s", pending.key_id, exc
                        )
                else:
                    self._local.settle(pending.key_id, pending.member, used)

    def headers(self, key: KeySpec) -> dict[str, str]:
        """The x-ratelimit-* headers for an answer that did not reach :meth:`admit`."""
        limits = (key.requests_per_minute, key.tokens_per_minute, key.token_budget)
        if all(limit is None for limit in limits):
            return {}
        with self._lock:
            now = self._clock()
            window = self._check(key, now, None, 0)
            return self._headers(key, window, self._budget(key).used(now), now)

    # -- internals (the lock is held) -----------------------------------------------------

    def _redis_down(self, exc: Exception) -> None:
        # Once a minute at most: every request would log it otherwise.
        now = time.monotonic()
        if now - self._redis_warned_at >= 60:
            self._redis_warned_at = now
            log.warning("Redis unreachable, keys limited by this process alone: %s", exc)

    def _budget(self, key: KeySpec) -> _Budget:
        budget = self._budgets.get(key.key_id)
        if budget is None:  # a key admitted before its first sync_keys
            budget = self._budgets[key.key_id] = _Budget(
                baseline=key.budget_used, resets_at=key.budget_resets_at
            )
        return budget

    def _check(self, key: KeySpec, now: float, member: str | None, reserve: int) -> _WindowResult:
        return self._check_shared(key, now, member, reserve)[0]

    def _check_shared(
        self, key: KeySpec, now: float, member: str | None, reserve: int
    ) -> tuple[_WindowResult, bool]:
        rpm, tpm = key.requests_per_minute, key.tokens_per_minute
        if rpm is None and tpm is None:
            return _WindowResult(), False
        if self._redis is not None:
            try:
                return self._redis.check(key.key_id, now, rpm, tpm, reserve, member), True
            except self._redis.errors as exc:
                log.warning(
                    "Redis unreachable; key %s limited by this process alone: %s", key.key_id, exc
                )
        return self._local.check(key.key_id, now, rpm, tpm, reserve, member), False

    def _headers(
        self, key: KeySpec, window: _WindowResult, budget_used: int, now: float
    ) -> dict[str, str]:
        headers: dict[str, str] = {}
        if key.requests_per_minute is not None:
            limit = key.requests_per_minute
            headers["x-ratelimit-limit-requests"] = str(limit)
            headers["x-ratelimit-remaining-requests"] = str(max(0, limit - window.requests_used))
            headers["x-ratelimit-reset-requests"] = format_duration(window.requests_reset)
        if key.tokens_per_minute is not None:
            limit = key.tokens_per_minute
            headers["x-ratelimit-limit-tokens"] = str(limit)
            headers["x-ratelimit-remaining-tokens"] = str(max(0, limit - window.tokens_used))
            headers["x-ratelimit-reset-tokens"] = format_duration(window.tokens_reset)
        if key.token_budget is not None:
            headers["x-ratelimit-limit-budget"] = str(key.token_budget)
            headers["x-ratelimit-remaining-budget"] = str(max(0, key.token_budget - budget_used))
            if key.budget_resets_at is not None and key.budget_resets_at > now:
                headers["x-ratelimit-reset-budget"] = format_duration(key.budget_resets_at - now)
        return headers

    def _window_refusal(
        self, key: KeySpec, window: _WindowResult, reserve: int, headers: dict[str, str]
    ) -> LimitExceeded:
        retry_after = clamp_retry_after(window.retry_after)
        if window.refused == KIND_REQUESTS:
            limit = key.requests_per_minute
            what = f"{limit} requests per minute"
        else:
            limit = key.tokens_per_minute
            what = f"{limit} tokens per minute"
        if window.never:
            if window.refused == KIND_TOKENS:
                message = (
                    f"Request too large for key {key.key_id}: it needs {reserve} tokens (prompt + "
                    f"max_tokens), more than the key's limit of {what}. Lower max_tokens or "
                    "shorten the prompt."
                )
            else:
                message = f"Key {key.key_id} has a limit of {what}: it may not send requests."
        else:
            message = (
                f"Rate limit reached for key {key.key_id}: {what}. "
                f"Try again in {format_duration(retry_after)}."
            )
        headers = {**headers, **_retry_headers(retry_after, retryable=not window.never)}
        return LimitExceeded(
            kind=window.refused,
            retry_after=retry_after,
            headers=headers,
            message=message,
            retryable=not window.never,
        )

    def _budget_refusal(
        self, key: KeySpec, used: int, now: float, headers: dict[str, str]
    ) -> LimitExceeded:
        resets_at = key.budget_resets_at
        if resets_at is not None and resets_at > now:
            when = datetime.fromtimestamp(resets_at, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            retry_after = clamp_retry_after(resets_at - now)
            tail = f"It resets at {when} (in {format_duration(resets_at - now)}); retry then."
        else:
            retry_after = MAX_RETRY_AFTER
            tail = "Ask the project's manager for a larger budget."
        message = (
            f"Token budget exhausted for key {key.key_id}: {used} of {key.token_budget} tokens "
            f"used this period. {tail}"
        )
        return LimitExceeded(
            kind=KIND_BUDGET,
            retry_after=retry_after,
            headers={**headers, **_retry_headers(retry_after, retryable=False)},
            message=message,
            retryable=False,
        )
