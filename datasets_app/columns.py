"""Column roles: what a column of a dataset version means to training and evaluation.

Plain data, no Django: shared by the data runtime, the training and evaluation runtimes and
the web side. A version's ``column_roles`` maps a role to the name of a column in its table.
"""

from __future__ import annotations

ROLES: dict[str, str] = {
    "text": "the input text (a document, a verse, a query)",
    "target": "the reference output: a summary, a translation, an answer",
    "label": "a class label for classification",
    "prompt": "an instruction or conversation prefix",
    "chosen": "the preferred response of a preference pair",
    "rejected": "the rejected response of a preference pair",
    "context": "the passage a question is asked about",
    "question": "a question about the context",
    "answers": "SQuAD-style answers: {'text': [...], 'answer_start': [...]}",
}

# Column names that suggest a role when the user maps nothing; first match wins.
ROLE_HINTS: dict[str, tuple[str, ...]] = {
    "text": ("text", "document", "verse_text", "content", "sentence", "input", "source", "body"),
    "target": ("target", "summary", "translation", "output", "response", "answer", "tldr"),
    "label": ("label", "category", "class", "intent", "sentiment"),
    "prompt": ("prompt", "instruction", "query"),
    "chosen": ("chosen", "chosen_response"),
    "rejected": ("rejected", "rejected_response"),
    "context": ("context", "passage"),
    "question": ("question",),
    "answers": ("answers",),
}
