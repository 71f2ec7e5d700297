"""Upload handling in the web process: stream to a temporary file, stop at the size limit;
store uploads and delete them again; sweep what interrupted uploads and killed workers left.

Django's parser hands each chunk (64 KB) to the handler, which writes it to disk, so memory stays
flat whatever the file size. Past the limit the handler stops the upload and marks the request;
the view then answers 400 instead of storing anything. An upload cut off half-way (the client
went away, the body is not valid multipart) removes its temporary file at once, and a stored
upload is kept in its own folder, removed with it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings
from django.core.files.storage import default_storage
from django.core.files.uploadhandler import StopUpload, TemporaryFileUploadHandler
from django.http import HttpRequest
from django.http.multipartparser import MultiPartParser as DjangoMultiPartParser
from django.http.multipartparser import MultiPartParserError
from rest_framework.exceptions import ParseError, ValidationError
from rest_framework.parsers import DataAndFiles, MultiPartParser

logger = logging.getLogger(__name__)
UPLOAD_PREFIX = "uploads"
SCRATCH_PREFIX = "llmhub-data-"  # the data jobs' scratch folders (datasets_app.tasks)


def get_encoding(parser_context: dict) -> str:
    from django.conf import settings as django_settings

    return parser_context.get("encoding", django_settings.DEFAULT_CHARSET)


# Room for the multipart framing and the small form fields around the file.
MULTIPART_OVERHEAD = 1024 * 1024


class SizeLimitedUploadHandler(TemporaryFileUploadHandler):
    def __init__(self, request: HttpRequest, limit: int) -> None:
        super().__init__(request)
        self.limit = limit

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        if start + len(raw_data) > self.limit:
            self.request.upload_too_large = True
            raise StopUpload(connection_reset=False)
        return super().receive_data_chunk(raw_data, start)


def prepare_upload(request: HttpRequest) -> str | None:
    """Install the size-limited handler; returns an error message if the body is too large
    already by its Content-Length (nothing is read then)."""
    limit = settings.LLMHUB_MAX_UPLOAD_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit + MULTIPART_OVERHEAD:
        return too_large_message(limit)
    request.upload_handlers = [SizeLimitedUploadHandler(request, limit)]
    return None


def too_large_message(limit: int) -> str:
    return f"The file is larger than the upload limit of {limit:,} bytes."


class SizeLimitedUploadMixin:
    """For a viewset whose ``upload_actions`` take a multipart file: the size-limited handler
    goes in before anything reads the body (session authentication's CSRF check and the
    permission check both do), and ``refuse_oversized_upload`` answers a body over the limit
    as a 400 on ``upload_field``."""

    upload_actions: tuple[str, ...] = ("upload",)
    upload_field = "file"
    upload_error: str | None = None

    def initialize_request(self, request, *args, **kwargs):
        self.upload_error = None
        if self.action_map.get(request.method.lower()) in self.upload_actions:
            self.upload_error = prepare_upload(request)
        return super().initialize_request(request, *args, **kwargs)

    def refuse_oversized_upload(self, request) -> None:
        """Raise a 400 when the body is over the limit, by its length or as it was read."""
        message = self.upload_error
        if message is None:
            request.data  # parse now: the handler flags an oversized body as it reads  # noqa: B018
            if getattr(request._request, "upload_too_large", False):
                message = too_large_message(settings.LLMHUB_MAX_UPLOAD_BYTES)
        if message:
            raise ValidationError({self.upload_field: [message]})


class _StrictNameParser(DjangoMultiPartParser):
    """Refuses a file name with path separators or ``..`` instead of silently trimming it, so
    the client learns its name was not what it meant."""

    def sanitize_file_name(self, file_name: str) -> str | None:
        from datasets_app.cleaning.readers import safe_filename
        from llmhub.reporting import JobInputError

        try:
            safe_filename(file_name)
        except JobInputError as exc:
            raise ValidationError({"file": [str(exc)]}) from exc
        return super().sanitize_file_name(file_name)


class UploadParser(MultiPartParser):
    """DRF's multipart parser with the strict file-name check."""

    def parse(self, stream, media_type=None, parser_context=None):
        parser_context = parser_context or {}
        request = parser_context["request"]
        meta = request.META.copy()
        meta["CONTENT_TYPE"] = media_type
        try:
            with interruption_cleanup(request.upload_handlers):
                parser = _StrictNameParser(
                    meta, stream, request.upload_handlers, get_encoding(parser_context)
                )
                data, files = parser.parse()
        except MultiPartParserError as exc:
            raise ParseError(str(exc)) from exc
        return DataAndFiles(data, files)


@contextlib.contextmanager
def interruption_cleanup(handlers) -> Iterator[None]:
    """Remove the handlers' temporary files if parsing the body fails half-way (a client that
    went away, a truncated body): Django only closes them on a clean stop, and a file kept
    alive by the error's traceback would otherwise stay on disk."""
    try:
        yield
    except BaseException:
        for handler in handlers:
            try:
                handler.upload_interrupted()
            except Exception:  # cleanup must not hide the real error
                logger.exception("Could not remove an interrupted upload's temporary file")
        raise


def parse_upload(request: HttpRequest) -> None:
    """Parse a page's multipart body now, removing temporary files if that fails half-way."""
    with interruption_cleanup(request.upload_handlers):
        request.POST  # noqa: B018 - parses the body and the files
        request.FILES  # noqa: B018


# --- stored uploads ---------------------------------------------------------------------------


def store_upload(uploaded_file, *, filename: str) -> str:
    """Stream an uploaded file into storage under a fresh folder; returns its storage name.
    If storing fails half-way (a full disk, an unreachable bucket), what was written and the
    folder are removed."""
    name = f"{UPLOAD_PREFIX}/{uuid.uuid4().hex}/{filename}"
    try:
        return default_storage.save(name, uploaded_file)
    except BaseException:
        delete_upload(name)
        raise


def delete_upload(name: str) -> None:
    """Delete a stored upload and its folder (on local storage folders outlive their files)."""
    from llmhub import storage

    storage.delete_quietly(name)
    folder = name.rsplit("/", 1)[0]
    if folder.startswith(f"{UPLOAD_PREFIX}/") and folder != UPLOAD_PREFIX:
        _remove_empty_folder(folder)


def _local_path(name: str) -> Path | None:
    try:
        return Path(default_storage.path(name))
    except NotImplementedError:
        return None  # object storage: no folders to remove


def _remove_empty_folder(name: str) -> None:
    path = _local_path(name)
    if path is not None:
        with contextlib.suppress(OSError):  # not empty (or already gone): leave it
            path.rmdir()


def sweep_upload_leftovers(*, max_age_seconds: int | None = None) -> dict[str, int]:
    """Remove what interrupted uploads and killed workers left behind, once older than
    ``max_age_seconds`` (default ``LLMHUB_UPLOAD_LEFTOVER_SECONDS``): stored uploads that no
    queued or running ingest job will read, empty upload folders, Django's temporary upload
    files and the data jobs' scratch folders. Returns how many of each were removed.

    Run when a worker starts and by ``manage.py sweep_uploads``; safe to run at any time, as
    nothing young or still needed is touched."""
    from datasets_app.models import DataJob, DataJobKind
    from llmhub import storage
    from llmhub.models import JobStatus

    if max_age_seconds is None:
        max_age_seconds = settings.LLMHUB_UPLOAD_LEFTOVER_SECONDS
    cutoff = time.time() - max_age_seconds
    removed = {"uploads": 0, "folders": 0, "temporary_files": 0, "scratch_folders": 0}
    pending = {
        (job.params or {}).get("upload")
        for job in DataJob.objects.filter(
            kind=DataJobKind.INGEST, status__in=[JobStatus.QUEUED, JobStatus.RUNNING]
        ).only("params")
    }
    try:
        folders, _files = default_storage.listdir(UPLOAD_PREFIX)
    except (FileNotFoundError, NotImplementedError):
        folders = []
    for folder in folders:
        prefix = f"{UPLOAD_PREFIX}/{folder}"
        try:
            _subfolders, files = default_storage.listdir(prefix)
        except FileNotFoundError:
            continue
        removed_here = 0
        for file in files:
            name = f"{prefix}/{file}"
            if name in pending:
                continue
            try:
                old = default_storage.get_modified_time(name).timestamp() < cutoff
            except (FileNotFoundError, NotImplementedError):
                continue
            if old:
                storage.delete_quietly(name)
                removed_here += 1
        removed["uploads"] += removed_here
        path = _local_path(prefix)
        # A young empty folder may be an upload being written right now: leave it.
        empty = path is not None and path.is_dir() and not any(path.iterdir())
        if empty and (removed_here or _older(path, cutoff)):
            _remove_empty_folder(prefix)
            removed["folders"] += not path.exists()
    temp_dir = Path(settings.FILE_UPLOAD_TEMP_DIR or tempfile.gettempdir())
    for path in temp_dir.glob("tmp*.upload*"):  # Django's TemporaryUploadedFile names
        if _older(path, cutoff) and path.is_file():
            path.unlink(missing_ok=True)
            removed["temporary_files"] += 1
    for path in Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*"):
        if _older(path, cutoff) and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            removed["scratch_folders"] += 1
    if any(removed.values()):
        logger.info("Swept upload leftovers: %s", removed)
    return removed


def _older(path: Path, cutoff: float) -> bool:
    try:
        return os.stat(path).st_mtime < cutoff
    except OSError:
        return False
