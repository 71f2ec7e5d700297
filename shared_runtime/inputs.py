"""The text a model reads for a data row, built one way for training, evaluation and serving.

Rows are dicts of column -> value; ``roles`` maps a column role (``datasets_app.columns``:
text, prompt, context, question, target, ...) to the row's column.
"""

from __future__ import annotations

import math
from typing import Any

# Causal/seq2seq QA prompt; extractive QA models read (question, context) pairs instead.
QA_PROMPT = "{context}\n\nQuestion: {question}\nAnswer:"
# Seq2seq QA input (the T5 SQuAD layout).
SEQ2SEQ_QA_PROMPT = "question: {question} context: {context}"
# Separates the prompt and the text when a row has both.
PROMPT_SEPARATOR = "\n\n"


def build_input(
    row: dict[str, Any], roles: dict[str, str], task_type: str, *, model_kind: str = "causal_lm"
) -> str:
    """The text a model reads for ``row``.

    QA: :data:`QA_PROMPT` (causal LMs, and the row preview of extractive QA) or
    :data:`SEQ2SEQ_QA_PROMPT` (seq2seq: the question first, so cutting a long context at the end
    keeps it). Otherwise the prompt and the text joined by :data:`PROMPT_SEPARATOR` (either
    alone when only one is mapped).
    """
    if task_type == "qa":
        template = SEQ2SEQ_QA_PROMPT if model_kind == "seq2seq" else QA_PROMPT
        return template.format(
            context=cell_text(row, roles, "context"), question=cell_text(row, roles, "question")
        )
    parts = [cell_text(row, roles, role) for role in ("prompt", "text")]
    return PROMPT_SEPARATOR.join(p for p in parts if p)


def cell_text(row: dict[str, Any], roles: dict[str, str], role: str) -> str:
    """The row's value for ``role`` as text; empty when unmapped, missing or NaN."""
    column = roles.get(role)
    value = row.get(column) if column else None
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)
