"""A model version's files as one zip archive, streamed from storage.

The archive is written as it is sent: each stored file is read in chunks and the zip's bytes
go out as they are made, so a multi-gigabyte model needs neither a temporary file nor memory
of its size, on local storage or S3 alike. Callers fetch the version through the scoped
selectors first (another team's version is a 404 before anything is read).
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator

from django.core.files.storage import default_storage
from django.http import StreamingHttpResponse

from llmhub.storage import CHUNK, _safe_relative
from training.models import ModelVersion

# Files this large need zip64 headers, which must be chosen before the size is known.
_ZIP64_FROM = 2**31


class _Sink:
    """A write-only, unseekable file: zipfile then writes data descriptors, and whatever it
    wrote is taken out after each chunk."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._offset = 0

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        self._offset += len(data)
        return len(data)

    def tell(self) -> int:
        return self._offset

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data, self._parts = b"".join(self._parts), []
        return data


def archive_name(version: ModelVersion) -> str:
    """``<model>-v<number>``, safe as a file and folder name."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", version.registered_model.name).strip("-.") or "model"
    return f"{stem}-v{version.number}"


def model_files_zip(version: ModelVersion) -> Iterator[bytes]:
    """The zip's bytes, in pieces: every file of the version under ``<model>-v<n>/``."""
    folder = archive_name(version)
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED) as archive:
        for relative in version.files:
            name = f"{version.files_prefix}/{_safe_relative(relative)}"
            size = default_storage.size(name)
            info = zipfile.ZipInfo(f"{folder}/{relative}")
            info.compress_type = zipfile.ZIP_STORED
            with (
                default_storage.open(name, "rb") as source,
                archive.open(info, "w", force_zip64=size >= _ZIP64_FROM) as target,
            ):
                while chunk := source.read(CHUNK):
                    target.write(chunk)
                    yield sink.take()
            yield sink.take()
    yield sink.take()


def model_download_response(version: ModelVersion) -> StreamingHttpResponse:
    response = StreamingHttpResponse(model_files_zip(version), content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="{archive_name(version)}.zip"'
    return response
