"""Column roles: guessing ``{role: column}`` from names and types, and checking a mapping."""

from __future__ import annotations

from datasets_app.columns import ROLE_HINTS, ROLES
from llmhub.reporting import JobInputError

TEXT_ROLES = ("text", "target", "prompt", "chosen", "rejected", "context", "question")
_ROLE_TYPES = {"label": ("string", "integer", "boolean"), "answers": ("struct", "list")}


def _typed(columns: list[str] | list[dict[str, str]]) -> list[dict[str, str | None]]:
    return [c if isinstance(c, dict) else {"name": c, "type": None} for c in columns]


def infer_column_roles(columns: list[str] | list[dict[str, str]]) -> dict[str, str]:
    """Guess ``{role: column}`` from column names with ``ROLE_HINTS`` (``document`` is text,
    ``summary`` is target, ``label`` is label...); first hint wins, a column gets one role.

    With column types (``[{"name", "type"}]``, as IngestResult.columns), a text role only
    goes to a string column, so a list column named ``target`` does not hide a string
    ``summary``. A table whose only unclaimed string column is unnamed by the hints (a
    plain-text corpus) gets it as ``text``."""
    typed = _typed(columns)
    roles: dict[str, str] = {}
    taken: set[str] = set()
    for role, hints in ROLE_HINTS.items():
        allowed = ("string",) if role in TEXT_ROLES else _ROLE_TYPES.get(role)
        candidates = {
            str(c["name"]).lower(): c["name"]
            for c in typed
            if c["type"] is None or allowed is None or c["type"] in allowed
        }
        for hint in hints:
            column = candidates.get(hint)
            if column is not None and column not in taken:
                roles[role] = column
                taken.add(column)
                break
    if not {"text", "prompt", "context"} & set(roles):
        strings = [
            c["name"] for c in typed if c["name"] not in taken and c["type"] in (None, "string")
        ]
        if len(strings) == 1:
            roles["text"] = strings[0]
    return roles


def validate_column_roles(roles: dict[str, str], columns: list[str] | list[dict[str, str]]) -> None:
    """JobInputError for an unknown role, a mapped column the table lacks, or (with typed
    columns) a text role mapped to a column that does not hold text."""
    if not isinstance(roles, dict):
        raise JobInputError("Column roles must map a role to a column name.")
    unknown = sorted(set(roles) - set(ROLES))
    if unknown:
        raise JobInputError(f"Unknown role(s): {', '.join(unknown)}. Roles: {', '.join(ROLES)}.")
    typed = {c["name"]: c["type"] for c in _typed(columns)}
    missing = sorted({str(column) for column in roles.values() if column not in typed})
    if missing:
        raise JobInputError(
            f"The mapped column(s) {', '.join(map(repr, missing))} are not in the table. Its "
            f"columns: {', '.join(map(str, typed))}."
        )
    for role, column in roles.items():
        kind = typed[column]
        allowed = ("string",) if role in TEXT_ROLES else _ROLE_TYPES.get(role)
        if kind is not None and allowed is not None and kind not in allowed:
            raise JobInputError(
                f"The {role!r} role needs a column of {' or '.join(allowed)}, but {column!r} "
                f"holds {kind}."
            )
