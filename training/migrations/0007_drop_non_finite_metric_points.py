"""Points with a NaN or infinite value, stored before the metric store refused them, are deleted
(no chart or JSON reader can show them), a non-finite epoch becomes null, and the rollups of the
curves concerned are rebuilt from the points left. Readers cope with such values anyway; this
makes the stored curves what the store would have written."""

from django.db import migrations
from django.db.models import Q

# Above the largest float: only infinities (and, on PostgreSQL, NaN, which sorts above every
# number) compare greater. SQLite cannot hold NaN in these columns (it stores NULL).
_HUGE = 1.7976931348623157e308


def drop_non_finite(apps, schema_editor):
    from training.metrics_store import BLOCK_FIELDS, rollup_blocks

    MetricPoint = apps.get_model("training", "MetricPoint")
    MetricRollup = apps.get_model("training", "MetricRollup")
    MetricPoint.objects.filter(Q(epoch__gt=_HUGE) | Q(epoch__lt=-_HUGE)).update(epoch=None)
    bad = MetricPoint.objects.filter(Q(value__gt=_HUGE) | Q(value__lt=-_HUGE))
    curves = set(bad.order_by().values_list("job_id", "name").distinct())
    bad.delete()
    for job_id, name in sorted(curves):
        MetricRollup.objects.filter(job_id=job_id, name=name).delete()
        points = MetricPoint.objects.filter(job_id=job_id, name=name).values_list(
            "step", "name", "value", "epoch"
        )
        MetricRollup.objects.bulk_create(
            [
                MetricRollup(
                    job_id=job_id,
                    name=name,
                    level=level,
                    block=block,
                    **dict(zip(BLOCK_FIELDS, summary, strict=True)),
                )
                for (_name, level, block), summary in rollup_blocks(points.iterator()).items()
            ],
            batch_size=2000,
        )


class Migration(migrations.Migration):
    dependencies = [
        ("training", "0006_job_enqueued_at"),
    ]

    operations = [
        migrations.RunPython(drop_non_finite, migrations.RunPython.noop),
    ]
