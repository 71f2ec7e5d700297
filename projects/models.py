"""Teams, memberships and roles, projects and their goals, API tokens, and the audit log."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinLengthValidator
from django.db import models
from django.utils import timezone

from evaluation.metrics.catalog import METRICS, TASK_TYPES, metric_info
from llmhub.models import Job


class Role(models.TextChoices):
    ADMIN = "admin", "Admin"
    MANAGER = "manager", "Manager"
    ENGINEER = "engineer", "Engineer"
    RATER = "rater", "Rater"
    VIEWER = "viewer", "Viewer"


class Team(models.Model):
    name = models.CharField(max_length=100)
    slug = models.SlugField(max_length=60, unique=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["team_id", "user__username"]
        constraints = [
            models.UniqueConstraint(fields=["team", "user"], name="one_membership_per_user_team")
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.team} ({self.role})"


class TaskType(models.TextChoices):
    GENERATION = "generation", "Text generation"
    SUMMARIZATION = "summarization", "Summarization"
    CLASSIFICATION = "classification", "Classification"
    QA = "qa", "Question answering"
    TRANSLATION = "translation", "Translation"


assert {choice.value for choice in TaskType} == set(TASK_TYPES)


class Project(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="projects")
    name = models.CharField(max_length=120)
    slug = models.SlugField(max_length=80)
    description = models.TextField(blank=True, default="")
    problem_statement = models.TextField(
        blank=True, default="", help_text="What the model must do, for whom, and why it matters."
    )
    task_type = models.CharField(max_length=20, choices=TaskType.choices)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-updated_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["team", "slug"], name="project_slug_unique_in_team"),
            # Two projects of one team with one name cannot be told apart in any list.
            models.UniqueConstraint(fields=["team", "name"], name="project_name_unique_in_team"),
        ]

    def __str__(self) -> str:
        return self.name

    def validate_constraints(self, exclude=None) -> None:
        try:
            super().validate_constraints(exclude=exclude)
        except ValidationError as exc:
            if "__all__" not in exc.message_dict:
                raise
            # Say which name or slug clashes instead of Django's generic constraint message,
            # each on its field (both at once when both clash).
            others = Project.objects.filter(team_id=self.team_id).exclude(pk=self.pk)
            errors = {}
            if self.name and others.filter(name=self.name).exists():
                errors["name"] = (
                    f"A project named '{self.name}' already exists in this team; choose another "
                    "name."
                )
            if self.slug and others.filter(slug=self.slug).exists():
                errors["slug"] = (
                    f"A project with the slug '{self.slug}' already exists in this team."
                )
            if not errors:
                raise
            raise ValidationError(errors) from exc


class Comparison(models.TextChoices):
    AT_LEAST = ">=", "at least (>=)"
    AT_MOST = "<=", "at most (<=)"


class Split(models.TextChoices):
    TRAIN = "train", "train"
    VALIDATION = "validation", "validation"
    TEST = "test", "test"


class GoalStatus(models.TextChoices):
    NOT_MEASURED = "not_measured", "Not measured"
    MET = "met", "Met"
    NOT_MET = "not_met", "Not met"


METRIC_CHOICES = [(m.name, m.label) for m in METRICS.values()]


class Goal(models.Model):
    """A measurable target such as "F1 (macro) >= 0.85 on test".

    Evaluation feeds ``measured_value`` (with where it came from); the status is derived from it,
    so it can never disagree with the value.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="goals")
    metric = models.CharField(max_length=40, choices=METRIC_CHOICES)
    comparison = models.CharField(max_length=2, choices=Comparison.choices)
    target = models.FloatField()
    split = models.CharField(max_length=20, choices=Split.choices, default=Split.TEST)
    deadline = models.DateField(null=True, blank=True)
    measured_value = models.FloatField(null=True, blank=True)
    measured_at = models.DateTimeField(null=True, blank=True)
    measured_source = models.CharField(
        max_length=255, blank=True, default="", help_text="What produced the measured value."
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["project_id", "id"]

    def __str__(self) -> str:
        return f"{self.metric_label} {self.comparison} {self.target:g} on {self.split}"

    @property
    def metric_label(self) -> str:
        return METRICS[self.metric].label if self.metric in METRICS else self.metric

    @property
    def status(self) -> GoalStatus:
        if self.measured_value is None:
            return GoalStatus.NOT_MEASURED
        return GoalStatus.MET if self.is_met_by(self.measured_value) else GoalStatus.NOT_MET

    def is_met_by(self, value: float) -> bool:
        if self.comparison == Comparison.AT_LEAST:
            return value >= self.target
        return value <= self.target

    @property
    def is_overdue(self) -> bool:
        return bool(
            self.deadline and self.deadline < timezone.localdate() and self.status != GoalStatus.MET
        )

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if self.metric:
            try:
                info = metric_info(self.metric)
            except KeyError as exc:
                errors["metric"] = str(exc.args[0])
            else:
                if info.bounded and self.target is not None and not 0 <= self.target <= 1:
                    errors["target"] = (
                        f"{info.label} is a fraction between 0 and 1; {self.target:g} is out of"
                        f" range (for 85% write 0.85)."
                    )
                if self.project_id and self.project.task_type not in info.tasks:
                    errors["metric"] = (
                        f"{info.label} does not fit a {self.project.get_task_type_display()}"
                        f" project."
                    )
        if self.target is not None and self.target != self.target:  # NaN
            errors["target"] = "The target must be a number."
        if errors:
            raise ValidationError(errors)


# A token's lifetime feeds a date (now + days): bounded well inside year 9999.
API_TOKEN_MAX_DAYS = 3650


class ApiToken(models.Model):
    """A personal API token. Only a SHA-256 of the secret is stored; it is shown once."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100, validators=[MinLengthValidator(1)])
    prefix = models.CharField(max_length=16, unique=True)
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or self.expires_at > timezone.now()


class AuditEvent(models.Model):
    """Who did what to which object. Written by services, never edited."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="audit_events")
    project = models.ForeignKey(
        Project, null=True, blank=True, on_delete=models.SET_NULL, related_name="audit_events"
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    verb = models.CharField(max_length=60, db_index=True)
    target_type = models.CharField(max_length=60)
    target_id = models.CharField(max_length=40, blank=True, default="")
    target_repr = models.CharField(max_length=255, blank=True, default="")
    changes = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.actor} {self.verb} {self.target_repr}"


class ProjectHealthCheck(Job):
    """A cheap job that inspects a project: proves the job machinery end to end.

    Parameters let tests and operators exercise each outcome on a real worker: ``sleep_seconds``
    keeps it running (for cancel and heartbeat checks), ``fail_with`` makes it fail with that
    message.
    """

    kind_label = "health check"
    queue = "cpu"

    sleep_seconds = models.FloatField(default=0)
    fail_with = models.CharField(max_length=255, blank=True, default="")
    result = models.JSONField(default=dict, blank=True)
