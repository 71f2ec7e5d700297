"""The data stage through the REST API: upload, versions, profile, clean, split, tokenizers,
data cards; bad inputs; team scoping. Jobs run in this process (``run_job_inline``) here; the
worker tests run the same flow on a real Celery worker."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from django.conf import settings

from datasets_app.models import DataJob, Dataset, DatasetVersion, Tokenizer
from llmhub.jobs import run_job_inline, wait_until
from llmhub.models import JobStatus

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "data"


def run_queued() -> list[DataJob]:
    """Run every queued data job in this process, including those the jobs queue themselves.

    In tests that also run a live worker, the worker may claim some first: wait for those.
    """
    ran = []
    while True:
        job = DataJob.objects.filter(status=JobStatus.QUEUED).order_by("id").first()
        if job is not None:
            run_job_inline(job)
            job.refresh_from_db()
            ran.append(job)
        elif not wait_until(
            lambda: not DataJob.objects.filter(status=JobStatus.RUNNING).exists(), timeout=120
        ):
            raise AssertionError("A data job is still running after two minutes.")
        elif not DataJob.objects.filter(status=JobStatus.QUEUED).exists():
            return ran


@pytest.fixture
def client(world, api):
    return api(world.users["engineer"])


@pytest.fixture
def dataset(world, client) -> dict:
    response = client.post(
        "/api/v1/datasets/",
        {"project": world.project.pk, "name": "papers", "description": "SciTLDR sample"},
    )
    assert response.status_code == 201, response.content
    return response.json()


def upload(client, dataset_id: int, name: str, content: bytes, **fields):
    """POST a multipart body built by hand: Django's test client would trim the file name to
    its base name, hiding what a hostile client can send."""
    boundary = "llmhub-test-boundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode()
        for key, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode()
        + content
        + b"\r\n"
    )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return client.generic(
        "POST",
        f"/api/v1/datasets/{dataset_id}/upload/",
        body,
        content_type=f"multipart/form-data; boundary={boundary}",
    )


def test_upload_profile_clean_split_tokenize(client, dataset, world) -> None:
    response = upload(
        client, dataset["id"], "scitldr.jsonl", (FIXTURES / "scitldr_sample.jsonl").read_bytes()
    )
    assert response.status_code == 202, response.content
    assert response.json()["kind"] == "ingest" and response.json()["status"] == "queued"

    jobs = run_queued()
    assert [j.kind for j in jobs] == ["ingest", "profile"]
    assert all(j.status == JobStatus.SUCCEEDED for j in jobs), [j.error for j in jobs]
    v1 = DatasetVersion.objects.get(dataset_id=dataset["id"], number=1)
    assert v1.row_count == 60 and v1.column_roles == {"text": "document", "target": "summary"}
    assert v1.recipe["kind"] == "upload" and v1.recipe["filename"] == "scitldr.jsonl"

    profile = client.get(f"/api/v1/dataset-versions/{v1.pk}/profile/").json()["profile"]
    assert profile["row_count"] == 60 and profile["columns"]["document"]["role"] == "text"

    rows = client.get(f"/api/v1/dataset-versions/{v1.pk}/rows/?offset=55&limit=10").json()
    assert rows["total"] == 60 and len(rows["rows"]) == 5 and "document" in rows["columns"]

    download = client.get(f"/api/v1/dataset-versions/{v1.pk}/download/")
    assert download.status_code == 200
    table = pq.read_table(io.BytesIO(b"".join(download.streaming_content)))
    assert table.num_rows == 60

    recipe = client.post(
        "/api/v1/recipes/",
        {
            "project": world.project.pk,
            "name": "default-ish",
            "steps": [
                {"step": "normalize_unicode"},
                {"step": "exact_dedupe"},
                {"step": "length_filter", "params": {"min_length": 900}},
            ],
        },
    )
    assert recipe.status_code == 201, recipe.content
    clean = client.post(f"/api/v1/dataset-versions/{v1.pk}/clean/", {"recipe": recipe.json()["id"]})
    assert clean.status_code == 202, clean.content
    run_queued()
    cleaning = DataJob.objects.get(kind="clean")
    assert cleaning.status == JobStatus.SUCCEEDED, cleaning.error
    v2 = cleaning.result_version
    report = cleaning.result
    assert v2.parent == v1 and v2.number == 2 and v2.recipe["recipe"] == "default-ish"
    assert report["rows_in"] == 60 and report["rows_out"] == v2.row_count < 60
    assert report["steps"][2]["removed"] == 60 - v2.row_count
    assert v2.column_roles == v1.column_roles

    split = client.post(
        f"/api/v1/dataset-versions/{v1.pk}/split/",
        {"ratios": {"train": 0.7, "test": 0.3}, "seed": 3},
    )
    assert split.status_code == 202
    run_queued()
    v3 = DatasetVersion.objects.get(dataset_id=dataset["id"], number=3)
    assert v3.file == v1.file  # content-addressed: the same table is stored once
    assert {s.name: s.row_count for s in v3.splits.all()} == {"train": 42, "test": 18}
    part = client.get(f"/api/v1/dataset-versions/{v3.pk}/download/?split=test")
    assert pq.read_table(io.BytesIO(b"".join(part.streaming_content))).num_rows == 18

    tokenizer = client.post(
        "/api/v1/tokenizers/", {"version": v1.pk, "name": "sci-bpe", "vocab_size": 400}
    )
    assert tokenizer.status_code == 202, tokenizer.content
    run_queued()
    trained = Tokenizer.objects.get(name="sci-bpe")
    assert trained.vocab_size == 400 and trained.stats["total_tokens"] > 1000
    assert "tokenizer.json" in trained.files

    listed = client.get(f"/api/v1/dataset-versions/?dataset={dataset['id']}").json()
    assert [v["number"] for v in listed["results"]] == [3, 2, 1]

    # Token counts of the data under the new tokenizer, in a fresh profile.
    again = client.post(f"/api/v1/dataset-versions/{v1.pk}/profile/run/", {"tokenizer": trained.pk})
    assert again.status_code == 202, again.content
    run_queued()
    profile = client.get(f"/api/v1/dataset-versions/{v1.pk}/profile/").json()["profile"]
    assert profile["columns"]["document"]["token_length"]["mean"] > 50


def test_data_card_flags_missing_fields(client, dataset) -> None:
    card = client.get(f"/api/v1/datasets/{dataset['id']}/card/").json()
    assert card["is_complete"] is False
    assert card["missing_fields"] == [
        "source",
        "license",
        "collection_method",
        "consent",
        "personal_data",
    ]
    updated = client.patch(
        f"/api/v1/datasets/{dataset['id']}/card/",
        {
            "source": "SciTLDR (allenai/scitldr)",
            "license": "Apache-2.0",
            "collection_method": "author and reviewer TLDRs",
            "consent": "public papers",
            "personal_data": "author names only",
        },
    )
    assert updated.status_code == 200 and updated.json()["is_complete"] is True
    assert (
        client.patch(f"/api/v1/datasets/{dataset['id']}/card/", {"licence": "x"}).status_code == 400
    )


@pytest.mark.parametrize(
    ("name", "content", "field", "message"),
    [
        ("../../etc/passwd.csv", b"a,b\n1,2\n", "file", "path separator"),
        ("data.csv", b"", "file", "empty"),
        ("data.parquet", b"just text", "file", "not a Parquet file"),
        ("data.jsonl", b"[1,2]\n", "file", "JSON object"),
        ("data.xlsx", b"PK\x03\x04", "file", "Cannot tell the format"),
        ("data.csv", b"\x00\x01\x02\x03" * 200, "file", "binary"),
        ("data.csv.gz", b"not gzip", "file", "not gzip-compressed"),
    ],
)
def test_bad_uploads_are_400_and_leave_nothing(
    client, dataset, name, content, field, message
) -> None:
    response = upload(client, dataset["id"], name, content)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert field in error["fields"] and message in error["message"]
    assert not DataJob.objects.exists() and not DatasetVersion.objects.exists()


def test_uploads_over_the_limit_are_refused(client, dataset, settings) -> None:
    settings.LLMHUB_MAX_UPLOAD_BYTES = 1000
    response = upload(client, dataset["id"], "big.csv", b"text\n" + b"x" * 5000 + b"\n")
    assert response.status_code == 400
    assert "upload limit of 1,000 bytes" in response.json()["error"]["message"]
    assert not DataJob.objects.exists()


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.jsonl", b'{"text": "ok"}\n{"text": oops}\n', "Line 2 is not valid JSON"),
        ("ragged.csv", b"a,b\n1,2\n3\n", "Row 3 (line 3) has 1 fields but the header has 2"),
        ("latin.csv", b"text\ncaf\xe9\n", "Invalid utf-8 at line 2"),
        ("header.csv", b"text,label\n", "The file has no rows."),
    ],
)
def test_deep_errors_fail_the_ingest_job_and_create_no_version(
    client, dataset, name, content, message
) -> None:
    assert upload(client, dataset["id"], name, content).status_code == 202
    [job] = run_queued()
    assert job.status == JobStatus.FAILED and message in job.error
    assert not DatasetVersion.objects.exists()
    assert not Path(job.params["upload"]).exists()


def test_encoding_fallback_and_gzip_upload(client, dataset) -> None:
    assert (
        upload(
            client, dataset["id"], "latin.csv", b"text\ncaf\xe9\n", encoding="latin-1"
        ).status_code
        == 202
    )
    packed = gzip.compress((FIXTURES / "poem_sample.csv").read_bytes())
    assert upload(client, dataset["id"], "poems.csv.gz", packed).status_code == 202
    run_queued()
    versions = DatasetVersion.objects.order_by("number")
    assert [v.row_count for v in versions] == [1, 240]
    assert versions[1].column_roles == {"text": "verse_text", "label": "label"}


def test_mapped_roles_must_name_real_columns(client, dataset) -> None:
    upload(
        client,
        dataset["id"],
        "poems.csv",
        (FIXTURES / "poem_sample.csv").read_bytes(),
        column_roles='{"text": "poem"}',
    )
    [job] = run_queued()
    assert job.status == JobStatus.FAILED and "poem" in job.error
    bad_json = upload(client, dataset["id"], "poems.csv", b"text\nx\n", column_roles="{nope")
    assert bad_json.status_code == 400 and "valid JSON" in bad_json.json()["error"]["message"]


def test_bad_operation_requests_are_400(client, dataset, world) -> None:
    upload(client, dataset["id"], "poems.csv", (FIXTURES / "poem_sample.csv").read_bytes())
    run_queued()
    version = DatasetVersion.objects.get()
    cases = [
        ("split", {"ratios": {"train": 0.9, "test": 0.2}}, "add up to 1"),
        ("split", {"stratify_column": "mood"}, "No column named 'mood'"),
        ("clean", {"steps": [{"step": "shred"}]}, "unknown step"),
        ("clean", {}, "either a saved recipe or a list of steps"),
        (
            "clean",
            {"steps": [{"step": "lowercase"}], "text_columns": ["body"]},
            "No column named 'body'",
        ),
        ("roles", {"column_roles": {"text": "missing"}}, "No column named missing"),
    ]
    for action, body, message in cases:
        response = client.post(f"/api/v1/dataset-versions/{version.pk}/{action}/", body)
        assert response.status_code == 400, (action, response.content)
        assert message in response.json()["error"]["message"], (action, response.json())
    assert DataJob.objects.filter(kind__in=["clean", "split"]).count() == 0
    assert (
        client.post(
            "/api/v1/tokenizers/", {"version": version.pk, "name": "t", "vocab_size": 5}
        ).status_code
        == 400
    )


def test_remapping_roles_makes_a_version_without_copying(client, dataset) -> None:
    upload(client, dataset["id"], "poems.csv", (FIXTURES / "poem_sample.csv").read_bytes())
    run_queued()
    v1 = DatasetVersion.objects.get()
    response = client.post(
        f"/api/v1/dataset-versions/{v1.pk}/roles/",
        {"column_roles": {"text": "verse_text", "label": "raw_label"}},
    )
    assert response.status_code == 201
    v2 = DatasetVersion.objects.get(pk=response.json()["id"])
    assert v2.file == v1.file and v2.parent == v1 and v2.column_roles["label"] == "raw_label"
    v1.refresh_from_db()
    assert v1.column_roles["label"] == "label"  # versions are never edited


def test_other_teams_cannot_reach_the_data(client, dataset, world, api) -> None:
    upload(client, dataset["id"], "poems.csv", (FIXTURES / "poem_sample.csv").read_bytes())
    run_queued()
    version = DatasetVersion.objects.get()
    outsider = api(world.outsider)
    for url in (
        f"/api/v1/datasets/{dataset['id']}/",
        f"/api/v1/datasets/{dataset['id']}/card/",
        f"/api/v1/dataset-versions/{version.pk}/",
        f"/api/v1/dataset-versions/{version.pk}/download/",
        f"/api/v1/dataset-versions/{version.pk}/rows/",
        f"/api/v1/dataset-versions/{version.pk}/profile/",
    ):
        assert outsider.get(url).status_code == 404, url
    assert outsider.get("/api/v1/datasets/").json()["count"] == 0
    assert upload(outsider, dataset["id"], "x.csv", b"a\n1\n").status_code == 404
    assert outsider.post(f"/api/v1/dataset-versions/{version.pk}/split/", {}).status_code == 404
    assert (
        outsider.post("/api/v1/tokenizers/", {"version": version.pk, "name": "x"}).status_code
        == 400
    )
    viewer = upload(api(world.users["viewer"]), dataset["id"], "x.csv", b"a\n1\n")
    assert viewer.status_code == 403
    assert Dataset.objects.count() == 1


def test_an_upload_while_the_broker_is_down_is_a_503_and_stores_nothing(
    client, dataset, broker_down
) -> None:
    response = upload(
        client, dataset["id"], "scitldr.jsonl", (FIXTURES / "scitldr_sample.jsonl").read_bytes()
    )
    assert response.status_code == 503, response.content
    assert response.json()["error"]["code"] == "unavailable"
    assert not DataJob.objects.exists()
    uploads = Path(settings.MEDIA_ROOT) / "uploads"
    assert not uploads.exists() or not any(uploads.rglob("*"))
