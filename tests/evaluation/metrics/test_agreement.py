"""Agreement statistics, position bias, win rates and Bradley-Terry against hand-computed and
published values."""

from __future__ import annotations

import math

import pytest

from evaluation.metrics.agreement import (
    LEVELS,
    ONE_CATEGORY,
    TOO_FEW,
    bradley_terry,
    cohen_kappa,
    counts_table,
    fleiss_kappa,
    krippendorff_alpha,
    position_bias,
    wilson_interval,
    win_rates,
)

# Fleiss (1971) as on Wikipedia's "Fleiss' kappa": 10 items, 14 raters, 5 categories.
FLEISS_TABLE = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]

# Krippendorff (2011), "Computing Krippendorff's alpha-reliability", section C: 4 observers,
# 12 units, missing values; alpha = 0.743 nominal, 0.815 ordinal, 0.849 interval.
N = None
OBSERVERS = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, N, N, N],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, N, 3],
    [N, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, N],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, N],
]
UNITS = [list(unit) for unit in zip(*OBSERVERS, strict=True)]


def test_cohen_kappa_of_the_textbook_two_by_two() -> None:
    # 50 items: both yes 20, a yes b no 5, a no b yes 10, both no 15 -> po 0.7, pe 0.5.
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    result = cohen_kappa(a, b)
    assert result["value"] == pytest.approx(0.4)
    assert result["observed"] == pytest.approx(0.7)
    assert result["n"] == 50
    assert result["ci_low"] < 0.4 < result["ci_high"]
    assert cohen_kappa(a, b) == result  # seeded: the same interval each time
    assert cohen_kappa(a, b, seed=1)["ci_low"] != result["ci_low"]


def test_cohen_kappa_skips_missing_and_handles_edges() -> None:
    perfect = cohen_kappa(["a", "b", "a", None], ["a", "b", "a", "b"])
    assert perfect["value"] == 1.0 and perfect["n"] == 3
    assert perfect["ci_low"] == perfect["ci_high"] == 1.0
    one = cohen_kappa(["a", "a", "a"], ["a", "a", "a"])
    assert one["value"] is None and one["reason"] == ONE_CATEGORY and one["observed"] == 1.0
    few = cohen_kappa(["a", None], ["a", "b"])
    assert few["value"] is None and few["reason"] == TOO_FEW
    assert cohen_kappa(["a", "b"], ["b", "a"])["value"] == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="one entry per item"):
        cohen_kappa(["a"], ["a", "b"])


def test_fleiss_kappa_of_fleiss_1971() -> None:
    result = fleiss_kappa(FLEISS_TABLE)
    assert result["value"] == pytest.approx(0.2099, abs=1e-4)
    assert result["observed"] == pytest.approx(0.378, abs=1e-3)
    assert result["ci_low"] < result["value"] < result["ci_high"]
    # The same data as labels per item gives the same kappa.
    ratings = [[c for c, count in enumerate(row) for _ in range(count)] for row in FLEISS_TABLE]
    assert fleiss_kappa(ratings=ratings)["value"] == pytest.approx(result["value"])


def test_fleiss_kappa_edges() -> None:
    assert fleiss_kappa(ratings=[["a", "a", "a"], ["b", "b", "b"]])["value"] == 1.0
    one = fleiss_kappa(ratings=[["a", "a"], ["a", "a", "a"]])
    assert one["value"] is None and one["reason"] == ONE_CATEGORY
    # Items with one label are not pairable: one item left is too few.
    few = fleiss_kappa(ratings=[["a", "b"], ["a"], [None, "b"]])
    assert few["value"] is None and few["reason"] == TOO_FEW and few["n"] == 1
    with pytest.raises(ValueError, match="either"):
        fleiss_kappa(FLEISS_TABLE, ratings=[["a"]])
    with pytest.raises(ValueError, match="non-negative"):
        fleiss_kappa([[1, -1], [2, 0]])


def test_counts_table_orders_categories() -> None:
    table, categories = counts_table([["b", "a", None], ["a", "a"]])
    assert categories == ["a", "b"]
    assert table.tolist() == [[1, 1], [2, 0]]


@pytest.mark.parametrize(
    ("level", "expected"), [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849)]
)
def test_krippendorff_alpha_of_krippendorff_2011(level, expected) -> None:
    result = krippendorff_alpha(UNITS, level=level)
    assert result["value"] == pytest.approx(expected, abs=5e-4)
    assert result["n"] == 11  # unit 12 has one value: not pairable
    assert result["level"] == level
    assert result["ci_low"] <= result["value"] <= result["ci_high"]


def test_krippendorff_alpha_nominal_equals_its_hand_computation() -> None:
    # Two raters, four units: (a,a) (a,b) (b,b) (b,b). Coincidences o_aa=2, o_ab=o_ba=1,
    # o_bb=4; n_a=3, n_b=5, n=8: alpha = 1 - 7 * 2 / (2 * 3 * 5) = 8/15.
    result = krippendorff_alpha([["a", "a"], ["a", "b"], ["b", "b"], ["b", "b"]])
    assert result["value"] == pytest.approx(8 / 15)


def test_krippendorff_alpha_edges() -> None:
    for level in LEVELS:
        assert krippendorff_alpha([[1, 1], [2, 2, None]], level=level)["value"] == 1.0
        one = krippendorff_alpha([[3, 3], [3, 3, 3]], level=level)
        assert one["value"] is None and one["reason"] == ONE_CATEGORY
        few = krippendorff_alpha([[1, 2], [1, None]], level=level)
        assert few["value"] is None and few["reason"] == TOO_FEW
    with pytest.raises(ValueError, match="level"):
        krippendorff_alpha(UNITS, level="ratio")
    with pytest.raises(ValueError, match="numeric"):
        krippendorff_alpha([["a", "b"], ["a", "a"]], level="interval")


def test_wilson_interval() -> None:
    low, high = wilson_interval(8, 10)
    # Hand-computed: z = 1.95996, centre = (0.8 + 0.19207) / 1.38415, half = 0.23704.
    assert low == pytest.approx(0.4902, abs=1e-4)
    assert high == pytest.approx(0.9433, abs=1e-4)
    assert wilson_interval(0, 0) == (None, None)
    assert wilson_interval(0, 5)[0] == 0.0


def test_position_bias_counts_only_decided_judgments() -> None:
    judgments = [
        ([0, 1], "a"),  # first shown chosen
        ([1, 0], "b"),  # first shown chosen
        ([1, 0], "a"),  # second shown chosen
        ([0, 1], "tie"),  # not counted
        ([], "a"),  # no order recorded: not counted
        ([2, 0, 1], 2),  # a ranking's top choice, shown first
    ]
    result = position_bias(judgments)
    assert result["first"] == 3 and result["n"] == 4
    assert result["value"] == pytest.approx(0.75)
    assert result["expected"] == pytest.approx((0.5 * 3 + 1 / 3) / 4)
    assert (result["ci_low"], result["ci_high"]) == wilson_interval(3, 4)
    empty = position_bias([([0, 1], "both_bad")])
    assert empty["value"] is None and empty["reason"]


PAIRS = (
    [("x", "y", "a")] * 6
    + [("x", "y", "b")] * 3
    + [("x", "y", "tie")] * 2
    + [("y", "z", "a")] * 4
    + [("z", "y", "a")] * 2
    + [("x", "z", "a")] * 3
    + [("x", "z", "b")]
    + [("x", "x", "a"), ("x", "y", None)]  # not counted
)


def test_win_rates_with_ties_as_half() -> None:
    result = win_rates(PAIRS)
    assert result["n"] == 21
    by_model = {row["model"]: row for row in result["models"]}
    assert [row["model"] for row in result["models"]] == ["x", "y", "z"]
    x = by_model["x"]
    assert (x["wins"], x["losses"], x["ties"], x["games"]) == (9, 4, 2, 15)
    assert x["value"] == pytest.approx(10 / 15)
    assert (x["ci_low"], x["ci_high"]) == wilson_interval(10, 15)
    assert (by_model["z"]["wins"], by_model["z"]["losses"]) == (3, 7)
    xy = next(r for r in result["head_to_head"] if (r["model"], r["opponent"]) == ("x", "y"))
    assert (xy["wins"], xy["losses"], xy["ties"]) == (6, 3, 2)
    zy = next(r for r in result["head_to_head"] if {r["model"], r["opponent"]} == {"y", "z"})
    assert zy["model"] == "y" and (zy["wins"], zy["losses"]) == (4, 2)
    assert win_rates([("x", "y", "both_bad")])["models"][0]["ties"] == 1


def test_bradley_terry_two_models_is_the_win_ratio() -> None:
    # x: 6 wins + 2 ties / 2 = 7, y: 3 + 1 = 4 -> s_x / s_y = 7 / 4, geometric mean 1.
    result = bradley_terry(PAIRS[:11])
    strengths = {row["model"]: row["strength"] for row in result["models"]}
    assert strengths["x"] / strengths["y"] == pytest.approx(7 / 4)
    assert strengths["x"] * strengths["y"] == pytest.approx(1.0)
    assert result["ranking"] == ["x", "y"] and not result["regularized"]


def test_bradley_terry_three_models_solves_the_likelihood_equations() -> None:
    result = bradley_terry(PAIRS)
    assert result["converged"] and result["ranking"] == ["x", "y", "z"]
    s = {row["model"]: row["strength"] for row in result["models"]}
    wins = {"x": 9 + 1, "y": 7 + 1, "z": 3}
    games = {("x", "y"): 11, ("y", "z"): 6, ("x", "z"): 4}
    for model, won in wins.items():
        expected = sum(
            n * s[model] / (s[a] + s[b]) for (a, b), n in games.items() if model in (a, b)
        )
        assert expected == pytest.approx(won, rel=1e-6)
    for row in result["models"]:
        assert row["score"] == pytest.approx(math.log(row["strength"]))
        assert row["ci_low"] < row["score"] < row["ci_high"]
    assert [row["rank"] for row in result["models"]] == [1, 2, 3]
    assert bradley_terry(PAIRS) == result  # seeded


def test_bradley_terry_without_an_mle_is_regularized() -> None:
    # x always wins: the MLE is infinite; one virtual tie gives 5.5 : 0.5.
    result = bradley_terry([("x", "y", "a")] * 5)
    assert result["regularized"]
    s = {row["model"]: row["strength"] for row in result["models"]}
    assert s["x"] / s["y"] == pytest.approx(11)
    assert bradley_terry([("x", "x", "a")])["reason"] == "fewer than two models compared"
    split = bradley_terry([("a", "b", "a"), ("c", "d", "b")])
    assert split["models"] == [] and "connected" in split["reason"]
