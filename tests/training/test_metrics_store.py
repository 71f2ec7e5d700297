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


def _stored_rollups(job_id: int) -> dict:
    from training.metrics_store import BLOCK_FIELDS
    from training.models import MetricRollup

    return {
        (r["name"], r["level"], r["block"]): tuple(r[f] for f in BLOCK_FIELDS)
        for r in MetricRollup.objects.filter(job_id=job_id).values()
    }


def test_rollups_of_batches_in_any_order_equal_those_of_all_points_at_once(world) -> None:
    from training.metrics_store import rollup_blocks

    job = _job(world)
    points = [(s, "loss", math.cos(s / 7) * (1 + s % 13), None) for s in range(5_000)]
    points += [(s, "lr", 1e-3 * (1 - s / 5_000), None) for s in range(0, 5_000, 10)]
    # Later steps first, and a batch boundary inside a block at every level.
    for batch in (points[3_001:], points[1_000:3_001], points[:1_000]):
        write_points(job.pk, batch)
    stored = _stored_rollups(job.pk)
    assert stored == rollup_blocks(points)
    coarsest = stored[("loss", 3, 0)]
    assert coarsest[0] == 5_000 and coarsest[1] == 0 and coarsest[3] == 4_999
    assert coarsest[6] == min(v for _s, n, v, _e in points if n == "loss")
    # The first 64-step block of the learning rate: steps 0, 10, ..., 60, falling.
    assert stored[("lr", 0, 0)] == (7, 0, 1e-3, 60, 1e-3 * 0.988, 60, 1e-3 * 0.988, 0, 1e-3)


def test_medium_curves_are_downsampled_from_their_points(world) -> None:
    job = _job(world)
    write_points(job.pk, [(s, "loss", (s * 7_919 % 1_000) / 1_000, None) for s in range(5_000)])
    write_points(job.pk, [(2_500, "loss", 50.0, None)])  # a second value at a logged step
    result = curve(job.pk, "loss")
    assert result["total"] == 5_001
    # Finer than the rollups' 16-step blocks: every bucket gives up to four points.
    assert 1_500 < len(result["steps"]) <= 2_000
    assert max(result["values"]) == 50.0 and result["steps"][-1] == 4_999


def test_sparse_curves_over_many_steps_read_a_coarse_rollup_level(
    world, django_assert_max_num_queries
) -> None:
    job = _job(world)
    # 20,000 evaluations, one every 1,000 steps: 20 million steps.
    points = [(s * 1_000, "eval_loss", 1.0 / (1 + s), None) for s in range(20_000)]
    points[15_000] = (15_000_000, "eval_loss", 7.0, None)
    write_points(job.pk, points)
    with django_assert_max_num_queries(2):
        result = curve(job.pk, "eval_loss", max_points=1_000)
    assert result["total"] == 20_000 and len(result["steps"]) <= 1_000
    assert result["steps"][0] == 0 and result["steps"][-1] == 19_999_000
    assert 15_000_000 in result["steps"] and max(result["values"]) == 7.0


def test_the_migration_rolls_up_points_stored_before_rollups(world) -> None:
    import importlib

    from django.apps import apps

    from training.metrics_store import rollup_blocks
    from training.models import MetricPoint, MetricRollup

    fill_rollups = importlib.import_module("training.migrations.0005_metric_rollups").fill_rollups
    job = _job(world)
    points = [(s, "loss", (s * 37 % 101) / 10, None) for s in range(3_000)]
    MetricPoint.objects.bulk_create(
        MetricPoint(job=job, step=s, name=n, value=v, epoch=e) for s, n, v, e in points
    )
    assert not MetricRollup.objects.exists()
    fill_rollups(apps, None)
    assert _stored_rollups(job.pk) == rollup_blocks(points)
    assert curve(job.pk, "loss")["total"] == 3_000


# --- bad and non-finite points ------------------------------------------------------------------


def test_strict_writes_refuse_a_batch_naming_its_first_bad_point(world) -> None:
    from django.core.exceptions import ValidationError

    from training.models import MetricPoint

    job = _job(world)
    cases = [
        ((3, "loss", math.inf, None), "points[1].value: must be a finite number."),
        ((3, "loss", "NaN", None), "points[1].value: must be a finite number."),
        ((3, "loss", 1.0, math.nan), "points[1].epoch: must be a finite number."),
        ((10**20, "loss", 1.0, None), "points[1].step: must be between 0 and 2147483647"),
        ((2**31, "loss", 1.0, None), "points[1].step: must be between 0 and 2147483647"),
        ((-1, "loss", 1.0, None), "points[1].step: must be between 0 and 2147483647"),
        ((1.5, "loss", 1.0, None), "points[1].step: must be a whole number"),
        ((3, "l\x00", 1.0, None), "points[1].name: must be text of 1 to 60 characters"),
        ((3, "", 1.0, None), "points[1].name: must be text of 1 to 60 characters"),
    ]
    for bad, message in cases:
        try:
            write_points(job.pk, [(1, "loss", 1.0, None), bad])
        except ValidationError as exc:
            assert message in exc.message_dict["points"][0], (bad, exc.message_dict)
        else:
            raise AssertionError(f"{bad} was stored")
    assert not MetricPoint.objects.exists()
    # The largest step the column holds is fine.
    assert write_points(job.pk, [(2**31 - 1, "loss", 1.0, None)]) == 1


def test_reported_non_finite_points_are_dropped_with_a_warning(world, caplog) -> None:
    from training.metrics_store import record_reported_points
    from training.models import MetricPoint, TrainingJob

    job = _job(world)
    with caplog.at_level("WARNING", logger="training.metrics_store"):
        stored = record_reported_points(
            job.pk,
            [(7, {"loss": math.nan, "lr": 0.1}, None), (8, {"loss": math.inf, "lr": 0.1}, 0.5)],
        )
    assert stored == 2
    assert sorted(MetricPoint.objects.values_list("name", "step")) == [("lr", 7), ("lr", 8)]
    assert "2 metric point(s) not stored" in caplog.text and "'loss' at step 7" in caplog.text
    assert TrainingJob.objects.get(pk=job.pk).global_step == 8
    # Through the job machinery's hook, as the heartbeat calls it.
    TrainingJob.write_metric_points(job.pk, [(9, {"loss": 2.0}, None)])
    assert curve(job.pk, "loss")["steps"] == [9]


def _store_as_older_versions_did(job, rows) -> None:
    """Points and rollups written without any check, as before non-finite values were refused
    (SQLite keeps infinities; PostgreSQL keeps NaN too)."""
    from training.metrics_store import _upsert_rollups, rollup_blocks
    from training.models import MetricPoint

    MetricPoint.objects.bulk_create(
        MetricPoint(job=job, step=s, name=n, value=v, epoch=e) for s, n, v, e in rows
    )
    _upsert_rollups(job.pk, rollup_blocks(rows))


def _strict_json(response) -> dict:
    def refuse(token: str):
        raise AssertionError(f"{token} in the JSON")

    return __import__("json").loads(response.content, parse_constant=refuse)


def test_non_finite_values_already_stored_are_served_as_null(world, api, client) -> None:
    from django.urls import reverse

    from training.models import TrainingJob

    job = _job(world)
    short = [(s, "loss", 1.0 / s, None) for s in range(1, 21)]
    short[4] = (5, "loss", math.inf, None)
    long = [(s, "grad_norm", float(s % 7), None) for s in range(30_000)]
    long[1_234] = (1_234, "grad_norm", -math.inf, None)
    long[20_000] = (20_000, "grad_norm", math.inf, None)
    _store_as_older_versions_did(job, short + long)

    user = world.users["engineer"]
    response = api(user).get(f"/api/v1/training-jobs/{job.pk}/curves/")
    assert response.status_code == 200
    curves = _strict_json(response)["curves"]
    assert curves["loss"]["values"][4] is None and curves["loss"]["values"][3] == 0.25
    assert None in curves["grad_norm"]["values"] and len(curves["grad_norm"]["steps"]) <= 2000
    assert api(user).get(f"/api/v1/training-jobs/{job.pk}/").status_code == 200
    client.force_login(user)
    page = client.get(reverse("training-job-page", args=[job.pk]))
    assert page.status_code == 200
    # The summary comparisons read is valid JSON (SQLite's and PostgreSQL's JSON columns refuse
    # an Infinity, which made the runner crash when the job ended).
    from training.metrics_store import summarize

    summary = summarize(job.pk)
    assert summary["loss"]["values"][4] is None
    TrainingJob.objects.filter(pk=job.pk).update(curve_summary=summary)


def test_discarding_after_a_step_rebuilds_the_rollups_of_what_is_left(world) -> None:
    from training.metrics_store import discard_after, rollup_blocks
    from training.models import TrainingJob

    job = _job(world)
    first = [(s, "loss", math.sin(s / 9), None) for s in range(40_000)]
    first += [(s, "eval_loss", 5.0, None) for s in range(0, 40_000, 500)]
    write_points(job.pk, first)
    TrainingJob.objects.filter(pk=job.pk).update(global_step=39_999)
    assert discard_after(job.pk, 33_000) == 40_000 - 33_001 + 13
    again = [(s, "loss", -1.0, None) for s in range(33_001, 36_000)]
    write_points(job.pk, again)
    kept = [p for p in first if p[0] <= 33_000] + again
    assert _stored_rollups(job.pk) == rollup_blocks(kept)
    result = curve(job.pk, "loss")
    assert result["total"] == 36_000 and result["steps"][-1] == 35_999
    assert TrainingJob.objects.get(pk=job.pk).global_step == 33_000
    assert discard_after(job.pk, 50_000) == 0


def test_the_migration_drops_non_finite_points_and_rebuilds_their_rollups(world) -> None:
    import importlib

    from django.apps import apps

    from training.metrics_store import rollup_blocks
    from training.models import MetricPoint

    migration = importlib.import_module("training.migrations.0007_drop_non_finite_metric_points")
    job = _job(world)
    clean = [(s, "lr", 1e-3, None) for s in range(100)]
    rows = [(s, "loss", 1.0 / (1 + s), None) for s in range(1_000)]
    rows[10] = (10, "loss", math.inf, None)
    rows[700] = (700, "loss", -math.inf, 0.5)
    rows[20] = (20, "loss", 2.0, math.inf)
    _store_as_older_versions_did(job, rows + clean)
    migration.drop_non_finite(apps, None)
    left = [r for r in rows if r[0] not in (10, 700)]
    left[19] = (20, "loss", 2.0, None)
    assert MetricPoint.objects.filter(name="loss").count() == 998
    assert MetricPoint.objects.get(name="loss", step=20).epoch is None
    assert _stored_rollups(job.pk) == rollup_blocks(left + clean)
