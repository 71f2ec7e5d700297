"""Rows the drift-job tests build: an endpoint serving a tiny GPT-2 (with its byte-level
tokenizer) trained, as far as the registry knows, on a dataset version of support questions; and
request-log records of prompts of the same or of another topic, written through the log's own
ingest."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import pyarrow as pa

from serving.services import endpoint_create, endpoint_promote, request_logs_ingest
from tests.serving.builders import request_record
from training.models import TrainingJob

BANKING = {
    "verb": ["transfer", "withdraw", "deposit", "send", "move", "check", "freeze", "report"],
    "noun": ["money", "card", "account", "balance", "savings", "payment", "loan", "cheque"],
    "where": ["abroad", "online", "today", "from the app", "to my partner", "at an ATM"],
}
COOKING = {
    "verb": ["bake", "roast", "simmer", "grill", "whisk", "knead", "season", "marinate"],
    "noun": ["bread", "chicken", "risotto", "salmon", "pancakes", "lasagna", "dough", "soup"],
    "where": ["in the oven", "overnight", "on a skillet", "for dinner", "with garlic", "slowly"],
}
BANKING_TEMPLATES = [
    "How do I {verb} my {noun} {where}?",
    "Why can't I {verb} the {noun} {where}",
    "I want to {verb} some {noun} {where}, is there a fee?",
    "Can you help me {verb} my {noun}",
]
COOKING_TEMPLATES = [
    "How long should I {verb} the {noun} {where}?",
    "What is the best way to {verb} {noun} {where}",
    "Can I {verb} the {noun} {where} without a recipe?",
    "Tips to {verb} {noun} {where}",
]


def texts(topic: str, n: int, seed: int) -> list[str]:
    """``n`` prompts of ``topic`` ("banking" or "cooking"), drawn with ``seed``."""
    rng = random.Random(f"{topic}-{seed}")
    words, templates = (
        (BANKING, BANKING_TEMPLATES) if topic == "banking" else (COOKING, COOKING_TEMPLATES)
    )
    return [
        rng.choice(templates).format(**{k: rng.choice(v) for k, v in words.items()})
        for _ in range(n)
    ]


@dataclass
class Monitored:
    world: object
    manager: object
    endpoint: object
    version: object
    reference: object  # the dataset version the version was trained on


def monitored_endpoint(world, model_dir, *, reference_rows: int = 400, seed: int = 0):
    """An endpoint serving a version of ``model_dir`` whose training job read the text column
    of a dataset version of banking questions."""
    from tests.datasets_app.tables import make_version
    from tests.serving.conftest import register_version

    manager = world.users["manager"]
    reference = make_version(
        world,
        pa.table({"text": texts("banking", reference_rows, 1000 + seed)}),
        name=f"support questions {seed}",
        column_roles={"text": "text"},
    )
    version = register_version(world.project, model_dir, actor=manager)
    TrainingJob.objects.filter(model_version=version).update(
        train_version=reference, column_roles={"text": "text"}
    )
    endpoint = endpoint_create(
        actor=manager, project=world.project, name=f"Bot {seed}", slug=f"bot-{seed}"
    )
    endpoint_promote(actor=manager, endpoint=endpoint, version=version)
    endpoint.refresh_from_db()
    return Monitored(world, manager, endpoint, version, reference)


def log_requests(endpoint, prompts, *, completion: str = " Sure, here is how.", at=None, **fields):
    """Log one answered completion per prompt (as the engine hands them to the runner)."""
    at = at or time.time()
    records = [
        request_record(
            endpoint,
            prompt_text=prompt,
            completion_text=completion,
            created_at=at - 0.001 * (len(prompts) - i),
            **fields,
        )
        for i, prompt in enumerate(prompts)
    ]
    return request_logs_ingest(records=records)
