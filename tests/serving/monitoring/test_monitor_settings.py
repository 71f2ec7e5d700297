"""Monitor settings: every problem reported at once and nothing written, through the service
and the REST API; the webhook secret never read back; drift jobs started and read through the
API."""

from __future__ import annotations

import pyarrow as pa
import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.test import override_settings

from datasets_app import services as data_services
from projects.models import AuditEvent
from serving.monitoring import services
from serving.monitoring.models import DriftJob, MonitorSettings
from serving.services import endpoint_create, endpoint_promote
from tests.datasets_app.tables import make_version
from tests.serving.builders import stored_version


@pytest.fixture
def endpoint(world, tmp_path):
    manager = world.users["manager"]
    version = stored_version(world.project, tmp_path)
    endpoint = endpoint_create(actor=manager, project=world.project, name="Bot", slug="bot")
    endpoint_promote(actor=manager, endpoint=endpoint, version=version)
    endpoint.refresh_from_db()
    return endpoint


def _no_text(world):
    return make_version(
        world, pa.table({"n": [1, 2, 3]}), name="numbers", column_roles={"label": "n"}
    )


def _other_teams_version(world):
    dataset = data_services.dataset_create(
        actor=world.outsider, project=world.other_project, name="theirs"
    )
    return make_version(world, pa.table({"text": ["a", "b"]}), dataset=dataset)


def test_the_defaults_row_is_made_once(endpoint) -> None:
    first = services.monitor_settings_get(endpoint=endpoint)
    assert services.monitor_settings_get(endpoint=endpoint) == first
    assert MonitorSettings.objects.count() == 1
    assert first.drift_enabled and first.window_requests == 10_000 and first.thresholds == {}


def test_every_error_at_once_and_nothing_written(world, endpoint) -> None:
    manager = world.users["manager"]
    before = services.monitor_settings_get(endpoint=endpoint)
    with pytest.raises(ValidationError) as caught:
        services.monitor_settings_update(
            actor=manager,
            endpoint=endpoint,
            thresholds={"classifier_auc": 2, "label_psi": "high", "bogus": 1},
            webhook_url="ftp://hooks.example.com/x",
            reference_version=_no_text(world),
            window_requests=5,
        )
    errors = caught.value.message_dict
    assert set(errors) == {
        "thresholds.classifier_auc",
        "thresholds.label_psi",
        "thresholds.config",
        "webhook_url",
        "reference_version",
        "window_requests",
    }
    assert "bogus" in errors["thresholds.config"][0]
    assert "http" in errors["webhook_url"][0]
    assert "has no text column" in errors["reference_version"][0]
    after = MonitorSettings.objects.get(pk=before.pk)
    assert after.thresholds == {} and after.webhook_url == "" and after.reference_version is None
    assert not AuditEvent.objects.filter(verb="monitor_settings.updated").exists()


def test_a_loopback_webhook_is_refused_outside_development(world, endpoint) -> None:
    manager = world.users["manager"]
    with override_settings(LLMHUB_ALLOW_PRIVATE_URLS=False):
        for url in ("http://127.0.0.1:9000/hook", "http://10.1.2.3/hook", "http://[::1]/x"):
            with pytest.raises(ValidationError) as caught:
                services.monitor_settings_update(actor=manager, endpoint=endpoint, webhook_url=url)
            assert set(caught.value.message_dict) == {"webhook_url"}, url
    # In development (the tests' default) a local receiver is allowed.
    saved = services.monitor_settings_update(
        actor=manager, endpoint=endpoint, webhook_url=" http://127.0.0.1:9000/hook "
    )
    assert saved.webhook_url == "http://127.0.0.1:9000/hook"


def test_another_teams_dataset_version_is_refused(world, endpoint) -> None:
    with pytest.raises(ValidationError) as caught:
        services.monitor_settings_update(
            actor=world.users["manager"],
            endpoint=endpoint,
            reference_version=_other_teams_version(world),
        )
    assert "team" in caught.value.message_dict["reference_version"][0]


def test_a_named_column_and_split_are_checked(world, endpoint) -> None:
    manager = world.users["manager"]
    version = make_version(
        world, pa.table({"body": ["hello there", "card lost"], "n": [1, 2]}), name="tickets"
    )
    with pytest.raises(ValidationError) as caught:
        services.monitor_settings_update(
            actor=manager, endpoint=endpoint, reference_version=version, reference_column="n"
        )
    assert "not a string column" in caught.value.message_dict["reference_column"][0]
    with pytest.raises(ValidationError) as caught:
        services.monitor_settings_update(
            actor=manager, endpoint=endpoint, reference_version=version, reference_split="test"
        )
    assert "no 'test' split" in caught.value.message_dict["reference_split"][0]
    saved = services.monitor_settings_update(
        actor=manager,
        endpoint=endpoint,
        reference_version=version,
        reference_column="body",
        thresholds={"classifier_auc": 0.6},
        webhook_secret="s3cret",
    )
    assert saved.reference_version == version and saved.thresholds == {"classifier_auc": 0.6}
    event = AuditEvent.objects.get(verb="monitor_settings.updated")
    assert event.changes["reference_version"] == [None, version.pk]
    assert event.changes["webhook_secret"] == ["(hidden)", "(changed)"]
    assert "s3cret" not in str(event.changes)


def test_an_engineer_may_not_change_the_settings(world, endpoint) -> None:
    with pytest.raises(PermissionDenied):
        services.monitor_settings_update(
            actor=world.users["engineer"], endpoint=endpoint, drift_enabled=False
        )
    assert services.monitor_settings_get(endpoint=endpoint).drift_enabled


# --- REST ------------------------------------------------------------------------------------


def test_the_settings_over_the_api(world, api, endpoint) -> None:
    client = api(world.users["manager"])
    listed = client.get(f"/api/v1/monitor-settings/?endpoint={endpoint.pk}")
    assert listed.status_code == 200
    (row,) = listed.json()["results"]
    assert row["endpoint"] == endpoint.pk and row["has_webhook_secret"] is False

    bad = client.patch(
        f"/api/v1/monitor-settings/{row['id']}/",
        {
            "thresholds": {"classifier_auc": 0.2},
            "webhook_url": "gopher://x",
            "reference_version": _no_text(world).pk,
        },
        format="json",
    )
    assert bad.status_code == 400
    fields = bad.json()["error"]["fields"]
    assert set(fields) == {"thresholds.classifier_auc", "webhook_url", "reference_version"}

    good = client.patch(
        f"/api/v1/monitor-settings/{row['id']}/",
        {"webhook_url": "http://127.0.0.1:9/h", "webhook_secret": "abc", "window_hours": 6},
        format="json",
    )
    assert good.status_code == 200, good.content
    body = good.json()
    assert body["has_webhook_secret"] is True and "webhook_secret" not in body
    assert body["window_hours"] == 6

    # Another team's people do not see it; a viewer may read but not change it.
    assert api(world.outsider).get(f"/api/v1/monitor-settings/{row['id']}/").status_code == 404
    viewer = api(world.users["viewer"])
    assert viewer.get(f"/api/v1/monitor-settings/{row['id']}/").status_code == 200
    refused = viewer.patch(
        f"/api/v1/monitor-settings/{row['id']}/", {"window_hours": 2}, format="json"
    )
    assert refused.status_code == 403
    assert MonitorSettings.objects.get(pk=row["id"]).window_hours == 6

    schema = client.get("/api/v1/monitor-settings/drift-settings-schema/").json()
    by_name = {s["name"]: s for s in schema}
    assert (
        by_name["classifier_auc"]["default"] == 0.55 and by_name["classifier_auc"]["rule"] == ">="
    )
    # What a job really uses: fewer rows embedded than the runtime's own default.
    assert (
        by_name["embedding_max_rows"]["default"]
        == services.JOB_CONFIG_DEFAULTS["embedding_max_rows"]
    )


def test_a_drift_job_over_the_api(world, api, endpoint) -> None:
    client = api(world.users["engineer"])
    created = client.post(
        "/api/v1/drift-jobs/", {"endpoint": endpoint.pk, "window_hours": 3}, format="json"
    )
    assert created.status_code == 201, created.content
    job = DriftJob.objects.get(pk=created.json()["id"])
    assert (job.window_end - job.window_start).total_seconds() == 3 * 3600
    assert job.created_by == world.users["engineer"] and not job.scheduled
    detail = client.get(f"/api/v1/drift-jobs/{job.pk}/").json()
    assert "report" in detail and detail["endpoint_slug"] == "bot"
    assert "report" not in client.get("/api/v1/drift-jobs/").json()["results"][0]
    assert (
        client.get(f"/api/v1/drift-jobs/?endpoint={endpoint.pk}&result=drifted").json()["results"]
        == []
    )

    bad = client.post("/api/v1/drift-jobs/", {"endpoint": endpoint.pk, "window_hours": 0})
    assert bad.status_code == 400 and "window_hours" in bad.json()["error"]["fields"]
    viewer = api(world.users["viewer"]).post("/api/v1/drift-jobs/", {"endpoint": endpoint.pk})
    assert viewer.status_code == 403
    assert DriftJob.objects.count() == 1
