"""Runs: a project's training jobs as one table (filter, sort, group by any hyperparameter), the
curves of chosen runs overlaid, "clone this run" for the launch form, and the model version
page's own parts (tags and description, stage history, evaluations, goal status, download).

The table reads the project's jobs in one query (whatever their number) and does the rest in
Python: hyperparameters and final metrics are JSON, which no database sorts or groups portably,
and a few thousand rows sort in milliseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape  # the stdlib's: Django's lazy-wrapped one costs 10x per call
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.safestring import SafeString, mark_safe

from evaluation import selectors as evaluation_selectors
from evaluation.metrics.catalog import METRICS
from frontend import charts_runs
from frontend.templatetags.llmhub_ui import duration, job_badge, num
from frontend.views.helpers import call_service, project_context
from llmhub.models import JobStatus
from projects import selectors as project_selectors
from projects.models import Project
from training import metrics_store, selectors, services
from training.downloads import model_download_response
from training.models import BaseSource, ModelVersion, TrainingJob, TrainingKind

# At most this many runs overlaid in one chart (each is one or two reads of the metric store).
MAX_OVERLAY = 8
# Hyperparameter and metric columns shown at once; every name stays sortable and groupable.
MAX_HP_COLUMNS = 10
MAX_METRIC_COLUMNS = 6
# Metrics offered first (as columns and as the group's "best"), when a run has them.
PREFERRED_METRICS = ("eval_loss", "train_loss", "eval_accuracy", "eval_f1_macro")
FIXED_COLUMNS = (
    ("name", "Run"),
    ("status", "Status"),
    ("kind", "Kind"),
    ("base", "Base"),
    ("dataset", "Dataset"),
    ("created", "Created"),
    ("duration", "Duration"),
)


def lower_is_better(metric: str) -> bool:
    """Whether a lower value of ``metric`` is better: the evaluation catalog's word for its own
    metrics (``eval_`` prefixed or not); losses, perplexities, errors and times otherwise."""
    info = METRICS.get(metric.removeprefix("eval_"))
    if info is not None:
        return not info.higher_is_better
    return any(word in metric for word in ("loss", "perplexity", "error", "runtime", "seconds"))


@dataclass
class RunsQuery:
    """The table's settings, from the query string (unknown values fall back to defaults)."""

    status: str = ""
    kind: str = ""
    q: str = ""
    param: str = ""
    value: str = ""
    sort: str = "-created"
    group: str = ""
    metric: str = ""
    overlay: list[int] = field(default_factory=list)
    overlay_requested: int = 0
    curve: str = ""

    @classmethod
    def from_params(cls, params: QueryDict) -> RunsQuery:
        overlay = []
        for raw in params.getlist("overlay"):
            if raw.isdigit() and int(raw) not in overlay and len(raw) < 19:
                overlay.append(int(raw))
        return cls(
            status=params.get("status", "") if params.get("status") in JobStatus.values else "",
            kind=params.get("kind", "") if params.get("kind") in TrainingKind.values else "",
            q=params.get("q", "").strip()[:200],
            param=params.get("param", "").strip()[:100],
            value=params.get("value", "").strip()[:200],
            sort=params.get("sort", "").strip()[:120] or "-created",
            group=params.get("group", "").strip()[:100],
            metric=params.get("metric", "").strip()[:100],
            overlay=overlay[:MAX_OVERLAY],
            overlay_requested=len(overlay),
            curve=params.get("curve", "").strip()[:60],
        )

    def params(self, **changes: Any) -> dict[str, Any]:
        values = {
            "status": self.status,
            "kind": self.kind,
            "q": self.q,
            "param": self.param,
            "value": self.value,
            "sort": self.sort,
            "group": self.group,
            "metric": self.metric,
            **changes,
        }
        return {k: v for k, v in values.items() if v not in ("", None)}

    def url(self, **changes: Any) -> str:
        return "?" + urlencode(self.params(**changes))


# What a row shows, read as plain values: building 500 model instances (and the ten related
# ones each carries through the selector's joins) was most of the table's time.
_ROW_FIELDS = (
    "id",
    "name",
    "status",
    "kind",
    "method",
    "base_source",
    "model_spec",
    "base_path",
    "hub_model_id",
    "base_model__name",
    "base_model_version__number",
    "base_model_version__registered_model__name",
    "train_version_id",
    "train_version__number",
    "train_version__dataset__name",
    "train_split",
    "hyperparameters",
    "final_metrics",
    "warnings",
    "sweep__name",
    "created_at",
    "started_at",
    "finished_at",
)


def runs_queryset(user, project: Project):
    """The project's training jobs (scoped by the selector) as the values a row shows, in one
    query."""
    return selectors.training_jobs_for_user(user).filter(project=project).values(*_ROW_FIELDS)


def _base_label(job: dict) -> str:
    source = job["base_source"]
    if source == BaseSource.RANDOM:
        spec = job["model_spec"] if isinstance(job["model_spec"], dict) else {}
        return f"random {spec.get('family', '')} {spec.get('size', '')}".strip()
    if source == BaseSource.BASE_MODEL and job["base_model__name"]:
        return job["base_model__name"]
    if source == BaseSource.MODEL_VERSION and job["base_model_version__number"] is not None:
        name = job["base_model_version__registered_model__name"]
        return f"{name} v{job['base_model_version__number']}"
    return job["base_path"] or job["hub_model_id"] or BaseSource(source).label


_KIND_LABELS = dict(TrainingKind.choices)


def _row(job: dict, now) -> dict[str, Any]:
    started, finished = job["started_at"], job["finished_at"]
    # As Job.duration: a running job's so far.
    duration = (finished or now) - started if started is not None else None
    warnings = job["warnings"] if isinstance(job["warnings"], list) else []
    return {
        "id": job["id"],
        "name": job["name"],
        "status": job["status"],
        "kind": job["kind"],
        "kind_label": _KIND_LABELS.get(job["kind"], job["kind"]),
        "method": job["method"],
        "base": _base_label(job),
        "dataset": f"{job['train_version__dataset__name']} v{job['train_version__number']}"
        if job["train_version_id"]
        else "",
        "train_split": job["train_split"],
        "sweep": job["sweep__name"] or "",
        "warning": (warnings[0].get("message", "") if isinstance(warnings[0], dict) else "")
        if warnings
        else None,
        "hp": job["hyperparameters"] if isinstance(job["hyperparameters"], dict) else {},
        "metrics": {
            k: v
            for k, v in (job["final_metrics"] or {}).items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        },
        "duration": duration,
        "duration_s": duration.total_seconds() if duration is not None else None,
        "created": job["created_at"],
    }


def _text(value: Any) -> str:
    return str(value).lower()


def _value_matches(actual: Any, wanted: str) -> bool:
    """A hyperparameter value against typed text: numbers by value (``1e-3`` is ``0.001``),
    anything else by case-insensitive substring."""
    if isinstance(actual, int | float) and not isinstance(actual, bool):
        try:
            return math.isclose(float(actual), float(wanted), rel_tol=1e-9, abs_tol=0.0)
        except ValueError:
            pass
    return wanted.lower() in _text(actual)


def _matches(row: dict, query: RunsQuery) -> bool:
    if query.q:
        needle = query.q.lower()
        if needle not in row["name"].lower() and not any(
            _value_matches(v, query.q) for v in row["hp"].values()
        ):
            return False
    if query.param:
        if query.param not in row["hp"]:
            return False
        if query.value and not _value_matches(row["hp"][query.param], query.value):
            return False
    return True


def _display(value: Any) -> str:
    """A hyperparameter as a table cell: numbers short, nothing as a dash."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _cell(row: dict, column: str) -> Any:
    if column.startswith("hp:"):
        return row["hp"].get(column[3:])
    if column.startswith("metric:"):
        return row["metrics"].get(column[7:])
    if column == "duration":
        return row["duration_s"]
    return row.get(column)


def _sort_key(value: Any) -> tuple:
    # Numbers before text; both sort among their own kind (a grid of mixed values stays sane).
    if isinstance(value, bool):
        return (0, float(value), "")
    if isinstance(value, int | float):
        return (0, float(value), "")
    if hasattr(value, "timestamp"):
        return (0, value.timestamp(), "")
    return (1, 0.0, _text(value))


def sort_rows(rows: list[dict], sort: str) -> list[dict]:
    """Rows by one column (``-`` first for descending); rows without a value always last."""
    descending = sort.startswith("-")
    column = sort.lstrip("-")
    present = [r for r in rows if _cell(r, column) not in (None, "")]
    missing = [r for r in rows if _cell(r, column) in (None, "")]
    present.sort(key=lambda r: (_sort_key(_cell(r, column)), r["id"]), reverse=descending)
    return present + missing


def _best(rows: list[dict], metric: str) -> dict | None:
    scored = [r for r in rows if metric in r["metrics"]]
    if not scored:
        return None
    pick = min if lower_is_better(metric) else max
    best = pick(scored, key=lambda r: r["metrics"][metric])
    return {"value": best["metrics"][metric], "run": best}


def group_rows(rows: list[dict], name: str, metric: str) -> list[dict]:
    """Rows grouped by the value of hyperparameter ``name`` (runs without it in a group of their
    own, last), each group with its count and its best value of ``metric``."""
    groups: dict[str, dict] = {}
    for row in rows:
        has = name in row["hp"]
        value = row["hp"].get(name)
        key = repr(value) if has else "\x00missing"
        group = groups.setdefault(
            key, {"value": value, "label": str(value) if has else "(not set)", "rows": []}
        )
        group["rows"].append(row)
    ordered = sorted(
        groups.values(),
        key=lambda g: (g["label"] == "(not set)", _sort_key(g["value"])),
    )
    for group in ordered:
        group["count"] = len(group["rows"])
        group["best"] = _best(group["rows"], metric) if metric else None
    return ordered


def _metric_columns(rows: list[dict], chosen: list[str]) -> list[str]:
    names = list(dict.fromkeys(m for r in rows for m in r["metrics"]))
    preferred = [m for m in PREFERRED_METRICS if m in names]
    others = sorted(m for m in names if m not in preferred)
    columns = (preferred + others)[:MAX_METRIC_COLUMNS]
    return columns + [m for m in chosen if m and m in names and m not in columns]


def _hp_columns(rows: list[dict], chosen: list[str]) -> tuple[list[str], list[str]]:
    """All hyperparameter names, and those shown as columns: the ones whose value differs
    between the runs listed (what tells them apart), then those the user sorts, groups or
    filters by."""
    names = sorted({n for r in rows for n in r["hp"]})
    varying = [n for n in names if len({repr(r["hp"].get(n)) for r in rows}) > 1]
    columns = (varying or names)[:MAX_HP_COLUMNS]
    return names, columns + [n for n in chosen if n and n in names and n not in columns]


def runs_table(user, project: Project, query: RunsQuery) -> dict[str, Any]:
    """Everything the runs table shows: rows (filtered and sorted, or grouped), the columns, the
    names one can sort and group by. One query for the jobs, whatever their number."""
    qs = runs_queryset(user, project)
    if query.status:
        qs = qs.filter(status=query.status)
    if query.kind:
        qs = qs.filter(kind=query.kind)
    now = timezone.now()
    everything = [_row(job, now) for job in qs]
    rows = [r for r in everything if _matches(r, query)]
    sort_column = query.sort.lstrip("-")
    hp_names, hp_columns = _hp_columns(
        everything,
        [
            query.group,
            query.param,
            sort_column[3:] if sort_column.startswith("hp:") else "",
        ],
    )
    metric_columns = _metric_columns(
        everything,
        [query.metric, sort_column[7:] if sort_column.startswith("metric:") else ""],
    )
    metric_names = sorted({m for r in everything for m in r["metrics"]})
    valid_sorts = (
        {key for key, _ in FIXED_COLUMNS}
        | {f"hp:{n}" for n in hp_names}
        | {f"metric:{n}" for n in metric_names}
    )
    sort = query.sort if sort_column in valid_sorts else "-created"
    rows = sort_rows(rows, sort)
    metric = query.metric if query.metric in metric_names else ""
    if not metric:
        metric = next((m for m in PREFERRED_METRICS if m in metric_names), "")
        metric = metric or (metric_names[0] if metric_names else "")
    group = query.group if query.group in hp_names else ""
    for row in rows:
        row["hp_cells"] = [_display(row["hp"].get(n)) for n in hp_columns]
        row["metric_cells"] = [row["metrics"].get(n) for n in metric_columns]
    return {
        "rows": rows,
        "total": len(everything),
        # Ungrouped, all rows are one group without a header: the template has one row loop.
        "groups": group_rows(rows, group, metric)
        if group
        else [{"label": "", "value": None, "rows": rows, "count": len(rows), "best": None}],
        "group": group,
        "metric": metric,
        "sort": sort,
        "hp_names": hp_names,
        "hp_columns": hp_columns,
        "metric_columns": metric_columns,
        "metric_names": metric_names,
        "jobs": {r["id"]: r for r in everything},
    }


def _row_html(row: dict, overlay: list[int]) -> SafeString:
    """One table row as HTML, every value escaped. Built here rather than in the template:
    Django's template engine (and even ``format_html``, lazy-wrapped) took most of a second for
    500 rows of twenty cells; plain escaping takes a few milliseconds."""
    name = escape(row["name"])
    extra = ""
    if row["sweep"]:
        extra += f' <small class="muted">sweep {escape(row["sweep"])}</small>'
    if row["warning"] is not None:
        extra += f' <span class="tag" title="{escape(row["warning"])}">warnings</span>'
    lora = ' <span class="tag">LoRA</span>' if row["method"] == "lora" else ""
    split = f" [{escape(row['train_split'])}]" if row["train_split"] else ""
    created = row["created"]
    cells = [
        f'<td><input type="checkbox" name="overlay" value="{row["id"]}" form="runs-overlay-form"'
        f' aria-label="Overlay {name}"{" checked" if row["id"] in overlay else ""}></td>',
        f'<td data-column="name"><a href="/training-jobs/{row["id"]}/"><strong>{name}</strong>'
        f"</a>{extra}</td>",
        f'<td data-column="status">{job_badge(row["status"])}</td>',
        f'<td data-column="kind"><small>{escape(row["kind_label"])}</small>{lora}</td>',
        f'<td data-column="base"><small>{escape(row["base"] or "—")}</small></td>',
        f'<td data-column="dataset"><small>{escape(row["dataset"] or "—")}{split}</small></td>',
        f'<td data-column="created" class="muted" title="{created.isoformat()}">'
        f"{created:%Y-%m-%d %H:%M}</td>",
        f'<td data-column="duration" class="num">{duration(row["duration"])}</td>',
    ]
    cells += [f'<td class="num mono" data-kind="hp">{escape(v)}</td>' for v in row["hp_cells"]]
    cells += [
        f'<td class="num mono" data-kind="metric">{num(v, 4)}</td>' for v in row["metric_cells"]
    ]
    # Every value above went through escape(); numbers and durations are formatted here.
    return mark_safe(f'<tr data-run="{row["id"]}">{"".join(cells)}</tr>')  # noqa: S308


def _columns(query: RunsQuery, table: dict) -> list[dict]:
    """Header cells: label, key and the link that sorts by it (again: the other direction)."""
    columns = [{"key": key, "label": label, "kind": "fixed"} for key, label in FIXED_COLUMNS]
    columns += [{"key": f"hp:{n}", "label": n, "kind": "hp"} for n in table["hp_columns"]]
    columns += [
        {"key": f"metric:{n}", "label": n, "kind": "metric"} for n in table["metric_columns"]
    ]
    for column in columns:
        ascending = table["sort"] == column["key"]
        descending = table["sort"] == "-" + column["key"]
        column["sorted"] = "asc" if ascending else "desc" if descending else ""
        column["url"] = query.url(sort=("-" if ascending else "") + column["key"])
    return columns


def _sort_options(table: dict) -> list[tuple[str, str]]:
    """Every sortable column in both directions, hidden hyperparameters and metrics included."""
    keys = [(key, label) for key, label in FIXED_COLUMNS]
    keys += [(f"hp:{n}", n) for n in table["hp_names"]]
    keys += [(f"metric:{n}", n) for n in table["metric_names"]]
    options = []
    for key, label in keys:
        options += [(key, f"{label} ↑"), (f"-{key}", f"{label} ↓")]
    return options


def overlay(table: dict, query: RunsQuery) -> dict[str, Any] | None:
    """The chosen metric's curve of each chosen run (the metric store's chart reader, as the
    curves API serves it) as one figure."""
    ids = [i for i in query.overlay if i in table["jobs"]]
    if not ids:
        return None
    names = metrics_store.metric_names(ids)
    available = sorted({n for values in names.values() for n in values})
    curve_name = query.curve if query.curve in available else ""
    if not curve_name:
        curve_name = "loss" if "loss" in available else (available[0] if available else "")
    series = []
    for job_id in ids:
        data = (
            metrics_store.curve(job_id, curve_name)
            if curve_name in names[job_id]
            else {"steps": [], "values": []}
        )
        series.append(
            {
                "name": f"{table['jobs'][job_id]['name']} (#{job_id})",
                "steps": data["steps"],
                "values": data["values"],
            }
        )
    return {
        "ids": ids,
        "metric": curve_name,
        "available": available,
        "figure": charts_runs.overlay(series, metric=curve_name),
    }


@login_required
def runs_page(request: HttpRequest, pk: int) -> HttpResponse:
    project = project_selectors.get_project_for_user(request.user, pk)
    query = RunsQuery.from_params(request.GET)
    table = runs_table(request.user, project, query)
    for row in table["rows"]:
        row["html"] = _row_html(row, query.overlay)
    context = project_context(request, project, "train")
    context.update(
        table=table,
        query=query,
        columns=_columns(query, table),
        hidden=query.params(),
        overlay=overlay(table, query),
        max_overlay=MAX_OVERLAY,
        statuses=JobStatus.choices,
        kinds=TrainingKind.choices,
        group_options=table["hp_names"],
        sort_options=_sort_options(table),
    )
    return render(request, "frontend/train/runs.html", context)


# Clone this run --------------------------------------------------------------------------


def clone_initial(job: TrainingJob) -> dict[str, Any]:
    """The launch form's initial values that repeat ``job``: kind, method, base, data, splits,
    tokenizer and hyperparameters, named ``<name>-clone``."""
    suffix = "-clone"
    initial: dict[str, Any] = {
        "name": job.name[: 120 - len(suffix)] + suffix,
        "kind": job.kind,
        "method": job.method,
        "base_source": job.base_source,
        "base_model_version": str(job.base_model_version_id or ""),
        "base_model": str(job.base_model_id or ""),
        "base_path": job.base_path,
        "hub_model_id": job.hub_model_id,
        "tokenizer": str(job.tokenizer_id or ""),
        "train_version": str(job.train_version_id or ""),
        "train_split": job.train_split,
        "eval_split": job.eval_split,
    }
    spec = job.model_spec or {}
    for key in ("family", "size"):
        if spec.get(key):
            initial[key] = spec[key]
    for name, value in (job.hyperparameters or {}).items():
        initial[f"hp_{name}"] = value
    return initial


def clone_for(request: HttpRequest, project: Project) -> dict[str, Any]:
    """``clone_initial`` of the job named by ``?clone=``, fetched within the user's teams and
    this project (anything else is a 404); ``{}`` without the parameter."""
    raw = request.GET.get("clone", "")
    if not raw:
        return {}
    if not raw.isdigit() or len(raw) > 18:
        raise Http404("No such training job.")
    job = selectors.get_training_job_for_user(request.user, int(raw))
    if job.project_id != project.pk:
        raise Http404("No such training job in this project.")
    return clone_initial(job)


def retrain_for(request: HttpRequest, project: Project) -> dict[str, Any]:
    """The launch form's initial values for an alert's "Retrain" (``?retrain=<alert id>``):
    the current version's own job (``clone_initial``) with base = that version and data = the
    alert's retrain dataset version and its splits (``serving.monitoring.retrain``). An alert
    the user may not see, of another project or without retrain data is a 404; ``{}`` without
    the parameter."""
    from serving.monitoring import alert_selectors, retrain

    raw = request.GET.get("retrain", "")
    if not raw:
        return {}
    if not raw.isdigit() or len(raw) > 18:
        raise Http404("No such alert.")
    alert = alert_selectors.get_alert_for_user(request.user, int(raw))
    if alert.endpoint.project_id != project.pk:
        raise Http404("No such alert in this project.")
    if alert.retrain_dataset_version_id is None:
        raise Http404("This alert has no retrain dataset yet: use its Retrain first.")
    values = retrain.launch_values(alert)
    if request.method == "GET":
        # e.g. too few labels to train on: say so before anyone launches a job that would fail.
        for warning in alert.retrain_dataset_version.warnings or []:
            messages.warning(request, f"{alert.retrain_dataset_version}: {warning}")
    job = retrain.source_job(retrain.current_version(alert))
    initial = clone_initial(job) if job is not None else {}
    initial.update(
        name=values["name"],
        kind=values["kind"],
        method=values["method"],
        base_source=values["base_source"],
        base_model_version=str(values["base_model_version"]),
        base_model="",
        base_path="",
        hub_model_id="",
        tokenizer=str(values["tokenizer"] or ""),
        train_version=str(values["train_version"]),
        train_split=values["train_split"],
        eval_split=values["eval_split"],
    )
    for name, value in values["hyperparameters"].items():
        initial[f"hp_{name}"] = value
    return initial


# The model version page ------------------------------------------------------------------


class ModelVersionEditForm(forms.Form):
    description = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 3}), label="Description"
    )
    tags = forms.CharField(
        required=False,
        label="Tags",
        help_text="Comma-separated short labels, e.g. baseline, small-data.",
    )

    def clean_tags(self) -> list[str]:
        # Only the splitting happens here; the service says what a valid tag is.
        return [t.strip() for t in self.cleaned_data["tags"].split(",") if t.strip()]


def _goal_status(version: ModelVersion) -> list[dict[str, Any]]:
    """Each goal of the project, measured on this version: its latest value on the goal's
    split, and whether it meets the goal."""
    rows = []
    for item in evaluation_selectors.goal_progress(version.project):
        mine = [p for p in item["points"] if p["model_version"] == version.pk]
        latest = mine[-1] if mine else None
        rows.append(
            {
                "goal": item["goal"],
                "value": latest["value"] if latest else None,
                "run": latest["run"] if latest else None,
                "met": latest is not None and item["goal"].is_met_by(latest["value"]),
            }
        )
    return rows


def model_version_page(request: HttpRequest, version: ModelVersion) -> dict | HttpResponse:
    """The model version page's tags and description form (saved on POST: a redirect back),
    stage history, evaluations and goal status."""
    initial = {"description": version.description, "tags": ", ".join(version.tags or [])}
    form = ModelVersionEditForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        saved = call_service(
            form,
            services.model_version_update,
            actor=request.user,
            version=version,
            description=form.cleaned_data["description"],
            tags=form.cleaned_data["tags"],
        )
        if saved is not None:
            messages.success(request, f"{version}: description and tags saved.")
            return redirect("model-version-page", pk=version.pk)
    return {
        "edit_form": form,
        "edit_open": form.is_bound,
        "stage_changes": version.stage_changes.select_related("changed_by"),
        "evaluations": evaluation_selectors.evaluation_runs_for_user(request.user).filter(
            model_version=version
        )[:50],
        "goal_status": _goal_status(version),
    }


@login_required
def model_version_download(request: HttpRequest, pk: int) -> HttpResponse:
    """The version's model files as one zip, streamed from storage."""
    version = selectors.get_model_version_for_user(request.user, pk)
    return model_download_response(version)


# The compare page's hyperparameter diff ----------------------------------------------------


def hyperparameter_diff(models: list[tuple[str, dict]]) -> dict[str, Any]:
    """For models given as ``(label, hyperparameters)``: the names whose values differ between
    them (a name one model lacks counts as differing), and those that are all equal."""
    labels = [label for label, _ in models]
    names = sorted({n for _, hp in models for n in (hp or {})})
    differ, same = [], []
    for name in names:
        values = [(hp or {}).get(name) for _, hp in models]
        present = [name in (hp or {}) for _, hp in models]
        row = {
            "name": name,
            "values": [_display(v) if p else "—" for v, p in zip(values, present, strict=True)],
        }
        if all(present) and len({repr(v) for v in values}) == 1:
            same.append(row)
        else:
            differ.append(row)
    return {"labels": labels, "differ": differ, "same": same}
