"""Upload handling in the web process: stream to a temporary file, stop at the size limit.

Django's parser hands each chunk (64 KB) to the handler, which writes it to disk, so memory stays
flat whatever the file size. Past the limit the handler stops the upload and marks the request;
the view then answers 400 instead of storing anything.
"""

from __future__ import annotations

from django.conf import settings
from django.core.files.uploadhandler import StopUpload, TemporaryFileUploadHandler
from django.http import HttpRequest
from django.http.multipartparser import MultiPartParser as DjangoMultiPartParser
from django.http.multipartparser import MultiPartParserError
from rest_framework.exceptions import ParseError, ValidationError
from rest_framework.parsers import DataAndFiles, MultiPartParser


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
            parser = _StrictNameParser(
                meta, stream, request.upload_handlers, get_encoding(parser_context)
            )
            data, files = parser.parse()
        except MultiPartParserError as exc:
            raise ParseError(str(exc)) from exc
        return DataAndFiles(data, files)
