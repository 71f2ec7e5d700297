"""Plotly figures for the pages, built with plotly's Python API and rendered by plotly.js.

Each builder returns a figure as a plain dict (``fig.to_plotly_json()``); templates embed it with
``json_script`` and ``llmhub.js`` draws every ``[data-figure]`` element.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta

import plotly.graph_objects as go

PALETTE = ["#4f46e5", "#0ea5e9", "#10b981", "#f59e0b", "#ef4444", "#8b5cf6", "#14b8a6", "#64748b"]

WAITING_TEXT = "Waiting for data"

# Legends sit above the plot, right-aligned, and the title on the left: a legend below the plot
# covered the x-axis title, one inside it covered the curves.
LEGEND = {"orientation": "h", "yanchor": "bottom", "y": 1.02, "xanchor": "right", "x": 1}

# A loss curve's smoothing by default, as in W&B and TensorBoard (0 = raw, 0.99 = very smooth).
DEFAULT_SMOOTHING = 0.6


def _layout(title: str, *, x_title: str = "", y_title: str = "", height: int = 300) -> dict:
    return {
        "title": {"text": title, "font": {"size": 14}, "x": 0, "xanchor": "left", "y": 0.98},
        "height": height,
        "margin": {"l": 60, "r": 20, "t": 60, "b": 50},
        "xaxis": {"title": {"text": x_title}, "gridcolor": "#eef0f4", "automargin": True},
        "yaxis": {
            "title": {"text": y_title},
            "gridcolor": "#eef0f4",
            "rangemode": "tozero",
            "automargin": True,
        },
        "plot_bgcolor": "#fff",
        "paper_bgcolor": "#fff",
        "font": {"family": "Inter, system-ui, sans-serif", "size": 12},
        "colorway": PALETTE,
        "legend": dict(LEGEND),
    }


def waiting(title: str = "", *, text: str = WAITING_TEXT, height: int = 300) -> dict:
    """A chart with nothing to show yet: no axes (an empty plot draws them from -1 to 6), only
    ``text`` in the middle. ``layout.meta.empty`` tells the page it holds no data."""
    layout = _layout(title, height=height)
    for axis in ("xaxis", "yaxis"):
        layout[axis] = {"visible": False}
    layout["annotations"] = [
        {
            "text": text,
            "xref": "paper",
            "yref": "paper",
            "x": 0.5,
            "y": 0.5,
            "showarrow": False,
            "font": {"size": 14, "color": "#667085"},
        }
    ]
    layout["meta"] = {"empty": True}
    return go.Figure(layout=layout).to_plotly_json()


def ema(values: Sequence[float | None], weight: float = DEFAULT_SMOOTHING) -> list[float | None]:
    """Exponential moving average with TensorBoard's debiasing (the first points are not pulled
    towards zero): ``s_t = (w * a_{t-1} + (1 - w) * v_t) / (1 - w^n)``. Missing values (None)
    stay missing and do not count. ``training.js`` draws the same curve in the browser."""
    if not 0 <= weight < 1:
        raise ValueError("The smoothing weight must be in [0, 1).")
    smoothed: list[float | None] = []
    accumulated, count = 0.0, 0
    for value in values:
        if value is None:
            smoothed.append(None)
            continue
        accumulated = accumulated * weight + (1 - weight) * value
        count += 1
        smoothed.append(accumulated / (1 - weight**count))
    return smoothed


def _as_times(values: Sequence) -> list[datetime] | None:
    """``values`` as datetimes when every one is a date, a datetime or an ISO string of one
    (selectors serialise times as ISO strings); None otherwise."""
    times = []
    for value in values:
        if isinstance(value, datetime):
            times.append(value)
        elif isinstance(value, date):
            times.append(datetime(value.year, value.month, value.day))
        elif isinstance(value, str):
            try:
                times.append(datetime.fromisoformat(value))
            except ValueError:
                return None
        else:
            return None
    return times or None


def histogram(
    edges: Sequence[float], counts: Sequence[int], *, title: str, x_title: str = ""
) -> dict:
    """A histogram from precomputed bin edges (n+1) and counts (n)."""
    if not counts:
        return waiting(title)
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
    if not values:
        return waiting(title)
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
    """Line chart of ``[{"name", "x", "y"}]`` series; an optional horizontal target line.

    No points at all gives the "waiting for data" chart. Short series get markers (one point
    on a line is invisible), and a time axis whose points share one moment spans a day
    around it, labelled with the date and time, instead of milliseconds.
    """
    series = [s for s in series if len(s["x"])]
    if not series:
        return waiting(title, height=height)
    fig = go.Figure()
    for index, s in enumerate(series):
        default_mode = "lines+markers" if len(s["x"]) < 30 else "lines"
        fig.add_trace(
            go.Scatter(
                x=list(s["x"]),
                y=list(s["y"]),
                mode=s.get("mode", default_mode),
                name=s["name"],
                line={"color": PALETTE[index % len(PALETTE)], "width": 2},
            )
        )
    layout = _layout(title, x_title=x_title, y_title=y_title, height=height)
    if log_y:
        layout["yaxis"]["type"] = "log"
        layout["yaxis"].pop("rangemode")
    times = _as_times([x for s in series for x in s["x"]])
    if times:
        layout["xaxis"].update(type="date", tickformat="%H:%M<br>%b %-d")
        low, high = min(times), max(times)
        if high - low < timedelta(minutes=1):
            layout["xaxis"]["range"] = [
                (low - timedelta(hours=12)).isoformat(),
                (high + timedelta(hours=12)).isoformat(),
            ]
            layout["xaxis"]["tickformat"] = "%b %-d, %Y"
            layout["xaxis"]["nticks"] = 3
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


def metric_bars(
    series: Sequence[dict], labels: Sequence[str], *, title: str, y_title: str = "score"
) -> dict:
    """Grouped bars: one group per metric, one bar per series (a run), with 95% intervals.
    Scores are on a 0..1 axis; any other ``y_title`` (bits) gets an axis from 0 that fits."""
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
    layout = _layout(title, y_title=y_title, height=340)
    if y_title == "score":
        layout["yaxis"]["range"] = [0, 1.05]
    else:
        layout["yaxis"]["rangemode"] = "tozero"
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


# --- the Monitor tab: an endpoint's traffic over time and its drift statistics ----------------

# A traffic chart's trace says what the request log needs to show the requests behind a point
# (monitor.js opens the log on a click): ``meta`` = {"version": id or "", "canary": bool,
# "start": the first bucket (ISO), "bucket": seconds, "filter": a log filter's name or "",
# "value": its value}; the
# n-th point's bucket starts at start + n * bucket. The points are spaced evenly (x0/dx instead
# of an array of times), so 1,440 points a series cost their values only.


def _series_label(series: dict) -> str:
    label = series.get("version_label") or "no version"
    return f"{label} (canary)" if series.get("canary") else label


def _even_times(points: Sequence[dict], bucket: int) -> bool:
    """Whether the points' times are their first one plus whole buckets, in order."""
    if not points:
        return False
    first = datetime.fromisoformat(points[0]["t"])
    step = timedelta(seconds=bucket)
    return all(datetime.fromisoformat(p["t"]) == first + i * step for i, p in enumerate(points))


def _time_trace(
    points: Sequence[dict], values: list, bucket: int, meta: dict[str, object], **trace
) -> go.Scatter:
    """A scatter trace over the points' buckets: evenly spaced (x0, dx in milliseconds), else
    with its times spelled out; ``meta`` says what a click on a point opens."""
    meta = {**meta, "start": points[0]["t"], "bucket": bucket}
    # Four significant digits are what a hover shows; the rest only makes the page heavier.
    values = [float(f"{v:.4g}") if isinstance(v, float) else v for v in values]
    if _even_times(points, bucket):
        return go.Scatter(x0=points[0]["t"], dx=bucket * 1000, y=values, meta=meta, **trace)
    return go.Scatter(x=[p["t"] for p in points], y=values, meta=meta, **trace)


# A horizontal legend above a half-width chart holds about two entries a row.
LEGEND_PER_ROW = 2


def _legend_room(layout: dict, entries: int) -> None:
    """Room above the plot for a legend of ``entries`` (rows of two), so it never covers
    the lines."""
    rows = max(1, -(-entries // LEGEND_PER_ROW))
    layout["margin"]["t"] += 20 * (rows - 1)
    layout["height"] += 20 * (rows - 1)


def _time_axis(layout: dict, time_range: dict | None) -> None:
    layout["xaxis"].update(type="date", tickformat="%H:%M<br>%b %-d")
    if time_range:
        # Half a bucket past the end, so the newest point is not cut in half by the edge.
        end = datetime.fromisoformat(time_range["end"]) + timedelta(
            seconds=int(time_range.get("bucket_seconds") or 60) / 2
        )
        layout["xaxis"]["range"] = [time_range["start"], end.isoformat()]


def monitor_chart(
    series: Sequence[dict],
    metrics: Sequence[tuple[str, str]],
    *,
    title: str,
    y_title: str = "",
    time_range: dict | None = None,
    share: bool = False,
    empty_text: str = "No requests in this range",
    click_filter: tuple[str, str] | None = None,
    height: int = 280,
) -> dict:
    """One line per (dashboard series, metric): ``series`` as
    ``serving.monitoring.dashboard.endpoint_dashboard`` gives them (one per version, the
    canary's its own), ``metrics`` as ``[(point field, label)]``. The canary's lines are
    dashed, in their version's colour; a bucket without a value (no request, no thumbs) is a
    gap. ``share`` draws the y axis as a percentage (0..1). ``click_filter`` is the request-log
    filter a click on a point adds (``("status_class", "5xx")``)."""
    bucket = int((time_range or {}).get("bucket_seconds") or 60)
    value_format = ".1%" if share else ".4g"
    fig = go.Figure()
    dashes = ["solid", "dot", "dash", "longdash", "dashdot"]
    drawn = 0
    for index, s in enumerate(series):
        points = s.get("points") or []
        color = PALETTE[index % len(PALETTE)]
        for m_index, (field, label) in enumerate(metrics):
            values = [p.get(field) for p in points]
            known = sum(v is not None for v in values)
            if not known:
                continue
            drawn += 1
            name = _series_label(s) if len(metrics) == 1 else f"{_series_label(s)} {label}"
            name_filter, filter_value = click_filter or ("", "")
            meta = {
                "version": s.get("version_id") or "",
                "canary": bool(s.get("canary")),
                "filter": name_filter,
            }
            fig.add_trace(
                _time_trace(
                    points,
                    values,
                    bucket,
                    {**meta, "value": filter_value},
                    # Markers always: a busy bucket between two empty ones is a lone point.
                    mode="lines+markers",
                    name=name,
                    line={
                        "color": color,
                        "width": 2,
                        "dash": "dash" if s.get("canary") else dashes[m_index % len(dashes)],
                    },
                    marker={"size": 5 if known < 60 else 3},
                    hovertemplate=f"%{{x}}<br>%{{y:{value_format}}}<extra>{name}</extra>",
                )
            )
    if not drawn:
        return waiting(title, text=empty_text, height=height)
    layout = _layout(title, y_title=y_title, height=height)
    _legend_room(layout, drawn)
    _time_axis(layout, time_range)
    if share:
        layout["yaxis"].update(tickformat=".0%", range=[0, 1.05])
        layout["yaxis"].pop("rangemode", None)
    fig.update_layout(**layout, hovermode="closest")
    return fig.to_plotly_json()


def monitor_status_chart(
    series: Sequence[dict], *, title: str, time_range: dict | None = None, height: int = 280
) -> dict:
    """Answers that were not a success, one line per (series, status code): 429 is rate
    limited, other 4xx rejected, 5xx errors. A click opens the log filtered by that status."""
    bucket = int((time_range or {}).get("bucket_seconds") or 60)
    fig = go.Figure()
    drawn = 0
    for index, s in enumerate(series):
        points = s.get("points") or []
        codes = sorted(
            {code for p in points for code in (p.get("by_status") or {}) if int(code) >= 400}
        )
        for c_index, code in enumerate(codes):
            values = [(p.get("by_status") or {}).get(code, 0) for p in points]
            drawn += 1
            number = int(code)
            kind = "rate limited" if number == 429 else "rejected" if number < 500 else "error"
            name = f"{_series_label(s)} {code} {kind}"
            fig.add_trace(
                _time_trace(
                    points,
                    values,
                    bucket,
                    {
                        "version": s.get("version_id") or "",
                        "canary": bool(s.get("canary")),
                        "filter": "status",
                        "value": code,
                    },
                    mode="lines+markers",
                    name=name,
                    line={
                        "color": PALETTE[(index * 3 + c_index + 4) % len(PALETTE)],
                        "width": 2,
                        "dash": "dash" if s.get("canary") else "solid",
                    },
                    marker={"size": [6 if v else 0 for v in values]},
                    hovertemplate="%{x}<br>%{y} answers<extra>" + name + "</extra>",
                )
            )
    if not drawn:
        return waiting(title, text="No errors, rate-limited or rejected requests", height=height)
    layout = _layout(title, y_title="answers", height=height)
    _legend_room(layout, drawn)
    _time_axis(layout, time_range)
    fig.update_layout(**layout, hovermode="closest")
    return fig.to_plotly_json()


def drift_chart(name: str, points: Sequence[dict], *, title: str = "") -> dict:
    """One drift statistic over time (``selectors.drift_history``'s points: t, value,
    threshold, drifted, job_id) with its threshold as a dashed step line; drifted values red."""
    title = title or name
    if not points:
        return waiting(title, text="Not computed yet", height=240)
    x = [p["t"] for p in points]
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=x,
            y=[p["value"] for p in points],
            mode="lines+markers",
            name=name,
            line={"color": PALETTE[0], "width": 2},
            marker={
                "size": 8,
                "color": ["#b42318" if p.get("drifted") else PALETTE[0] for p in points],
            },
            customdata=[p.get("job_id") for p in points],
            hovertemplate="%{x}<br>%{y:.4g} (job %{customdata})<extra></extra>",
        )
    )
    thresholds = [p["threshold"] for p in points]
    if len(set(thresholds)) > 1:
        # Changed over time: a step line, each check against the threshold it was checked with.
        fig.add_trace(
            go.Scatter(
                x=x,
                y=thresholds,
                mode="lines+markers",
                name="threshold",
                line={"color": "#b42318", "width": 1.5, "dash": "dash", "shape": "hv"},
                marker={"size": 4},
                hovertemplate="threshold %{y:.4g}<extra></extra>",
            )
        )
    layout = _layout(title, height=240)
    layout["xaxis"].update(type="date", tickformat="%H:%M<br>%b %-d")
    times = _as_times(x)
    if times and max(times) - min(times) < timedelta(minutes=1):
        layout["xaxis"]["range"] = [
            (min(times) - timedelta(hours=1)).isoformat(),
            (max(times) + timedelta(hours=1)).isoformat(),
        ]
    fig.update_layout(**layout)
    if len(set(thresholds)) == 1:
        # One threshold throughout: a line across the whole chart (one point draws no line).
        fig.add_hline(
            y=thresholds[0],
            line_dash="dash",
            line_color="#b42318",
            annotation_text=f"threshold {thresholds[0]:g}",
            annotation_position="top left",
        )
    return fig.to_plotly_json()
