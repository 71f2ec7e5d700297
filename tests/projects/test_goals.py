"""Goal validation and the derived status."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from projects.models import Goal, GoalStatus
from projects.services import goal_create, goal_record_measurement, goal_update


def test_a_goal_takes_the_comparison_its_metric_implies(world) -> None:
    manager = world.users["manager"]
    f1 = goal_create(actor=manager, project=world.project, metric="f1_macro", target=0.85)
    ppl = goal_create(actor=manager, project=world.project, metric="perplexity", target=20)
    assert (f1.comparison, ppl.comparison) == (">=", "<=")
    assert str(f1) == "F1 (macro) >= 0.85 on test"


@pytest.mark.parametrize(
    ("payload", "field", "message"),
    [
        ({"metric": "fluency", "target": 0.5}, "metric", "Unknown metric 'fluency'"),
        ({"metric": "accuracy", "target": "high"}, "target", "A valid number is required"),
        ({"metric": "accuracy", "target": 85}, "target", "for 85% write 0.85"),
        ({"metric": "bleu", "target": 0.3}, "metric", "does not fit a Classification project"),
        ({"metric": "accuracy", "target": 0.9, "split": "holdout"}, "split", "not a valid choice"),
        ({"metric": "accuracy", "target": 0.9, "comparison": ">"}, "comparison", "not a valid"),
        ({"metric": "accuracy", "target": 0.9, "deadline": "soon"}, "deadline", "wrong format"),
        ({"metric": "accuracy", "target": 0.9, "owner": "bob"}, "owner", "Unknown field"),
    ],
)
def test_bad_goals_get_a_400_naming_the_field(world, api, payload, field, message) -> None:
    response = api(world.users["manager"]).post(
        "/api/v1/goals/", {"project": world.project.pk, **payload}
    )
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert field in error["fields"]
    assert message in " ".join(error["fields"][field])
    assert not Goal.objects.exists()


def test_status_follows_the_measured_value(world) -> None:
    goal = goal_create(
        actor=world.users["admin"], project=world.project, metric="accuracy", target=0.8
    )
    assert goal.status == GoalStatus.NOT_MEASURED
    goal_record_measurement(goal=goal, value=0.75, source="evaluation #1")
    assert goal.status == GoalStatus.NOT_MET
    goal_record_measurement(goal=goal, value=0.81, source="evaluation #2")
    assert goal.status == GoalStatus.MET and goal.measured_source == "evaluation #2"


def test_lower_is_better_goals_are_met_below_target(world) -> None:
    goal = goal_create(
        actor=world.users["admin"], project=world.project, metric="perplexity", target=30
    )
    goal_record_measurement(goal=goal, value=25.0, source="eval")
    assert goal.status == GoalStatus.MET


def test_changing_the_metric_forgets_the_old_measurement(world) -> None:
    admin = world.users["admin"]
    goal = goal_create(actor=admin, project=world.project, metric="accuracy", target=0.8)
    goal_record_measurement(goal=goal, value=0.9, source="eval")
    goal = goal_update(actor=admin, goal=goal, metric="f1_macro")
    assert goal.measured_value is None and goal.status == GoalStatus.NOT_MEASURED


def test_an_invalid_update_saves_nothing(world) -> None:
    admin = world.users["admin"]
    goal = goal_create(actor=admin, project=world.project, metric="accuracy", target=0.8)
    with pytest.raises(ValidationError):
        goal_update(actor=admin, goal=goal, target=3.0)
    goal.refresh_from_db()
    assert goal.target == 0.8


def test_goal_status_shows_on_the_project_api(world, api) -> None:
    admin = world.users["admin"]
    met = goal_create(actor=admin, project=world.project, metric="accuracy", target=0.8)
    goal_create(actor=admin, project=world.project, metric="f1_macro", target=0.8)
    goal_record_measurement(goal=met, value=0.9, source="eval")
    body = api(admin).get(f"/api/v1/projects/{world.project.pk}/").json()
    assert body["goal_summary"] == {"met": 1, "not_met": 0, "not_measured": 1}
    assert {g["status"] for g in body["goals"]} == {"met", "not_measured"}
