"""Table layouts an upload may be required to have: the one validator of imported preference
data (trl's standard formats), called by the ingest on every row of its first pass.

- ``preference``: a prompt, a chosen and a rejected response per row (DPO, reward models);
- ``unpaired``: a prompt, a completion and a boolean label per row (KTO).

A row missing one of them, or holding an empty one, fails the ingest naming its line and row, so
no version holds pairs training would trip over. A label is stored as a boolean whatever the
file wrote (``true``/``false``, ``1``/``0``, ``yes``/``no``, ``thumbs up``/``thumbs down``: a
CSV holds text, and KTO reads a boolean); anything else is refused. Plain Python, no Django.
"""

from __future__ import annotations

import re

from llmhub.reporting import JobInputError

# layout -> (field, the column role that names its column)
LAYOUTS: dict[str, tuple[tuple[str, str], ...]] = {
    "preference": (("prompt", "prompt"), ("chosen", "chosen"), ("rejected", "rejected")),
    "unpaired": (("prompt", "prompt"), ("completion", "target"), ("label", "label")),
}
# What a label may say (lower case, spaces, "_" and "-" alike), and the boolean it means.
LABEL_VALUES = {
    "true": True,
    "false": False,
    "1": True,
    "0": False,
    "yes": True,
    "no": False,
    "thumbs up": True,
    "thumbs down": False,
    "\N{THUMBS UP SIGN}": True,
    "\N{THUMBS DOWN SIGN}": False,
}
LABEL_HELP = "true/false, 1/0, yes/no or thumbs up/down"
# The fields a layout stores with a type of their own (the others are text).
BOOLEAN_FIELDS = {"unpaired": ("label",)}


def layout_columns(layout: str, column_roles: dict[str, str] | None) -> dict[str, str]:
    """field -> the column holding it: the column its role maps to, else the field's name."""
    roles = column_roles or {}
    return {name: roles.get(role, name) for name, role in LAYOUTS[layout]}


def check_label(value) -> bool | None:
    """The boolean a label value means (see ``LABEL_VALUES``; JSON true/false and 1/0 too),
    or None."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        return LABEL_VALUES.get(re.sub(r"[\s_-]+", " ", value.strip().lower()))
    return None


def _boolean_columns(layout: str | None, column_roles: dict[str, str] | None) -> list[str]:
    if layout not in BOOLEAN_FIELDS:
        return []
    columns = layout_columns(layout, column_roles)
    return [columns[name] for name in BOOLEAN_FIELDS[layout]]


def convert_rows(
    batch: list[dict], *, layout: str | None, column_roles: dict[str, str] | None
) -> list[dict]:
    """``batch`` (rows :func:`check_rows` accepted) with the layout's labels as booleans, in
    place: what the table stores, whatever the file wrote."""
    for column in _boolean_columns(layout, column_roles):
        for row in batch:
            row[column] = check_label(row[column])
    return batch


def table_schema(schema, *, layout: str | None, column_roles: dict[str, str] | None):
    """The Parquet (pyarrow) ``schema`` with the layout's label column typed boolean, however
    the reader typed the file's values (text, integers)."""
    import pyarrow as pa

    for column in _boolean_columns(layout, column_roles):
        index = schema.get_field_index(column)
        if index >= 0:
            schema = schema.set(index, pa.field(column, pa.bool_()))
    return schema


def check_rows(
    batch: list[dict],
    *,
    layout: str,
    column_roles: dict[str, str] | None,
    first_row: int,
) -> int:
    """Raise JobInputError for the first row of ``batch`` lacking a field of ``layout`` or
    holding an empty one, naming its line (``batch.lines`` when the reader keeps them, else
    the row number). Returns how many rows repeat their prompt at the start of both responses
    (the implicit-prompt layout: trl would then read the prompt twice)."""
    columns = layout_columns(layout, column_roles)
    lines = getattr(batch, "lines", None)
    repeated = 0
    for offset, row in enumerate(batch):
        row_number = first_row + offset
        where = f"Line {lines[offset]} (row {row_number})" if lines else f"Row {row_number}"
        for name, column in columns.items():
            value = row.get(column)
            label = f"'{name}'" if column == name else f"'{name}' (column '{column}')"
            if value is None:
                raise JobInputError(
                    f"{where} has no {label}: every row of {layout} data needs "
                    f"{', '.join(columns)}."
                )
            if name == "label":
                if check_label(value) is None:
                    raise JobInputError(
                        f"{where}: {label} must be {LABEL_HELP}, not {str(value)[:40]!r}."
                    )
            elif not isinstance(value, str):
                raise JobInputError(f"{where}: {label} must be text, not {type(value).__name__}.")
            elif not value.strip():
                raise JobInputError(f"{where}: {label} is empty.")
        if layout == "preference":
            prompt = row[columns["prompt"]]
            if row[columns["chosen"]].startswith(prompt) and row[columns["rejected"]].startswith(
                prompt
            ):
                repeated += 1
    return repeated


def repeated_prompt_warning(count: int, layout_cols: dict[str, str]) -> str:
    return (
        f"In {count:,} rows both responses begin with the prompt (the implicit-prompt layout): "
        f"a trainer reading '{layout_cols['prompt']}' and '{layout_cols['chosen']}' would read "
        "the prompt twice. Map the chosen and rejected roles to columns holding the responses "
        "only (e.g. chosen_response, rejected_response)."
    )
