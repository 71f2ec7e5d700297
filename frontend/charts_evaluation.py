"""Plotly figures of the evaluation pages that are not curves: the confusion matrix heatmap.

Built like :mod:`frontend.charts` (plain dicts from plotly's Python API, drawn by
``llmhub.js`` from ``[data-figure]`` elements)."""

from __future__ import annotations

import plotly.graph_objects as go

from frontend.charts import _layout

COUNTS_SCALE = [[0, "#f5f7ff"], [1, "#4f46e5"]]


def confusion_heatmap(data: dict) -> dict:
    """The matrix of ``evaluation.metrics.confusion.confusion``: true classes down, predicted
    across, with two traces: counts (shown) and each row's shares (hidden), which the page's
    "counts / normalised" toggle swaps (``data-confusion-toggle``)."""
    labels = [str(label) for label in data["labels"]]
    size = len(labels)
    common = {
        "x": labels,
        "y": labels,
        "xgap": 1,
        "ygap": 1,
        "colorscale": COUNTS_SCALE,
        "hoverongaps": False,
    }
    figure = go.Figure(
        [
            go.Heatmap(
                z=data["matrix"],
                name="counts",
                texttemplate="%{z}",
                hovertemplate="true %{y}<br>predicted %{x}<br>%{z} examples<extra></extra>",
                colorbar={"title": {"text": "examples"}},
                visible=True,
                **common,
            ),
            go.Heatmap(
                z=data["normalized"],
                name="normalised",
                zmin=0,
                zmax=1,
                texttemplate="%{z:.0%}",
                hovertemplate="true %{y}<br>predicted %{x}<br>%{z:.1%} of the class<extra></extra>",
                colorbar={"title": {"text": "share"}, "tickformat": ".0%"},
                visible=False,
                **common,
            ),
        ]
    )
    layout = _layout(
        "Confusion matrix", x_title="predicted", y_title="true", height=max(320, 60 + 34 * size)
    )
    layout["yaxis"].update(autorange="reversed", rangemode="normal", type="category")
    layout["xaxis"].update(type="category", side="bottom")
    layout["showlegend"] = False
    figure.update_layout(**layout)
    return figure.to_plotly_json()
