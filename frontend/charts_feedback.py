"""Plotly figures of a feedback campaign's statistics (``evaluation.feedback.stats``), as
plain dicts in the style of :mod:`frontend.charts`: progress per rater, agreement with 95%
intervals (the humans' and each AI rater's beside them), win rates with error bars and
Bradley-Terry strengths. Each builder takes the whole ``campaign_stats`` dict; a figure with
nothing to show is the "waiting" chart with the reason."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from frontend.charts import PALETTE, _error, _layout, waiting

STATISTICS = (
    ("cohen_kappa", "Cohen's kappa"),
    ("fleiss_kappa", "Fleiss' kappa"),
    ("krippendorff_alpha", "Krippendorff's alpha"),
)


def _height(rows: int) -> int:
    return max(240, 28 * rows + 110)


def progress_figure(stats: dict[str, Any]) -> dict:
    """Stacked horizontal bars per rater: submitted, skipped, in hand."""
    raters = stats["progress"]["raters"]
    title = "Progress per rater"
    if not raters:
        return waiting(title, text="No raters yet")
    names = [r["username"] for r in raters][::-1]
    fig = go.Figure()
    for index, (field, label) in enumerate(
        (("submitted", "submitted"), ("skipped", "skipped"), ("active", "in hand"))
    ):
        fig.add_trace(
            go.Bar(
                y=names,
                x=[r[field] for r in raters][::-1],
                name=label,
                orientation="h",
                marker_color=PALETTE[[2, 3, 1][index]],
                hovertemplate="%{y}: %{x} " + label + "<extra></extra>",
            )
        )
    layout = _layout(title, x_title="items", height=_height(len(raters)))
    layout["margin"]["l"] = 140
    fig.update_layout(**layout, barmode="stack")
    return fig.to_plotly_json()


def _bar_value(result: dict | None) -> dict:
    result = result or {}
    return {k: result.get(k) for k in ("value", "ci_low", "ci_high")}


def agreement_figure(stats: dict[str, Any]) -> dict:
    """The humans' agreement per label (each statistic a bar with its interval)."""
    title = "Agreement among raters (95% intervals)"
    blocks = stats["agreement"]["labels"]
    reason = stats["agreement"].get("reason")
    shown = [
        (key, label)
        for key, label in STATISTICS
        if any((b.get(key) or {}).get("value") is not None for b in blocks)
    ]
    if not blocks or not shown:
        return waiting(title, text=reason or "Not enough judgments yet")
    labels = [b["label"] for b in blocks]
    fig = go.Figure()
    for index, (key, name) in enumerate(shown):
        values = [_bar_value(b.get(key)) for b in blocks]
        fig.add_trace(
            go.Bar(
                name=name,
                x=labels,
                y=[v["value"] for v in values],
                error_y=_error(values),
                marker_color=PALETTE[index % len(PALETTE)],
                hovertemplate="%{x}: %{y:.3f}<extra>" + name + "</extra>",
            )
        )
    layout = _layout(title, y_title="agreement", height=320)
    layout["yaxis"].pop("rangemode")
    layout["yaxis"]["range"] = [min(-0.1, _lowest(fig)), 1.05]
    fig.update_layout(**layout, barmode="group")
    return fig.to_plotly_json()


def _lowest(fig: go.Figure) -> float:
    values = [y for trace in fig.data for y in (trace.y or ()) if y is not None]
    return min(values, default=0.0) - 0.1


def ai_agreement_figure(stats: dict[str, Any]) -> dict:
    """Each AI rater's agreement with the humans' labels beside the humans' own (each human
    against the majority of the others), with Wilson intervals."""
    title = "Agreement with the humans' label (95% intervals)"
    section = stats["ai_raters"]
    rows = [("humans (each vs the others)", section["humans"]["agreement"])]
    rows += [(ai["name"], ai["agreement"]) for ai in section["raters"]]
    rows = [(name, result) for name, result in rows if (result or {}).get("value") is not None]
    if not rows:
        return waiting(title, text="No labels to compare yet")
    values = [_bar_value(result) for _, result in rows]
    fig = go.Figure(
        go.Bar(
            x=[name for name, _ in rows],
            y=[v["value"] for v in values],
            error_y=_error(values),
            marker_color=[PALETTE[0]] + [PALETTE[5]] * (len(rows) - 1),
            customdata=[result["n"] for _, result in rows],
            hovertemplate="%{x}: %{y:.3f} (n=%{customdata})<extra></extra>",
        )
    )
    layout = _layout(title, y_title="share agreeing", height=320)
    layout["yaxis"]["range"] = [0, 1.05]
    fig.update_layout(**layout)
    return fig.to_plotly_json()


def win_rates_figure(stats: dict[str, Any]) -> dict:
    """Each model's win rate (ties as half) with its Wilson interval; 0.5 marked."""
    title = "Win rate per model (95% intervals)"
    models = stats["models"]
    rows = models["win_rates"]
    if not rows:
        return waiting(title, text=models.get("reason") or "No comparisons yet")
    values = [_bar_value(row) for row in rows]
    fig = go.Figure(
        go.Bar(
            y=[row["model"] for row in rows][::-1],
            x=[v["value"] for v in values][::-1],
            orientation="h",
            error_x=_error(values[::-1]),
            marker_color=PALETTE[1],
            customdata=[[row["wins"], row["losses"], row["ties"]] for row in rows][::-1],
            hovertemplate=(
                "%{y}: %{x:.3f}<br>%{customdata[0]} wins, %{customdata[1]} losses, "
                "%{customdata[2]} ties<extra></extra>"
            ),
        )
    )
    layout = _layout(title, x_title="win rate", height=_height(len(rows)))
    layout["margin"]["l"] = 180
    layout["xaxis"]["range"] = [0, 1]
    fig.update_layout(**layout)
    fig.add_vline(x=0.5, line_dash="dash", line_color="#667085")
    return fig.to_plotly_json()


def bradley_terry_figure(stats: dict[str, Any]) -> dict:
    """Bradley-Terry scores (log strength) with bootstrap intervals, strongest on top."""
    title = "Bradley-Terry ranking (log strength, 95% intervals)"
    bt = stats["models"].get("bradley_terry") or {}
    rows = bt.get("models") or []
    if not rows:
        reason = bt.get("reason") or stats["models"].get("reason") or "No comparisons yet"
        return waiting(title, text=reason)
    values = [{"value": r["score"], "ci_low": r["ci_low"], "ci_high": r["ci_high"]} for r in rows]
    fig = go.Figure(
        go.Bar(
            y=[f"{r['rank']}. {r['model']}" for r in rows][::-1],
            x=[v["value"] for v in values][::-1],
            orientation="h",
            error_x=_error(values[::-1]),
            marker_color=PALETTE[0],
            customdata=[r["strength"] for r in rows][::-1],
            hovertemplate="%{y}: score %{x:.3f} (strength %{customdata:.3f})<extra></extra>",
        )
    )
    layout = _layout(title, x_title="score", height=_height(len(rows)))
    layout["margin"]["l"] = 180
    layout["yaxis"].pop("rangemode")
    fig.update_layout(**layout)
    return fig.to_plotly_json()


def feedback_figures(stats: dict[str, Any]) -> dict[str, dict]:
    """Every figure of the manager's view, by name."""
    return {
        "progress": progress_figure(stats),
        "agreement": agreement_figure(stats),
        "ai_agreement": ai_agreement_figure(stats),
        "win_rates": win_rates_figure(stats),
        "bradley_terry": bradley_terry_figure(stats),
    }
