"""Importing existing preference data: the layout validator's labels (stored as booleans, for
KTO), and the feedback-imports API with its bad input (400, nothing stored) on the shared
hh-rlhf sample."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from datasets_app.cleaning.readers import convert_to_parquet
from datasets_app.models import DataJob, Dataset, DatasetVersion
from evaluation.feedback.services import exports
from llmhub import storage
from llmhub.jobs import run_job_inline
from llmhub.reporting import JobInputError
from projects.models import Role
from tests.conftest import SHARED_DATASETS

URL = "/api/v1/feedback-imports/"
HH = SHARED_DATASETS / "preference_hh_rlhf_harmless.jsonl"
HH_ROLES = {"chosen": "chosen_response", "rejected": "rejected_response"}

# --- the layout validator (the ingest's runtime, no Django) -----------------------------------

SPELLINGS = [
    ("true", True),
    ("False", False),
    ("1", True),
    ("0", False),
    ("yes", True),
    ("NO", False),
    ("thumbs up", True),
    ("Thumbs_Down", False),
    ("thumbs-up", True),
]


def _ingest(tmp_path: Path, name: str, content: bytes, **kw) -> list[dict]:
    source = tmp_path / name
    source.write_bytes(content)
    output = tmp_path / "out" / "table.parquet"
    convert_to_parquet(source, output=output, layout="unpaired", **kw)
    table = pq.read_table(output)
    assert table.schema.field("label").type == pa.bool_()
    return table.to_pylist()


def test_unpaired_csv_labels_are_stored_as_booleans(tmp_path) -> None:
    lines = ["prompt,completion,label"] + [
        f"p{i},c{i},{word}" for i, (word, _) in enumerate(SPELLINGS)
    ]
    rows = _ingest(tmp_path, "thumbs.csv", ("\n".join(lines) + "\n").encode())
    assert [row["label"] for row in rows] == [value for _word, value in SPELLINGS]
    assert rows[0] == {"prompt": "p0", "completion": "c0", "label": True}


def test_unpaired_csv_of_ones_and_zeros_is_boolean_not_integer(tmp_path) -> None:
    """A CSV column of 1/0 reads as integers; the label column named by its role is stored
    as booleans all the same."""
    source = tmp_path / "ints.csv"
    source.write_bytes(b"prompt,answer,ok\np,a,1\nq,b,0\n")
    output = tmp_path / "ints.parquet"
    convert_to_parquet(
        source,
        output=output,
        layout="unpaired",
        column_roles={"prompt": "prompt", "target": "answer", "label": "ok"},
    )
    table = pq.read_table(output)
    assert table.schema.field("ok").type == pa.bool_()
    assert table.column("ok").to_pylist() == [True, False]


def test_unpaired_jsonl_labels_of_mixed_spellings_are_booleans(tmp_path) -> None:
    records = [
        {"prompt": "a", "completion": "x", "label": True},
        {"prompt": "b", "completion": "y", "label": 0},
        {"prompt": "c", "completion": "z", "label": "Yes"},
        {"prompt": "d", "completion": "w", "label": "thumbs down"},
    ]
    content = "".join(json.dumps(r) + "\n" for r in records).encode()
    rows = _ingest(tmp_path, "thumbs.jsonl", content)
    assert [row["label"] for row in rows] == [True, False, True, False]


@pytest.mark.parametrize("word", ["maybe", "2", "", "good-ish"])
def test_any_other_label_is_refused_naming_the_row(tmp_path, word) -> None:
    source = tmp_path / "bad.csv"
    source.write_bytes(f"prompt,completion,label\np,c,yes\nq,d,no\nr,e,{word}\n".encode())
    output = tmp_path / "out" / "table.parquet"
    with pytest.raises(JobInputError) as caught:
        convert_to_parquet(source, output=output, layout="unpaired")
    message = str(caught.value)
    assert "Line 4 (row 3)" in message and "'label'" in message
    assert "true/false, 1/0, yes/no or thumbs up/down" in message
    assert not output.exists()


# --- the API ----------------------------------------------------------------------------------


def _post(client, world, content: bytes | None, *, filename: str = "pairs.jsonl", **fields):
    body = {"project": world.project.pk, **fields}
    if content is not None:
        body["file"] = SimpleUploadedFile(filename, content)
    return client.post(URL, body, format="multipart")


def _nothing_written() -> None:
    assert not Dataset.objects.exists()
    assert not DataJob.objects.exists()
    assert not DatasetVersion.objects.exists()


def _import_job(response) -> DataJob:
    assert response.status_code == 202, response.content
    job = DataJob.objects.get(pk=response.json()["id"])
    run_job_inline(job)
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    return job


@pytest.mark.django_db
def test_hh_rlhf_is_imported_through_the_api(world, api) -> None:
    client = api(world.users[Role.ENGINEER])
    lines = HH.read_bytes().splitlines(keepends=True)
    # The real sample has one pair whose chosen response is empty (line 442: the assistant said
    # nothing): read through the response columns, the file is refused, naming it.
    refused = _post(client, world, HH.read_bytes(), column_roles=json.dumps(HH_ROLES))
    assert refused.status_code == 400, refused.content
    assert refused.json()["error"]["fields"]["file"] == [
        "Line 442 (row 442): 'chosen' (column 'chosen_response') is empty."
    ]
    _nothing_written()

    # Without that line it is 999 pairs, in a dataset named after the file.
    fixed = b"".join(lines[:441] + lines[442:])
    response = _post(
        client, world, fixed, filename="hh_rlhf.jsonl", column_roles=json.dumps(HH_ROLES)
    )
    assert response.json()["kind"] == "ingest" and response.json()["status"] == "queued"
    assert response.json()["params"]["layout"] == "preference"
    job = _import_job(response)
    version = job.result_version
    assert job.dataset.name == "hh_rlhf" and version.row_count == 999
    assert version.column_roles == {
        "prompt": "prompt",
        "chosen": "chosen_response",
        "rejected": "rejected_response",
    }
    assert client.get(f"/api/v1/data-jobs/{job.pk}/").json()["result_version"] == version.pk

    # The whole file through its full transcripts (the default columns) is accepted, with the
    # implicit-prompt warning (both transcripts begin with the prompt).
    job = _import_job(_post(client, world, HH.read_bytes(), name="hh full"))
    assert job.result_version.row_count == 1000
    assert any("implicit-prompt" in w for w in job.result_version.warnings)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("content", "fields", "field", "message"),
    [
        (None, {}, "file", "Upload the preference file"),
        (b"", {}, "file", "The file is empty."),
        (
            b'{"prompt": "p", "chosen": "c", "rejected": "r"}\n{"prompt": "p", "chosen": ""}\n',
            {},
            "file",
            "Line 2 (row 2): 'chosen' is empty.",
        ),
        (
            b'{"prompt": "p", "chosen": "c"}\n',
            {},
            "file",
            "Line 1 (row 1) has no 'rejected'",
        ),
        (b"prompt,completion,label\np,c,maybe\n", {"format": "unpaired"}, "file", "'maybe'"),
        (b'{"prompt": "p"}\n', {"format": "pairs"}, "format", "is not a valid choice"),
        (b'{"prompt": "p"}\n', {"column_roles": "{oops"}, "column_roles", "valid JSON"),
        (b'{"prompt": "p"}\n', {"column_roles": "[1]"}, "column_roles", "role -> column"),
    ],
)
def test_bad_imports_are_400_and_store_nothing(world, api, content, fields, field, message):
    client = api(world.users[Role.MANAGER])
    filename = "thumbs.csv" if content and content.startswith(b"prompt,") else "pairs.jsonl"
    response = _post(client, world, content, filename=filename, **fields)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert field in error["fields"], error
    assert message in json.dumps(error), error
    _nothing_written()


@pytest.mark.django_db
def test_a_missing_project_and_the_roles_that_may_not_import(world, api) -> None:
    manager = api(world.users[Role.MANAGER])
    response = manager.post(
        URL, {"file": SimpleUploadedFile("p.jsonl", HH.read_bytes()[:2000])}, format="multipart"
    )
    assert response.status_code == 400 and "project" in response.json()["error"]["fields"]
    for role in (Role.RATER, Role.VIEWER):
        refused = _post(api(world.users[role]), world, b'{"prompt": "p"}\n')
        assert refused.status_code == 403, refused.content
        assert f"is {role}" in refused.json()["error"]["message"]
    outsider = _post(api(world.outsider), world, b'{"prompt": "p"}\n')
    assert outsider.status_code in (400, 404)
    _nothing_written()


@pytest.mark.django_db
def test_a_file_too_large_to_check_at_once_fails_its_job_naming_the_line(
    world, api, monkeypatch
) -> None:
    monkeypatch.setattr(exports, "IMPORT_CHECK_BYTES", 10)
    bad = b'{"prompt": "p", "chosen": "c", "rejected": "r"}\n{"prompt": "p", "chosen": "c"}\n'
    response = _post(api(world.users[Role.MANAGER]), world, bad)
    assert response.status_code == 202, response.content
    job = DataJob.objects.get(pk=response.json()["id"])
    run_job_inline(job)
    job.refresh_from_db()
    assert job.status == "failed" and "Line 2 (row 2) has no 'rejected'" in job.error
    assert not DatasetVersion.objects.exists()


@pytest.mark.django_db
def test_an_unpaired_import_is_a_version_kto_reads_as_booleans(world) -> None:
    content = b"prompt,completion,label\nHi,Hello!,thumbs up\nHi,Go away.,thumbs down\n"
    job = exports.preference_import(
        actor=world.users[Role.MANAGER],
        project=world.project,
        uploaded_file=SimpleUploadedFile("thumbs.csv", content),
        format="unpaired",
    )
    run_job_inline(job)
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    version = job.result_version
    assert {c["name"]: c["type"] for c in version.schema}["label"] == "boolean"
    table = pq.read_table(storage.local_copy(version.file))
    assert table.column("label").to_pylist() == [True, False]
