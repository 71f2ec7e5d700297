"""Table layouts an upload may be required to have: the one validator of imported preference
data (trl's standard formats), called by the ingest on every row of its first pass.

- ``preference``: a prompt, a chosen and a rejected response per row (DPO, reward models);
- ``unpaired``: a prompt, a completion and a boolean label per row (KTO).

A row missing one of them, or holding an empty one, fails the ingest naming its line, so no
version holds pairs training would trip over. Plain Python, no Django.
"""

from __future__ import annotations

from llmhub.reporting import JobInputError

# layout -> (field, the column role that names its column)
LAYOUTS: dict[str, tuple[tuple[str, str], ...]] = {
    "preference": (("prompt", "prompt"), ("chosen", "chosen"), ("rejected", "rejected")),
    "unpaired": (("prompt", "prompt"), ("completion", "target"), ("label", "label")),
}
LABEL_VALUES = {"true": True, "false": False, "1": True, "0": False}


def layout_columns(layout: str, column_roles: dict[str, str] | None) -> dict[str, str]:
    """field -> the column holding it: the column its role maps to, else the field's name."""
    roles = column_roles or {}
    return {name: roles.get(role, name) for name, role in LAYOUTS[layout]}


def check_label(value) -> bool | None:
    """The boolean a label value means (true/false, 1/0, "true"/"false"), or None."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        return LABEL_VALUES.get(value.strip().lower())
    return None


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
        where = f"Line {lines[offset]}" if lines else f"Row {first_row + offset}"
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
                        f"{where}: {label} must be true or false, not {str(value)[:40]!r}."
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
