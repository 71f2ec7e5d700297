"""A perplexity run's scoring facts (tokens and characters scored, windows, stride) are stored
on the EvaluationRun where the worker saves its results, returned by the API and shown on the
run page (issue 17)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from django.utils import timezone

from evaluation import services
from evaluation.models import EvaluationRun
from tests.evaluation.test_sliding_perplexity import (  # noqa: F401
    CONTEXT,
    _evaluate,
    launchable,
    tiny_lm,
)

# One text (a .txt upload as one row); its first token "1" is one character, context only.
TEXT = "1. First Citizen:\nBefore we proceed any further, hear me speak.\nAll: Speak, speak."


@pytest.mark.django_db
def test_a_perplexity_run_stores_its_scoring_and_the_api_and_page_show_it(
    world,
    api,
    client,
    launchable,  # noqa: F811
    tiny_lm: Path,  # noqa: F811
    tmp_path,
) -> None:
    model, version = launchable
    data = tmp_path / "one.parquet"
    pd.DataFrame({"text": [TEXT]}).to_parquet(data)
    result = _evaluate(tiny_lm, ["perplexity", "bits_per_char"], data_path=data, join_rows=True)
    run = EvaluationRun.objects.create(
        project=world.project,
        model_version=model,
        dataset_version=version,
        split="",
        task_type=world.project.task_type,
        metrics=["perplexity", "bits_per_char"],
        status="succeeded",
        finished_at=timezone.now(),
    )
    services.evaluation_store_results(run=run, result=result.as_dict())  # the worker's save
    run.refresh_from_db()
    scoring = run.scoring
    assert scoring["joined"] is True and scoring["characters"] == len(TEXT)
    assert scoring["scored_characters"] == scoring["characters"] - 1
    assert scoring["window"] == CONTEXT and scoring["stride"] == CONTEXT
    assert scoring["windows"] >= 2 and scoring["scored_tokens"] == scoring["tokens"] - 1

    body = api(world.users["engineer"]).get(f"/api/v1/evaluation-runs/{run.pk}/").json()
    assert body["scoring"] == scoring

    client.force_login(world.users["engineer"])
    page = client.get(f"/evaluation-runs/{run.pk}/").content.decode()
    line = (
        f"Scored: {len(TEXT) - 1} of {len(TEXT)} characters in {scoring['windows']} windows "
        f"of {CONTEXT}, stride {CONTEXT}"
    )
    assert line in page
