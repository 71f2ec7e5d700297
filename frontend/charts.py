"""Plotly figures for the pages, built with plotly's Python API and rendered by plotly.js.

Each builder returns a figure as a plain dict (``fig.to_plotly_json()``); templates embed it with
``json_script`` and ``llmhub.js`` draws every ``[data-figure]`` element.
"""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

PALETTE = ["#4f46e5", "#0ea5e9", "#10b981", "#f59e0b", "#ef4444", "#8b5cf6", "#14b8a6", "#64748b"]


def _layout(title: str, *, x_title: str = "", y_title: str = "", height: int = 300) -> dict:
    return {
        "title": {"text": title, "font": {"size": 14}},
        "height": height,
        "margin": {"l": 50, "r": 20, "t": 40, "b": 45},
        "xaxis": {"title": {"text": x_title}, "gridcolor": "#eef0f4"},
        "yaxis": {"title": {"text": y_title}, "gridcolor": "#eef0f4", "rangemode": "tozero"},
        "plot_bgcolor": "#fff",
        "paper_bgcolor": "#fff",
        "font": {"family": "Inter, system-ui, sans-serif", "size": 12},
        "colorway": PALETTE,
        "legend": {"orientation": "h", "y": -0.2},
    }


def histogram(
    edges: Sequence[float], counts: Sequence[int], *, title: str, x_title: str = ""
) -> dict:
    """A histogram from precomputed bin edges (n+1) and counts (n)."""
    centers = [(edges[i] + edges[i + 1]) / 2 for i in range(len(counts))]
    widths = [edges[i + 1] - edges[i] for i in range(len(counts))]
    fig = go.Figure(
        go.Bar(
            x=centers,
            y=list(counts),
            width=widths,
            marker_color=PALETTE[0],
            hovertemplate="%{x:.0f}: %{y}<extra></extra>",
        )
    )
    fig.update_layout(**_layout(title, x_title=x_title, y_title="rows"), bargap=0.02)
    return fig.to_plotly_json()


def bars(
    labels: Sequence[str],
    values: Sequence[float],
    *,
    title: str,
    y_title: str = "",
    horizontal: bool = False,
    color: str | None = None,
) -> dict:
    labels, values = [str(label) for label in labels], list(values)
    if horizontal:
        trace = go.Bar(
            y=labels[::-1], x=values[::-1], orientation="h", marker_color=color or PALETTE[1]
        )
        layout = _layout(title, x_title=y_title, height=max(260, 26 * len(labels) + 80))
        layout["margin"]["l"] = 140
    else:
        trace = go.Bar(x=labels, y=values, marker_color=color or PALETTE[1])
        layout = _layout(title, y_title=y_title)
    fig = go.Figure(trace)
    fig.update_layout(**layout)
    return fig.to_plotly_json()


def lines(
    series: Sequence[dict],
    *,
    title: str,
    x_title: str = "step",
    y_title: str = "",
    log_y: bool = False,
    height: int = 320,
    target: float | None = None,
) -> dict:
    """Line chart of ``[{"name", "x", "y"}]`` series; an optional horizontal target line."""
    fig = go.Figure()
    for index, s in enumerate(series):
        fig.add_trace(
            go.Scatter(
                x=list(s["x"]),
                y=list(s["y"]),
                mode=s.get("mode", "lines"),
                name=s["name"],
                line={"color": PALETTE[index % len(PALETTE)], "width": 2},
            )
        )
    layout = _layout(title, x_title=x_title, y_title=y_title, height=height)
    if log_y:
        layout["yaxis"]["type"] = "log"
        layout["yaxis"].pop("rangemode")
    fig.update_layout(**layout)
    if target is not None:
        fig.add_hline(
            y=target,
            line_dash="dash",
            line_color="#b42318",
            annotation_text=f"target {target:g}",
            annotation_position="top left",
        )
    return fig.to_plotly_json()


def parallel_coordinates(
    dimensions: Sequence[dict], *, color: Sequence[float], title: str, color_title: str
) -> dict:
    """A parallel-coordinates chart (sweeps): ``dimensions`` as plotly expects them."""
    fig = go.Figure(
        go.Parcoords(
            line={
                "color": list(color),
                "colorscale": "Viridis",
                "showscale": True,
                "colorbar": {"title": {"text": color_title}},
            },
            dimensions=list(dimensions),
        )
    )
    layout = _layout(title, height=380)
    # Parcoords draws axis names and top ticks above the plot area: leave room under the title.
    layout["margin"].update(t=90, l=70)
    fig.update_layout(**layout)
    return fig.to_plotly_json()


def _error(values: Sequence[dict]) -> dict:
    """Plotly error bars from ``{value, ci_low, ci_high}`` items (missing intervals: none)."""
    above, below = [], []
    for item in values:
        value, low, high = item.get("value"), item.get("ci_low"), item.get("ci_high")
        ok = None not in (value, low, high)
        above.append(high - value if ok else 0)
        below.append(value - low if ok else 0)
    return {
        "type": "data",
        "symmetric": False,
        "array": above,
        "arrayminus": below,
        "thickness": 1.2,
        "width": 4,
    }


def metric_bars(series: Sequence[dict], labels: Sequence[str], *, title: str) -> dict:
    """Grouped bars: one group per metric, one bar per series (a run), with 95% intervals."""
    fig = go.Figure()
    for index, s in enumerate(series):
        fig.add_trace(
            go.Bar(
                name=s["name"],
                x=list(labels),
                y=[v.get("value") for v in s["values"]],
                error_y=_error(s["values"]),
                marker_color=PALETTE[index % len(PALETTE)],
                hovertemplate="%{x}: %{y:.3f}<extra>" + s["name"] + "</extra>",
            )
        )
    layout = _layout(title, y_title="score", height=340)
    layout["yaxis"]["range"] = [0, 1.05]
    fig.update_layout(**layout, barmode="group")
    return fig.to_plotly_json()


def group_bars(groups: Sequence[dict], *, title: str, ideal: float | None = None) -> dict:
    """Horizontal bars per group (bias reports) with intervals, and the ideal value marked."""
    names = [f"{g.get('domain') + ': ' if g.get('domain') else ''}{g['group']}" for g in groups]
    values = [
        {"value": g.get("value"), "ci_low": g.get("ci_low"), "ci_high": g.get("ci_high")}
        for g in groups
    ]
    fig = go.Figure(
        go.Bar(
            y=names[::-1],
            x=[v["value"] for v in values][::-1],
            orientation="h",
            error_x=_error(values[::-1]),
            marker_color=PALETTE[0],
            customdata=[g.get("n") for g in groups][::-1],
            hovertemplate="%{y}: %{x:.3f} (n=%{customdata})<extra></extra>",
        )
    )
    layout = _layout(title, height=max(280, 24 * len(groups) + 90))
    layout["margin"]["l"] = 220
    fig.update_layout(**layout)
    if ideal is not None:
        fig.add_vline(
            x=ideal,
            line_dash="dash",
            line_color="#067647",
            annotation_text=f"ideal {ideal:g}",
            annotation_position="top",
        )
    return fig.to_plotly_json()
