"""Data stage pages: the tab, a dataset with its card, a version with its profile and actions."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from datasets_app.models import DataCard, DataJob, DatasetVersion
from tests.datasets_app.test_data_api import run_queued

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "data"


@pytest.fixture
def engineer(world) -> Client:
    client = Client()
    client.force_login(world.users["engineer"])
    return client


def _upload(client: Client, project_id: int, **extra) -> object:
    file = SimpleUploadedFile("papers.jsonl", (FIXTURES / "scitldr_sample.jsonl").read_bytes())
    data = {
        "name": "papers",
        "file": file,
        "encoding": "utf-8",
        "encoding_errors": "strict",
        "txt_mode": "lines",
        **extra,
    }
    return client.post(
        f"/projects/{project_id}/data/upload/", data, HTTP_X_REQUESTED_WITH="XMLHttpRequest"
    )


def test_upload_from_the_page_then_every_data_page_renders(world, engineer) -> None:
    response = _upload(engineer, world.project.pk)
    assert response.status_code == 202, response.content
    run_queued()
    version = DatasetVersion.objects.get()
    dataset = version.dataset
    assert response.json()["redirect"] == f"/datasets/{dataset.pk}/"

    tab = engineer.get(f"/projects/{world.project.pk}/data/").content.decode()
    assert "papers" in tab and "5 missing" in tab and "New dataset" in tab
    page = engineer.get(f"/datasets/{dataset.pk}/").content.decode()
    assert "v1" in page and "Missing: source, license" in page
    version_page = engineer.get(f"/versions/{version.pk}/").content.decode()
    assert "Lineage" in version_page and "plotly.min.js" in version_page
    assert 'data-figure="len-document"' in version_page
    assert engineer.get(f"/projects/{world.project.pk}/recipes/new/").status_code == 200


def test_page_upload_errors_are_reported_as_json(world, engineer) -> None:
    response = _upload(engineer, world.project.pk, encoding_errors="bogus", txt_mode="bogus")
    assert response.status_code == 400
    errors = response.json()["errors"]
    # Every error at once, each on its field.
    assert set(errors) == {"encoding_errors", "txt_mode"}
    assert "bogus is not one of the available choices" in errors["txt_mode"][0]["message"]
    assert not DataJob.objects.exists()


@pytest.mark.parametrize(
    "bad", [{"column_roles": "{bad"}, {"encoding": "no-such-codec"}, {"file_format": "parquet"}]
)
def test_a_refused_first_upload_creates_no_dataset(world, engineer, bad) -> None:
    """The service, the parser and the sniffer each refuse something; none leaves an empty
    dataset behind (the dataset is created with the ingest job, after every check)."""
    from datasets_app.models import Dataset

    response = _upload(engineer, world.project.pk, **bad)
    assert response.status_code == 400, response.content
    assert set(response.json()["errors"]) & {*bad, "file"}
    assert not Dataset.objects.exists() and not DataJob.objects.exists()


def test_an_upload_without_a_name_is_named_after_its_file(world, engineer) -> None:
    first = _upload(engineer, world.project.pk, name="")
    second = _upload(engineer, world.project.pk, name="  ")
    assert first.status_code == second.status_code == 202
    names = sorted(j.dataset.name for j in DataJob.objects.filter(kind="ingest"))
    assert names == ["papers", "papers (2)"]


def test_version_actions_from_the_page(world, engineer) -> None:
    _upload(engineer, world.project.pk)
    run_queued()
    version = DatasetVersion.objects.get()
    recipe_page = engineer.post(
        f"/projects/{world.project.pk}/recipes/new/",
        {"name": "trim", "description": "", "steps": '[{"step": "normalize_unicode"}]'},
    )
    assert recipe_page.status_code == 302
    recipe = version.dataset.project.cleaning_recipes.get()
    engineer.post(f"/versions/{version.pk}/clean/", {"recipe": recipe.pk, "num_proc": 1})
    engineer.post(
        f"/versions/{version.pk}/split/", {"train": 0.8, "validation": 0.1, "test": 0.1, "seed": 1}
    )
    engineer.post(
        f"/versions/{version.pk}/tokenizer/",
        {"name": "tok", "algorithm": "bpe", "vocab_size": 300, "min_frequency": 2},
    )
    run_queued()
    kinds = sorted(DataJob.objects.filter(status="succeeded").values_list("kind", flat=True))
    assert kinds == ["clean", "ingest", "profile", "profile", "split", "tokenizer"]
    bad = engineer.post(
        f"/projects/{world.project.pk}/recipes/new/", {"name": "bad", "steps": '[{"step": "nope"}]'}
    )
    assert "unknown step" in bad.content.decode()
    card = engineer.post(
        f"/datasets/{version.dataset.pk}/",
        {
            "source": "SciTLDR",
            "license": "Apache-2.0",
            "collection_method": "sampled",
            "consent": "public",
            "personal_data": "none known",
            "intended_use": "",
            "limitations": "",
        },
    )
    assert card.status_code == 302 and DataCard.objects.get().is_complete


def test_viewers_see_data_but_cannot_change_it(world) -> None:
    viewer = Client()
    viewer.force_login(world.users["viewer"])
    tab = viewer.get(f"/projects/{world.project.pk}/data/").content.decode()
    assert "New dataset" not in tab
    assert _upload(viewer, world.project.pk).status_code == 403


def test_page_upload_still_requires_csrf(world) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(world.users["engineer"])
    file = SimpleUploadedFile("p.jsonl", b'{"text": "x"}\n')
    response = client.post(
        f"/projects/{world.project.pk}/data/upload/",
        {
            "name": "x",
            "file": file,
            "encoding": "utf-8",
            "encoding_errors": "strict",
            "txt_mode": "lines",
        },
    )
    assert response.status_code == 403
    assert not DataJob.objects.exists()


def test_api_upload_with_a_browser_session_and_csrf(world) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(world.users["engineer"])
    client.get("/")  # sets the CSRF cookie
    token = client.cookies["csrftoken"].value
    dataset = client.post(
        "/api/v1/datasets/",
        {"project": world.project.pk, "name": "d"},
        content_type="application/json",
        HTTP_X_CSRFTOKEN=token,
    ).json()
    file = SimpleUploadedFile("p.jsonl", b'{"text": "x"}\n')
    response = client.post(
        f"/api/v1/datasets/{dataset['id']}/upload/", {"file": file}, HTTP_X_CSRFTOKEN=token
    )
    assert response.status_code == 202, response.content
