"""Project names are unique within a team (duplicates were renamed by 0003)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("projects", "0003_rename_duplicate_project_names"),
    ]

    operations = [
        migrations.AddConstraint(
            model_name="project",
            constraint=models.UniqueConstraint(
                fields=("team", "name"), name="project_name_unique_in_team"
            ),
        ),
    ]
