"""An AI rater's judging: the prompt it is sent, the chat call, and reading its answer.

The judging prompt is the manager's text with three placeholders filled in:

- ``{instructions}``: the campaign's instructions to raters;
- ``{prompt}``: the item's prompt;
- ``{responses}``: the responses in the order shown to the judge, each headed
  ``Response A:``, ``Response B:``... (the order is random and recorded, like a person's).

(``{criteria}``, the rating campaign's criteria joined by commas, may be used too.) Placeholders
are replaced literally, so braces elsewhere (a JSON example in the prompt) need no escaping.

:func:`parse_answer` turns the judge's text into a judgment as the judge saw the responses
(the shape a person submits; the labeling service's one validator maps it back to the item
through the recorded order). An answer it cannot read raises :class:`UnreadableAnswer`: the
job counts that item as failed and goes on. Plain Python (httpx only): no Django here.
"""

from __future__ import annotations

import contextlib
import json
import re
import string
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

PLACEHOLDERS = ("instructions", "prompt", "responses")
REQUIRED_PLACEHOLDERS = ("responses",)
LETTERS = string.ascii_uppercase
RATING_MIN, RATING_MAX = 1, 5

DEFAULT_PAIRWISE_PROMPT = """You are judging two answers to the same prompt.

Instructions to raters: {instructions}

Prompt:
{prompt}

{responses}

Which response is better? Answer with exactly one of: A, B, tie, both bad."""

DEFAULT_RANKING_PROMPT = """You are ranking several answers to the same prompt, best first.

Instructions to raters: {instructions}

Prompt:
{prompt}

{responses}

Answer with every response letter once, best first, separated by ">" (for example: B > A > C)."""

DEFAULT_RATING_PROMPT = """You are rating answers to a prompt from 1 (worst) to 5 (best) on each of
these criteria: {criteria}.

Instructions to raters: {instructions}

Prompt:
{prompt}

{responses}

Answer with JSON only, one object per response letter, for example:
{"A": {"helpfulness": 4}, "B": {"helpfulness": 2}}"""

DEFAULT_CORRECTION_PROMPT = """You are correcting an answer to a prompt.

Instructions to raters: {instructions}

Prompt:
{prompt}

{responses}

Write the corrected version of Response A, and nothing else."""

DEFAULT_PROMPTS = {
    "pairwise": DEFAULT_PAIRWISE_PROMPT,
    "ranking": DEFAULT_RANKING_PROMPT,
    "rating": DEFAULT_RATING_PROMPT,
    "correction": DEFAULT_CORRECTION_PROMPT,
}


class UnreadableAnswer(ValueError):
    """The judge's answer does not say a judgment in the task's shape."""


class OpenAICallError(RuntimeError):
    """An OpenAI-compatible server could not be called (unreachable, an error status, a
    malformed reply): the judge, or an endpoint a generation job calls."""


def missing_placeholders(template: str) -> list[str]:
    """The required placeholders ``template`` lacks (``{responses}``: without it the judge sees
    nothing to judge)."""
    return [name for name in REQUIRED_PLACEHOLDERS if "{" + name + "}" not in template]


def render_responses(texts: Sequence[str]) -> str:
    return "\n\n".join(f"Response {LETTERS[i]}:\n{text}" for i, text in enumerate(texts))


def render_prompt(
    template: str,
    *,
    instructions: str,
    prompt: str,
    shown: Sequence[str],
    criteria: Sequence[str] = (),
) -> str:
    """The judging prompt for one item; ``shown`` are the responses in the order shown."""
    values = {
        "instructions": instructions.strip() or "(none)",
        "prompt": prompt,
        "responses": render_responses(shown),
        "criteria": ", ".join(criteria) or "(none)",
    }
    # One pass over the template, so a placeholder inside an item's text is left alone.
    pattern = re.compile(r"\{(" + "|".join(values) + r")\}")
    return pattern.sub(lambda m: values[m.group(1)], template)


# --- reading the answer -------------------------------------------------------------------------


def _json_objects(text: str) -> list:
    """JSON values found in ``text``: the whole text, a fenced block, or each {...} span."""
    candidates = [text.strip()]
    candidates += re.findall(r"```(?:json)?\s*(.*?)```", text, flags=re.S)
    start = text.find("{")
    end = text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start : end + 1])
    found = []
    for candidate in candidates:
        try:
            found.append(json.loads(candidate))
        except ValueError:
            continue
    return found


def _shown_index(label: object, n: int) -> int | None:
    """A response letter ("A", "response b") or 1-based number as a shown position."""
    if isinstance(label, bool):
        return None
    if isinstance(label, int):
        return label - 1 if 1 <= label <= n else None
    if not isinstance(label, str):
        return None
    label = label.strip().lower().removeprefix("response").strip(" :.")
    if len(label) == 1 and label.upper() in LETTERS[:n]:
        return LETTERS.index(label.upper())
    if label.isdigit() and 1 <= int(label) <= n:
        return int(label) - 1
    return None


_PAIRWISE_WORDS = {"a": "A", "b": "B", "tie": "tie", "both bad": "both_bad", "both_bad": "both_bad"}
_PAIRWISE_CHOICE = r"(both[ _-]?bad|tie|(?-i:[AB]))"
_MARKERS = r"(?:\[\[|final answer|answer|verdict|choice|winner|better|preferred|best)"


def _pairwise_word(word: str) -> str | None:
    word = re.sub(r"[ _-]+", " ", word.strip().lower())
    return _PAIRWISE_WORDS.get(word)


def _pairwise_shown(text: str) -> str:
    """ "A", "B", "tie" or "both_bad" as the judge said it (in shown terms)."""
    for value in _json_objects(text):
        if isinstance(value, dict):
            for key in ("choice", "winner", "verdict", "answer", "preference"):
                if isinstance(value.get(key), str) and _pairwise_word(value[key]):
                    return _pairwise_word(value[key])
        if isinstance(value, str) and _pairwise_word(value):
            return _pairwise_word(value)
    stripped = text.strip().strip("*\"'`.[]() \n")
    if _pairwise_word(stripped):
        return _pairwise_word(stripped)
    marked = re.search(
        _MARKERS
        + r"[^A-Za-z]{0,4}(?:(?:response|is|the)\s*){0,3}"
        + _PAIRWISE_CHOICE
        + r"(?![A-Za-z])",
        text,
        flags=re.I,
    )
    if marked and _pairwise_word(marked.group(1)):
        return _pairwise_word(marked.group(1))
    if re.search(r"\bboth[ _-]?bad\b", text, flags=re.I):
        return "both_bad"
    if re.search(r"\btie\b", text, flags=re.I):
        return "tie"
    letters = set(re.findall(r"(?<![A-Za-z])([AB])(?![A-Za-z])", text))
    if len(letters) == 1:
        return letters.pop()
    raise UnreadableAnswer(
        "The answer names neither A, B, tie nor both bad unambiguously: " + _excerpt(text)
    )


def _ranking_shown(text: str, n: int) -> list[int]:
    for value in _json_objects(text):
        ranking = value.get("ranking") if isinstance(value, dict) else value
        if isinstance(ranking, list):
            positions = [_shown_index(label, n) for label in ranking]
            if None not in positions and sorted(positions) == list(range(n)):
                return positions
    valid = set(LETTERS[:n])
    for line in [text, *text.splitlines()]:
        letters = [x for x in re.findall(r"(?<![A-Za-z])([A-Z])(?![A-Za-z])", line) if x in valid]
        if len(letters) == n and set(letters) == valid:
            return [LETTERS.index(x) for x in letters]
    raise UnreadableAnswer(
        f"The answer is not a ranking of the {n} responses {', '.join(LETTERS[:n])}: "
        + _excerpt(text)
    )


def _rating_value(raw: object, criterion: str) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise UnreadableAnswer(f"The rating of {criterion!r} is not a number.")
    try:
        number = float(raw)
    except ValueError:
        raise UnreadableAnswer(f"The rating of {criterion!r} is not a number: {raw!r}.") from None
    if number != int(number) or not RATING_MIN <= number <= RATING_MAX:
        raise UnreadableAnswer(
            f"The rating of {criterion!r} is {raw!r}, not a whole number from "
            f"{RATING_MIN} to {RATING_MAX}."
        )
    return int(number)


def _ratings_shown(text: str, n: int, criteria: Sequence[str]) -> list[dict[str, int]]:
    if not criteria:
        raise UnreadableAnswer("The campaign names no criteria to rate.")
    for value in _json_objects(text):
        if isinstance(value, dict) and isinstance(value.get("ratings"), list | dict):
            value = value["ratings"]
        per_shown: dict[int, object] = {}
        if isinstance(value, list) and len(value) == n:
            per_shown = dict(enumerate(value))
        elif isinstance(value, dict):
            for label, scores in value.items():
                position = _shown_index(label, n)
                if position is not None:
                    per_shown[position] = scores
        if sorted(per_shown) != list(range(n)):
            continue
        out = []
        for position in range(n):
            scores = per_shown[position]
            if len(criteria) == 1 and not isinstance(scores, dict):
                scores = {criteria[0]: scores}
            if not isinstance(scores, dict):
                raise UnreadableAnswer(f"Response {LETTERS[position]}'s ratings are not an object.")
            missing = [c for c in criteria if c not in scores]
            if missing:
                raise UnreadableAnswer(
                    f"Response {LETTERS[position]} has no rating of {', '.join(missing)}."
                )
            out.append({c: _rating_value(scores[c], c) for c in criteria})
        return out
    raise UnreadableAnswer(
        f"The answer has no JSON ratings of the {n} responses on {', '.join(criteria)}: "
        + _excerpt(text)
    )


def _correction_shown(text: str, n: int) -> tuple[int, str]:
    for value in _json_objects(text):
        if isinstance(value, dict) and isinstance(value.get("text"), str):
            position = _shown_index(value.get("response", "A"), n)
            if position is not None and value["text"].strip():
                return position, value["text"].strip()
    corrected = text.strip()
    if not corrected:
        raise UnreadableAnswer("The answer is empty: no corrected response.")
    return 0, corrected


def _excerpt(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[:limit] + "...")


def parse_answer(task: str, text: str, *, n: int, criteria: Sequence[str] = ()) -> dict:
    """The judgment the judge's ``text`` says about ``n`` responses, as they were shown to it:
    the shape a rater submits (``evaluation.feedback.services.labeling``), which maps it back
    through the recorded order. Pairwise ``{"choice": "a" | "b" | "tie" | "both_bad"}`` ("a":
    the response shown first); ranking ``{"ranking": [shown positions from 1, best first]}``;
    rating ``{"ratings": [{criterion: 1..5} per shown response]}``; correction
    ``{"response": shown position from 1, "text": ...}``. Raises :class:`UnreadableAnswer`.
    """
    if not isinstance(text, str) or not text.strip():
        raise UnreadableAnswer("The answer is empty.")
    if task == "pairwise":
        if n != 2:
            raise UnreadableAnswer("A pairwise judgment needs exactly two responses.")
        shown = _pairwise_shown(text)
        choice = shown if shown in ("tie", "both_bad") else shown.lower()
        return {"choice": choice, "reason": ""}
    if task == "ranking":
        return {"ranking": [k + 1 for k in _ranking_shown(text, n)]}
    if task == "rating":
        return {"ratings": _ratings_shown(text, n, criteria)}
    if task == "correction":
        position, corrected = _correction_shown(text, n)
        return {"response": position + 1, "text": corrected}
    raise UnreadableAnswer(f"Unknown task type {task!r}.")


# --- the call -----------------------------------------------------------------------------------


def chat_url(base_url: str) -> str:
    """The chat completions URL of an OpenAI-compatible base URL (``…/v1``)."""
    return base_url.rstrip("/") + "/chat/completions"


def openai_post(
    *,
    url: str,
    body: dict,
    headers: Mapping[str, str],
    timeout: float,
    client: httpx.Client | None = None,
    who: str = "The judge",
) -> tuple[Any, httpx.Headers]:
    """POST ``body`` to an OpenAI-compatible ``url``; (the decoded JSON answer, its headers).
    Raises :class:`OpenAICallError` naming ``who`` on any failure (the OpenAI error envelope's
    message when there is one). The one client of the AI raters and of generation jobs."""
    own = client is None
    client = client or httpx.Client(timeout=timeout, follow_redirects=False)
    try:
        response = client.post(url, json=body, headers=dict(headers))
    except httpx.HTTPError as exc:
        raise OpenAICallError(f"{who} at {url} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        if own:
            client.close()
    if response.status_code != 200:
        detail = response.text[:300]
        with contextlib.suppress(ValueError, KeyError, TypeError):
            detail = response.json()["error"]["message"]
        raise OpenAICallError(f"{who} answered {response.status_code}: {detail}")
    try:
        return response.json(), response.headers
    except ValueError:
        raise OpenAICallError(f"{who}'s reply is not JSON: " + _excerpt(response.text)) from None


def call_judge(
    *,
    base_url: str,
    model: str,
    prompt: str,
    headers: Mapping[str, str],
    max_tokens: int,
    timeout: float,
    client: httpx.Client | None = None,
) -> str:
    """The judge's answer to ``prompt`` (one user message, temperature 0) through the OpenAI
    chat completions API. Raises :class:`OpenAICallError` with the reason on any failure."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0,
        "max_tokens": max_tokens,
    }
    answer, _headers = openai_post(
        url=chat_url(base_url), body=body, headers=headers, timeout=timeout, client=client
    )
    try:
        content = answer["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise OpenAICallError(
            "The judge's reply is not an OpenAI chat completion: " + _excerpt(str(answer))
        ) from None
    return content if isinstance(content, str) else ""
