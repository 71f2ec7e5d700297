"""Figure building in frontend/charts.py: what the pages' charts are drawn from."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from frontend import charts


def test_ema_matches_tensorboard_smoothing_with_debiasing() -> None:
    values = [4.0, 2.0, 3.0, None, 1.0]
    weight = 0.6
    # By hand: a_t = w * a_{t-1} + (1 - w) * v_t, divided by 1 - w^n (n points so far).
    a1 = 0.4 * 4.0
    a2 = 0.6 * a1 + 0.4 * 2.0
    a3 = 0.6 * a2 + 0.4 * 3.0
    a4 = 0.6 * a3 + 0.4 * 1.0
    expected = [a1 / (1 - 0.6), a2 / (1 - 0.6**2), a3 / (1 - 0.6**3), None, a4 / (1 - 0.6**4)]
    smoothed = charts.ema(values, weight)
    assert smoothed[3] is None
    for got, want in zip(smoothed, expected, strict=True):
        assert (got is None and want is None) or math.isclose(got, want)
    # The first point is the value itself (no pull towards zero), and 0 means no smoothing.
    assert smoothed[0] == pytest.approx(4.0)
    assert charts.ema([3.0, 1.0, 2.0], 0) == [3.0, 1.0, 2.0]
    # A constant stays constant at any weight.
    assert charts.ema([2.0] * 50, 0.99) == pytest.approx([2.0] * 50)


def test_ema_refuses_a_weight_outside_zero_to_one() -> None:
    with pytest.raises(ValueError, match="smoothing weight"):
        charts.ema([1.0], 1.0)


def test_legends_sit_above_the_plot_clear_of_the_axis_titles() -> None:
    figure = charts.lines(
        [{"name": "a", "x": [1, 2], "y": [1, 2]}, {"name": "b", "x": [1, 2], "y": [2, 3]}],
        title="Loss",
        y_title="loss",
    )
    legend = figure["layout"]["legend"]
    # Anchored by its bottom above the plot area (y > 1 in paper coordinates): it cannot cover
    # the x-axis title below the plot, nor the y-axis title on its left.
    assert legend["yanchor"] == "bottom" and legend["y"] > 1
    assert legend["orientation"] == "h" and legend["xanchor"] == "right"
    # The title sits on the left, the legend on the right, with room above the plot for both.
    assert figure["layout"]["title"]["xanchor"] == "left"
    assert figure["layout"]["margin"]["t"] >= 50
    for builder in (
        charts.metric_bars([{"name": "r", "values": [{"value": 0.5}]}], ["acc"], title="m"),
        charts.histogram([0, 1, 2], [3, 4], title="h"),
    ):
        assert builder["layout"]["legend"]["y"] > 1


def test_no_points_gives_a_waiting_chart_without_axes() -> None:
    for figure in (
        charts.lines([{"name": "a", "x": [], "y": []}], title="Goal"),
        charts.lines([], title="Goal"),
        charts.histogram([], [], title="Lengths"),
        charts.bars([], [], title="Labels"),
    ):
        layout = figure["layout"]
        assert layout["meta"] == {"empty": True}
        assert figure["data"] == []
        assert layout["xaxis"]["visible"] is False and layout["yaxis"]["visible"] is False
        assert layout["annotations"][0]["text"] == charts.WAITING_TEXT
    assert "meta" not in charts.lines([{"name": "a", "x": [1], "y": [2]}], title="t")["layout"]


def test_a_time_axis_with_one_point_spans_a_day_labelled_by_date() -> None:
    at = datetime(2026, 12, 1, 23, 40, tzinfo=UTC)
    figure = charts.lines(
        [{"name": "model v1", "x": [at], "y": [0.8]}], title="F1 ≥ 0.7", target=0.7
    )
    xaxis = figure["layout"]["xaxis"]
    assert xaxis["type"] == "date"
    low, high = (datetime.fromisoformat(v) for v in xaxis["range"])
    assert low < at < high and (high - low).total_seconds() == 24 * 3600
    assert xaxis["tickformat"] == "%b %-d, %Y"
    # One point on a line is invisible: short series get markers.
    assert figure["data"][0]["mode"] == "lines+markers"
    # Times as the selectors serialise them (ISO strings) read the same.
    as_text = charts.lines([{"name": "m", "x": [at.isoformat()], "y": [0.8]}], title="t")
    assert as_text["layout"]["xaxis"]["range"] == xaxis["range"]
    later = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
    spread = charts.lines([{"name": "m", "x": [at, later], "y": [0.8, 0.9]}], title="t")
    assert "range" not in spread["layout"]["xaxis"]
    assert spread["layout"]["xaxis"]["tickformat"] == "%H:%M<br>%b %-d"
