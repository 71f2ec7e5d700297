"""Curves: stored in bulk, read back downsampled with their extremes kept."""

from __future__ import annotations

import math

from training.metrics_store import curve, write_points
from training.models import TrainingJob


def _job(world) -> TrainingJob:
    return TrainingJob.objects.create(
        project=world.project, name="j", kind="pretrain_clm", external=True
    )


def test_short_curves_come_back_whole(world) -> None:
    job = _job(world)
    write_points(job.pk, [(s, "loss", 1.0 / s, None) for s in range(1, 51)])
    result = curve(job.pk, "loss")
    assert result["total"] == 50 and result["steps"] == list(range(1, 51))
    assert result["values"][0] == 1.0


def test_long_curves_are_downsampled_keeping_spikes_and_ends(world) -> None:
    job = _job(world)
    points = [(s, "loss", 2.0 + math.sin(s / 50), None) for s in range(20_000)]
    points[7_777] = (7_777, "loss", 99.0, None)  # a spike
    points[12_345] = (12_345, "loss", -5.0, None)  # a dip
    write_points(job.pk, points)
    result = curve(job.pk, "loss", max_points=400)
    assert result["total"] == 20_000
    assert len(result["steps"]) <= 400
    assert result["steps"][0] == 0 and result["steps"][-1] == 19_999
    assert result["steps"] == sorted(result["steps"])
    assert max(result["values"]) == 99.0 and min(result["values"]) == -5.0
    assert 7_777 in result["steps"] and 12_345 in result["steps"]


def test_metric_names_are_listed_once_each(world) -> None:
    from training.metrics_store import metric_names, summarize

    job = _job(world)
    write_points(job.pk, [(s, name, 1.0, None) for s in range(50) for name in ("loss", "lr")])
    assert metric_names([job.pk]) == {job.pk: ["loss", "lr"]}
    assert set(summarize(job.pk)) == {"loss", "lr"}
