"""Plotly figures of the runs table: one metric of several runs overlaid.

Built like ``frontend.charts`` (plotly's Python API, returned as a plain dict that
``llmhub.js`` draws from a ``json_script``), with the same palette.
"""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from frontend.charts import PALETTE


def overlay(series: Sequence[dict], *, metric: str, height: int = 340) -> dict:
    """One line per run (``{"name", "steps", "values"}``) of ``metric`` against the step. A run
    without points still gets its legend entry (it says the run has no such curve); with no
    points at all the chart says it waits for data instead of drawing empty axes."""
    fig = go.Figure()
    for index, run in enumerate(series):
        fig.add_trace(
            go.Scatter(
                x=list(run["steps"]),
                y=list(run["values"]),
                name=run["name"] if run["steps"] else f"{run['name']}: no {metric}",
                mode="lines" if len(run["steps"]) > 1 else "markers",
                line={"color": PALETTE[index % len(PALETTE)], "width": 1.8},
                hovertemplate=f"{run['name']}<br>step %{{x}}: %{{y:.4g}}<extra></extra>",
            )
        )
    empty = not any(run["steps"] for run in series)
    fig.update_layout(
        title={"text": f"{metric or 'metric'} of {len(series)} runs", "font": {"size": 14}},
        height=height,
        margin={"l": 55, "r": 20, "t": 40, "b": 90},
        xaxis={"title": {"text": "step"}, "gridcolor": "#eef0f4", "visible": not empty},
        yaxis={"title": {"text": metric}, "gridcolor": "#eef0f4", "visible": not empty},
        plot_bgcolor="#fff",
        paper_bgcolor="#fff",
        font={"family": "Inter, system-ui, sans-serif", "size": 12},
        # Below the axis title, never over it.
        legend={"orientation": "h", "y": -0.25, "yanchor": "top"},
        annotations=[
            {
                "text": "Waiting for data: none of these runs has logged this metric yet.",
                "showarrow": False,
                "xref": "paper",
                "yref": "paper",
                "x": 0.5,
                "y": 0.5,
            }
        ]
        if empty
        else [],
    )
    return fig.to_plotly_json()
