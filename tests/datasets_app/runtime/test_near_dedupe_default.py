"""The near_dedupe step's default finds realistic near duplicates of real text.

The paragraphs are 50-word pieces of public-domain fiction (H. G. Wells, The Time Machine, and
Joseph Conrad, Heart of Darkness, from ../shared/datasets/corpus_public_domain_fiction.txt).
"""

from __future__ import annotations

import re

from datasets_app.cleaning.dedupe import near_duplicate_mask, signatures
from datasets_app.cleaning.steps import DEFAULT_RECIPE, validate_recipe

TIME_MACHINE = (
    "woods. Yet it was evident that if I was to flourish matches with my hands I should have "
    "to abandon my firewood; so, rather reluctantly, I put it down. And then it came into my "
    "head that I would amaze our friends behind by lighting it. I was to discover"
)
# 5 edits in 50 words (10%): two words replaced, two deleted, one inserted.
TIME_MACHINE_EDITED = (
    "woods. Yet it was clear that if I was to flourish matches with my hands I should have "
    "to abandon my firewood; so, reluctantly, I quickly put it down. And then it came into my "
    "head that I would astonish our friends by lighting it. I was to discover"
)
HEART_OF_DARKNESS = (
    "up in the middle of the stream. The reach was narrow, straight, with high sides like a "
    "railway cutting. The dusk came gliding into it long before the sun had set. The current "
    "ran smooth and swift, but a dumb immobility sat on the banks. The living trees, lashed "
    "together"
)


def _shingle_jaccard(a: str, b: str) -> float:
    def shingles(text: str) -> set[tuple[str, ...]]:
        words = re.findall(r"\w+", text.casefold())
        return {tuple(words[i : i + 3]) for i in range(len(words) - 2)}

    return len(shingles(a) & shingles(b)) / len(shingles(a) | shingles(b))


def _default_params() -> dict:
    return validate_recipe([{"step": "near_dedupe"}])[0]["params"]


def _keep(texts: list[str], params: dict) -> list[bool]:
    sigs = signatures(texts, num_perm=params["num_perm"], shingle_size=params["shingle_size"])
    return near_duplicate_mask(sigs, threshold=params["threshold"]).tolist()


def test_the_edited_copy_is_a_typical_near_duplicate() -> None:
    assert len(TIME_MACHINE.split()) == 50 and len(HEART_OF_DARKNESS.split()) == 50
    # About the median of copies edited at 5-15% of their words (bench/cleaning.py).
    assert 0.5 < _shingle_jaccard(TIME_MACHINE, TIME_MACHINE_EDITED) < 0.6


def test_default_catches_a_ten_percent_edited_copy() -> None:
    keep = _keep([TIME_MACHINE, HEART_OF_DARKNESS, TIME_MACHINE_EDITED], _default_params())
    assert keep == [True, True, False]


def test_default_keeps_two_distinct_paragraphs() -> None:
    assert _keep([TIME_MACHINE, HEART_OF_DARKNESS], _default_params()) == [True, True]


def test_the_default_recipe_uses_the_step_default() -> None:
    near = next(s for s in DEFAULT_RECIPE if s["step"] == "near_dedupe")
    assert near["params"]["threshold"] == _default_params()["threshold"]


def test_the_old_default_missed_it() -> None:
    # What the default fixes: at 0.7 the same copy survives.
    assert _keep([TIME_MACHINE, TIME_MACHINE_EDITED], _default_params() | {"threshold": 0.7}) == [
        True,
        True,
    ]
