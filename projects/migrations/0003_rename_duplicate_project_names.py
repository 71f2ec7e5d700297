"""Before project names become unique within a team (0004): rename existing duplicates
("name (2)", "name (3)"...; the oldest keeps its name), so the constraint applies to an existing
database. A migration of its own: PostgreSQL refuses to alter a table with row updates pending in
the same transaction."""

from django.db import migrations

MAX_NAME = 120


def rename_duplicates(apps, schema_editor) -> None:
    Project = apps.get_model("projects", "Project")
    taken: dict[int, set[str]] = {}
    for team_id, name in Project.objects.values_list("team_id", "name"):
        taken.setdefault(team_id, set()).add(name)
    seen: set[tuple[int, str]] = set()
    for project in Project.objects.order_by("created_at", "id"):
        key = (project.team_id, project.name)
        if key not in seen:
            seen.add(key)
            continue
        number = 2
        while True:
            suffix = f" ({number})"
            candidate = project.name[: MAX_NAME - len(suffix)] + suffix
            if candidate not in taken[project.team_id]:
                break
            number += 1
        taken[project.team_id].add(candidate)
        seen.add((project.team_id, candidate))
        project.name = candidate
        project.save(update_fields=["name"])


class Migration(migrations.Migration):
    dependencies = [
        ("projects", "0002_job_enqueued_at"),
    ]

    operations = [
        migrations.RunPython(rename_duplicates, migrations.RunPython.noop),
    ]
