"""Hostile files and requests through the service, the API and the pages: warnings stored on
the version and shown, bombs and deep nesting failing the job with a sentence, one validator
for each data job's options, tokenizer names, uploads stored outside transactions and cleaned
up when interrupted, and the sweep of leftovers."""

from __future__ import annotations

import gzip
import json
import os
import time
import zlib
from pathlib import Path

import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.db import connection
from django.test import Client

from datasets_app import services, uploads
from datasets_app.models import DataJob, DataJobKind, DatasetVersion, Tokenizer
from llmhub.models import JobStatus
from tests.datasets_app.test_data_api import FIXTURES, run_queued, upload


@pytest.fixture(autouse=True)
def own_media(settings, tmp_path):
    """A media folder per test: these tests look at every file stored."""
    settings.MEDIA_ROOT = str(tmp_path / "media")


@pytest.fixture
def client(world, api):
    return api(world.users["engineer"])


@pytest.fixture
def dataset(world):
    return services.dataset_create(
        actor=world.users["engineer"], project=world.project, name="papers"
    )


def media() -> Path:
    return Path(default_storage.location)


def stored_uploads() -> list[Path]:
    root = media() / "uploads"
    return sorted(root.rglob("*")) if root.exists() else []


# --- warnings on the version ------------------------------------------------------------------


def test_warnings_are_stored_on_the_version_returned_by_the_api_and_shown(
    client, dataset, world
) -> None:
    content = (
        json.dumps({"text": "fine", "score": 1.5})
        + "\n"
        + '{"text": "nul\\u0000here", "score": NaN}\n'
    ).encode()
    assert upload(client, dataset.pk, "rows.jsonl", content).status_code == 202
    ingest, _profile = run_queued()
    assert ingest.status == JobStatus.SUCCEEDED, ingest.error
    version = DatasetVersion.objects.get()
    assert len(version.warnings) == 2
    assert any("NUL" in w and "line 2" in w for w in version.warnings)
    assert any("NaN or infinite" in w for w in version.warnings)
    body = client.get(f"/api/v1/dataset-versions/{version.pk}/").json()
    assert body["warnings"] == version.warnings
    rows = client.get(f"/api/v1/dataset-versions/{version.pk}/rows/")
    assert rows.status_code == 200  # strict JSON: NaN is said as text, not a 500
    assert rows.json()["rows"][1] == {"text": "nulhere", "score": "NaN"}
    page = Client()
    page.force_login(world.users["engineer"])
    html = page.get(f"/versions/{version.pk}/").content.decode()
    assert 'id="version-warnings"' in html and "1 NUL character (" in html
    # Versions made from it keep the warnings (the data still holds the NaN).
    remap = client.post(
        f"/api/v1/dataset-versions/{version.pk}/roles/", {"column_roles": {"text": "text"}}
    )
    assert remap.json()["warnings"] == version.warnings


def test_a_clean_file_has_no_warnings(client, dataset) -> None:
    upload(client, dataset.pk, "poems.csv", (FIXTURES / "poem_sample.csv").read_bytes())
    run_queued()
    assert DatasetVersion.objects.get().warnings == []


# --- hostile files fail the job with a sentence -----------------------------------------------


def test_a_gzip_bomb_fails_the_ingest_by_the_configured_limits(client, dataset, settings) -> None:
    line = b'{"text": "' + b"a" * 1000 + b'"}\n'
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = b"".join(compressor.compress(line * 1000) for _ in range(20)) + compressor.flush()
    settings.LLMHUB_MAX_EXPANSION_RATIO = 10
    assert upload(client, dataset.pk, "bomb.jsonl.gz", bomb).status_code == 202
    [by_ratio] = run_queued()
    settings.LLMHUB_MAX_EXPANDED_BYTES = 10**6
    assert upload(client, dataset.pk, "bomb2.jsonl.gz", bomb).status_code == 202
    [by_size] = run_queued()
    assert by_ratio.status == by_size.status == JobStatus.FAILED
    assert "expands more than 10 times, the limit" in by_ratio.error
    assert "expands to more than 1,000,000 bytes, the limit" in by_size.error
    assert not DatasetVersion.objects.exists() and stored_uploads() == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"text": "a"}\n{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n", "Line 2 nests"),
        (b'{"text": "a"}\n{"n": ' + b"9" * 5000 + b"}\n", "Line 2 holds an integer of 5,000"),
    ],
)
def test_deep_nesting_and_huge_integers_fail_with_the_line_not_a_crash(
    client, dataset, content, message
) -> None:
    assert upload(client, dataset.pk, "rows.jsonl", content).status_code == 202
    [job] = run_queued()
    assert job.status == JobStatus.FAILED and job.error.startswith(message), job.error
    assert "crashed" not in job.error and not job.traceback


def test_utf16_uploads_are_accepted_and_decoded(client, dataset) -> None:
    content = "text,label\nÉté,a\nnaïve,b\n".encode("utf-16")
    assert upload(client, dataset.pk, "u16.csv", content).status_code == 202
    run_queued()
    rows = client.get(f"/api/v1/dataset-versions/{DatasetVersion.objects.get().pk}/rows/")
    assert [r["text"] for r in rows.json()["rows"]] == ["Été", "naïve"]


# --- one validator per config -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"encoding": "utf-32"}, "encoding", "convert the file to UTF-8"),  # was: the worker's
        ({"chunk_chars": "5"}, "chunk_chars", "from 100 to 1,000,000"),
        ({"txt_mode": "pages"}, "txt_mode", "txt_mode must be one of lines, chunks"),
        ({"file_format": "xlsx"}, "file_format", "file_format must be one of"),
        ({"column_roles": '{"colour": "x"}'}, "column_roles", "Unknown role(s): colour"),
    ],
)
def test_upload_options_are_refused_by_the_one_validator(
    client, dataset, fields, field, message
) -> None:
    response = upload(client, dataset.pk, "poems.csv", b"text\nhi\n", **fields)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert field in error["fields"] and message in error["message"], error
    assert not DataJob.objects.exists() and stored_uploads() == []


def test_job_params_are_refused_by_the_same_validator(client, dataset, world) -> None:
    upload(client, dataset.pk, "poems.csv", (FIXTURES / "poem_sample.csv").read_bytes())
    run_queued()
    version = DatasetVersion.objects.get()
    cases = [
        ("split", {"seed": 2**40}, "seed", "from 0 to 4,294,967,295"),
        ("split", {"ratios": {"x" * 41: 0.5, "b": 0.5}}, "ratios", "1 to 40 characters"),
        ("clean", {"steps": [{"step": "lowercase"}], "num_proc": 99}, "num_proc", "1 to 16"),
    ]
    for action, body, field, message in cases:
        response = client.post(f"/api/v1/dataset-versions/{version.pk}/{action}/", body)
        assert response.status_code == 400, (action, response.content)
        error = response.json()["error"]
        assert field in error["fields"] and message in error["message"], error
    refused = client.post(
        "/api/v1/tokenizers/", {"version": version.pk, "name": "t", "algorithm": "sentencepiece"}
    )
    assert refused.status_code == 400 and "algorithm must be one of" in refused.content.decode()
    # The worker validates again: params that got past an older service fail the job cleanly.
    stale = DataJob.objects.create(
        kind=DataJobKind.SPLIT,
        project=world.project,
        dataset=dataset,
        source_version=version,
        params={"ratios": {"train": 1.5}},
    )
    from llmhub.jobs import run_job_inline

    run_job_inline(stale)
    stale.refresh_from_db()
    assert stale.status == JobStatus.FAILED and "ratios between 0 and 1" in stale.error
    assert not stale.traceback


# --- tokenizer names --------------------------------------------------------------------------


@pytest.fixture
def corpus(world, dataset) -> DatasetVersion:
    services.upload_start(
        actor=world.users["engineer"],
        dataset=dataset,
        txt_mode="chunks",
        chunk_chars=600,
        uploaded_file=SimpleUploadedFile(
            "shakespeare.txt", (FIXTURES / "tinyshakespeare_sample.txt").read_bytes()
        ),
    )
    run_queued()
    return DatasetVersion.objects.get()


def test_a_tokenizer_name_in_use_or_being_trained_is_a_400(client, corpus) -> None:
    body = {"version": corpus.pk, "name": "bard", "vocab_size": 300}
    assert client.post("/api/v1/tokenizers/", body).status_code == 202
    again = client.post("/api/v1/tokenizers/", body)  # the first is still queued
    assert again.status_code == 400
    assert "'bard' is being trained" in again.json()["error"]["message"]
    run_queued()
    assert Tokenizer.objects.filter(name="bard").count() == 1
    taken = client.post("/api/v1/tokenizers/", body)
    assert taken.status_code == 400 and "already exists" in taken.json()["error"]["message"]
    assert DataJob.objects.filter(kind=DataJobKind.TOKENIZER).count() == 1


def test_the_tokenizer_page_form_says_the_name_is_taken(world, corpus) -> None:
    page = Client()
    page.force_login(world.users["engineer"])
    form = {"name": "bard", "algorithm": "bpe", "vocab_size": 300, "min_frequency": 2}
    page.post(f"/versions/{corpus.pk}/tokenizer/", form)
    response = page.post(f"/versions/{corpus.pk}/tokenizer/", form, follow=True)
    html = response.content.decode().replace("&#x27;", "'")
    assert "A tokenizer named 'bard' is being trained" in html
    assert DataJob.objects.filter(kind=DataJobKind.TOKENIZER).count() == 1


def test_a_name_taken_while_the_job_ran_fails_it_with_a_sentence(world, corpus) -> None:
    job = services.tokenizer_launch(
        actor=world.users["engineer"], version=corpus, name="bard", vocab_size=300
    )
    # Another tokenizer got the name meanwhile (e.g. made by an older release's job).
    Tokenizer.objects.create(
        project=world.project, name="bard", algorithm="bpe", vocab_size=1, files_prefix="x"
    )
    [ran] = run_queued()
    assert ran.pk == job.pk and ran.status == JobStatus.FAILED
    assert "was created while this job ran" in ran.error and not ran.traceback
    tokenizers = media() / "tokenizers"
    assert not tokenizers.exists() or not [p for p in tokenizers.rglob("*") if p.is_file()]


# --- uploads: storage outside transactions, cleanup ----------------------------------------------


def test_the_upload_is_stored_before_the_transaction_and_removed_if_it_fails(
    world, dataset, monkeypatch
) -> None:
    depth = []
    save = default_storage.save

    def spy(name, content, **kwargs):
        depth.append(len(connection.atomic_blocks))
        return save(name, content, **kwargs)

    monkeypatch.setattr(default_storage, "save", spy)
    baseline = len(connection.atomic_blocks)  # the test's own transaction
    services.upload_start(
        actor=world.users["engineer"],
        dataset=dataset,
        uploaded_file=SimpleUploadedFile("a.csv", b"text\nhi\n"),
    )
    assert depth == [baseline]  # no transaction of the service's open during the slow write
    [first_upload] = [p for p in stored_uploads() if p.is_file()]

    def broken(*_args, **_kwargs):
        raise RuntimeError("the broker went away")

    monkeypatch.setattr(services, "enqueue_job", broken)
    with pytest.raises(RuntimeError):
        services.upload_start(
            actor=world.users["engineer"],
            dataset=dataset,
            uploaded_file=SimpleUploadedFile("b.csv", b"text\nhi\n"),
        )
    assert [p for p in stored_uploads() if p.is_file()] == [first_upload]
    assert len(stored_uploads()) == 2  # the first upload and its folder; nothing of the second
    assert DataJob.objects.count() == 1


def test_a_storage_failure_half_way_leaves_no_partial_file(world, dataset, monkeypatch) -> None:
    def half(name, content):
        path = Path(default_storage.path(name))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"text\nhalf")
        raise OSError("No space left on device")

    monkeypatch.setattr(default_storage, "_save", half)
    with pytest.raises(OSError, match="No space"):
        services.upload_start(
            actor=world.users["engineer"],
            dataset=dataset,
            uploaded_file=SimpleUploadedFile("a.csv", b"text\nhi\n"),
        )
    assert stored_uploads() == [] and not DataJob.objects.exists()


def test_an_ingested_upload_leaves_no_file_or_folder(client, dataset) -> None:
    upload(client, dataset.pk, "poems.csv", (FIXTURES / "poem_sample.csv").read_bytes())
    assert stored_uploads()  # stored, waiting for the job
    run_queued()
    assert stored_uploads() == []


class _CutOff:
    """A request body that breaks off half-way, as when the client goes away."""

    def __init__(self, data: bytes) -> None:
        self.data, self.position = data, 0

    def read(self, size: int = -1) -> bytes:
        if self.position >= len(self.data):
            raise OSError("the client closed the connection")
        size = len(self.data) - self.position if size < 0 else size
        chunk = self.data[self.position : self.position + size]
        self.position += len(chunk)
        return chunk

    def readline(self, size: int = -1) -> bytes:
        return self.read(size)


def _cut_off_upload(client, url: str, tmp_path: Path):
    boundary = "cut"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.csv"\r\n'
        "Content-Type: text/csv\r\n\r\ntext\n"
    ).encode() + b"row\n" * 200_000  # 800 KB of the 8 MB announced
    client.raise_request_exception = False
    return client.generic(
        "POST",
        url,
        b"",
        content_type=f"multipart/form-data; boundary={boundary}",
        CONTENT_TYPE=f"multipart/form-data; boundary={boundary}",  # the client drops it: no data
        CONTENT_LENGTH=str(8_000_000),
        **{"wsgi.input": _CutOff(head)},
    )


def test_an_interrupted_api_upload_leaves_no_temporary_file(
    client, dataset, settings, tmp_path
) -> None:
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path)
    response = _cut_off_upload(client, f"/api/v1/datasets/{dataset.pk}/upload/", tmp_path)
    assert response.status_code >= 400
    assert list(tmp_path.iterdir()) == []  # while the error (and its traceback) still exists
    assert not DataJob.objects.exists() and stored_uploads() == []


def test_an_interrupted_page_upload_leaves_no_temporary_file(
    world, dataset, settings, tmp_path
) -> None:
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path)
    page = Client()
    page.force_login(world.users["engineer"])
    response = _cut_off_upload(page, f"/projects/{world.project.pk}/data/upload/", tmp_path)
    assert response.status_code == 400
    assert list(tmp_path.iterdir()) == []
    assert not DataJob.objects.exists()


def test_the_sweep_removes_old_leftovers_and_keeps_what_is_needed(
    world, dataset, settings, tmp_path, monkeypatch
) -> None:
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path / "tmp")
    (tmp_path / "tmp").mkdir()
    scratch_root = tmp_path / "scratch"
    scratch_root.mkdir()
    monkeypatch.setattr(uploads.tempfile, "gettempdir", lambda: str(scratch_root))
    old = time.time() - 7 * 3600

    def aged(path: Path) -> Path:
        os.utime(path, (old, old))
        return path

    services.upload_start(  # queued: its upload must survive, however old
        actor=world.users["engineer"],
        dataset=dataset,
        uploaded_file=SimpleUploadedFile("queued.csv", b"text\nhi\n"),
    )
    [queued] = [p for p in stored_uploads() if p.is_file()]
    aged(queued)
    root = media() / "uploads"
    orphan = root / "orphan-folder" / "orphan.csv"
    orphan.parent.mkdir(parents=True)
    orphan.write_text("text\nx\n")
    aged(orphan)
    empty = aged(_mkdir(root / "empty"))
    fresh = root / "fresh" / "new.csv"
    fresh.parent.mkdir()
    fresh.write_text("text\nbeing written\n")
    young_empty = _mkdir(root / "young")
    temporary = aged(_touch(tmp_path / "tmp" / "tmpab12cd.upload.csv"))
    scratch = _mkdir(scratch_root / "llmhub-data-7-xyz")
    _touch(scratch / "table.parquet")
    aged(scratch)
    other = aged(_touch(scratch_root / "somebody-elses.txt"))

    call_command("sweep_uploads")

    assert queued.exists() and fresh.exists() and young_empty.exists() and other.exists()
    assert not orphan.exists() and not orphan.parent.exists() and not empty.exists()
    assert not temporary.exists() and not scratch.exists()


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def _touch(path: Path) -> Path:
    path.write_bytes(b"x")
    return path


def test_gzip_uploads_still_work_end_to_end(client, dataset) -> None:
    packed = gzip.compress((FIXTURES / "poem_sample.csv").read_bytes())
    assert upload(client, dataset.pk, "poems.csv.gz", packed).status_code == 202
    run_queued()
    assert DatasetVersion.objects.get().row_count == 240
