"""The row browser of a dataset version (pages of rows, a search over the text columns, a filter
on any column) and the diff between two versions of a dataset (schema changes, rows added,
removed and changed).

Both read through the data stage's selectors; the browser's parameters are checked by the
runtime's :class:`~datasets_app.cleaning.browse.RowQuery`, the same validator the rows API
uses, and its sentences are shown next to the fields they name.
"""

from __future__ import annotations

import json
import time

from django import forms
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from datasets_app import selectors
from datasets_app.cleaning.browse import OPERATORS, PAGE_SIZE_DEFAULT, RowQuery
from datasets_app.cleaning.options import OptionError
from datasets_app.preview import browse_rows
from frontend.views.helpers import call_service, project_context

PAGE_SIZES = (25, 50, 100, 200)
CELL_CHARS = 300  # what a table cell shows; the API gives up to MAX_CELL_CHARS


class RowBrowserForm(forms.Form):
    """Types only: what each parameter means and its bounds are RowQuery's."""

    search = forms.CharField(required=False, label="Search text columns")
    column = forms.ChoiceField(required=False, label="Filter column")
    op = forms.ChoiceField(
        required=False, label="Operator", choices=[(k, v) for k, v in OPERATORS.items()]
    )
    value = forms.CharField(required=False, label="Value")
    split = forms.ChoiceField(required=False, label="Split")
    page_size = forms.TypedChoiceField(
        required=False,
        coerce=int,
        empty_value=PAGE_SIZE_DEFAULT,
        label="Rows per page",
        choices=[(n, n) for n in PAGE_SIZES],
    )
    page = forms.IntegerField(required=False, widget=forms.HiddenInput)

    def __init__(self, *args, columns=(), splits=(), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["column"].choices = [("", "—"), *[(c, c) for c in columns]]
        self.fields["split"].choices = [("", "all rows"), *[(s, s) for s in splits]]


def _page_url(request: HttpRequest, page: int) -> str:
    params = request.GET.copy()
    params["page"] = str(page)
    return "?" + params.urlencode()


def _show(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= CELL_CHARS else text[:CELL_CHARS] + "…"


@login_required
def version_rows(request: HttpRequest, pk: int) -> HttpResponse:
    """Pages of a version's rows (or one split's), searched and filtered."""
    version = selectors.get_version_for_user(request.user, pk)
    splits = {s.name: s for s in version.splits.all()}
    form = RowBrowserForm(request.GET, columns=version.columns, splits=list(splits))
    result, elapsed_ms, rows = None, None, []
    if form.is_valid():
        data = form.cleaned_data
        split = splits.get(data["split"]) if data["split"] else None
        try:
            query = RowQuery(
                page=data["page"] or 1,
                page_size=data["page_size"] or PAGE_SIZE_DEFAULT,
                search=data["search"],
                column=data["column"] or None,
                op=data["op"] or "equals",
                value=data["value"] or None,
            )
            started = time.perf_counter()
            result = browse_rows(split.file if split else version.file, query)
            elapsed_ms = (time.perf_counter() - started) * 1000
        except OptionError as exc:
            form.add_error(exc.field if exc.field in form.fields else None, str(exc))
    if result is not None:
        rows = [
            (number, [(row[c] is None, _show(row[c])) for c in result["columns"]])
            for number, row in zip(result["row_numbers"], result["rows"], strict=True)
        ]
    context = project_context(request, version.dataset.project, "data")
    context.update(
        version=version,
        dataset=version.dataset,
        form=form,
        result=result,
        rows=rows,
        elapsed_ms=elapsed_ms,
        previous_url=_page_url(request, result["page"] - 1)
        if result and result["page"] > 1
        else None,
        next_url=_page_url(request, result["page"] + 1)
        if result and result["page"] < result["pages"]
        else None,
    )
    return render(request, "frontend/data/rows.html", context)


# --- diff between two versions ----------------------------------------------------------------

DIFF_EXAMPLES = 20


class VersionDiffForm(forms.Form):
    """Which two versions to compare, and optionally the column that names each row."""

    a = forms.TypedChoiceField(coerce=int, label="From version")
    b = forms.TypedChoiceField(coerce=int, label="To version")
    key = forms.ChoiceField(
        required=False,
        label="Match rows by",
        help_text="A column that names each row once (an id). Without one, rows are compared "
        "by their content: an edited row shows as one removed and one added.",
    )

    def __init__(self, *args, versions=(), columns=(), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        choices = [(v.pk, f"v{v.number} · {v.kind} · {v.row_count:,} rows") for v in versions]
        self.fields["a"].choices = choices
        self.fields["b"].choices = choices
        self.fields["key"].choices = [("", "row content"), *[(c, c) for c in columns]]


def _example_table(examples: list[dict]) -> tuple[list[str], list[tuple[int, list]]]:
    columns = list(dict.fromkeys(name for e in examples for name in e["values"]))
    rows = [
        (e["row"], [(e["values"].get(c) is None, _show(e["values"].get(c))) for c in columns])
        for e in examples
    ]
    return columns, rows


@login_required
def dataset_diff(request: HttpRequest, pk: int) -> HttpResponse:
    """Compare two versions of a dataset: schema changes, rows added, removed and changed."""
    dataset = selectors.get_dataset_for_user(request.user, pk)
    versions = list(selectors.versions_for_user(request.user).filter(dataset=dataset))
    by_id = {v.pk: v for v in versions}
    # Defaults follow the data: the newest version against the one before it.
    initial = {"a": versions[1].pk, "b": versions[0].pk} if len(versions) >= 2 else {}
    # Every column of any version: the diff itself says when a key is missing from one.
    columns = list(dict.fromkeys(c for v in versions for c in v.columns))
    form = VersionDiffForm(
        request.GET if "a" in request.GET else None,
        initial=initial,
        versions=versions,
        columns=columns,
    )
    result = None
    if form.is_bound and form.is_valid():
        data = form.cleaned_data
        result = call_service(
            form,
            selectors.version_diff,
            old=by_id[data["a"]],
            new=by_id[data["b"]],
            key=data["key"] or None,
            limit=DIFF_EXAMPLES,
        )
    context = project_context(request, dataset.project, "data")
    context.update(
        dataset=dataset,
        versions=versions,
        form=form,
        result=result,
        added=_example_table(result["examples"]["added"]) if result else None,
        removed=_example_table(result["examples"]["removed"]) if result else None,
    )
    return render(request, "frontend/data/diff.html", context)
