"""Files through Django's storage API, so workers on other machines can share them (S3 etc.).

Runtimes work on local paths. Workers call :func:`local_copy` / :func:`local_directory` to get
one (the file itself on local storage, a cached download otherwise) and :func:`store_file` /
:func:`store_directory` to put results back. Dataset tables are content-addressed: stored once
under their SHA-256, whatever number of versions point at them.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import uuid
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage

CHUNK = 1024 * 1024


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def content_addressed_name(sha256: str, *, prefix: str, suffix: str) -> str:
    return f"{prefix}/{sha256[:2]}/{sha256}{suffix}"


def store_content_addressed(
    local_path: Path, *, sha256: str, prefix: str = "tables", suffix: str = ".parquet"
) -> str:
    """Store ``local_path`` under its hash unless a file with that hash is already stored."""
    name = content_addressed_name(sha256, prefix=prefix, suffix=suffix)
    if default_storage.exists(name):
        return name
    with open(local_path, "rb") as handle:
        saved = default_storage.save(name, File(handle))
    if saved != name:
        # Another worker stored the same content at the same moment; keep the canonical one.
        default_storage.delete(saved)
    return name


def store_file(local_path: Path, name: str) -> str:
    with open(local_path, "rb") as handle:
        return default_storage.save(name, File(handle))


def store_upload(uploaded_file, *, filename: str) -> str:
    """Stream an uploaded file into storage under a fresh folder; returns its storage name."""
    name = f"uploads/{uuid.uuid4().hex}/{filename}"
    return default_storage.save(name, uploaded_file)


def unique_prefix(*parts: object) -> str:
    """A fresh storage folder under ``parts`` (ids alone can repeat: a re-queued job saves the
    same step twice, a database restored from backup reuses ids)."""
    return "/".join([*(str(p) for p in parts), uuid.uuid4().hex[:12]])


def store_directory(local_dir: Path, *, prefix: str) -> list[str]:
    """Store every file under ``local_dir`` as ``prefix/<relative path>``; returns the relative
    paths (which :func:`local_directory` needs to rebuild it)."""
    relative_paths = []
    for path in sorted(p for p in Path(local_dir).rglob("*") if p.is_file()):
        relative = path.relative_to(local_dir).as_posix()
        stored = store_file(path, f"{prefix}/{relative}")
        if stored != f"{prefix}/{relative}":
            raise RuntimeError(f"Storage renamed {prefix}/{relative} to {stored}")
        relative_paths.append(relative)
    return relative_paths


def _is_local() -> bool:
    try:
        default_storage.path("probe")
    except NotImplementedError:
        return False
    return True


def _safe_relative(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        raise ValueError(f"Unsafe storage name: {name!r}")
    return path


def local_copy(name: str) -> Path:
    """A local path holding the stored file ``name`` (downloaded to the cache if needed)."""
    _safe_relative(name)
    if _is_local():
        return Path(default_storage.path(name))
    target = Path(settings.LLMHUB_CACHE_DIR) / name
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + f".{uuid.uuid4().hex}.part")
        with default_storage.open(name, "rb") as source, open(partial, "wb") as out:
            shutil.copyfileobj(source, out, CHUNK)
        partial.rename(target)  # atomic: a crash never leaves half a file under the real name
    return target


def local_directory(prefix: str, files: list[str]) -> Path:
    """A local directory holding the stored directory ``prefix`` (with its ``files``)."""
    _safe_relative(prefix)
    if _is_local():
        return Path(default_storage.path(prefix))
    for relative in files:
        local_copy(f"{prefix}/{_safe_relative(relative)}")
    return Path(settings.LLMHUB_CACHE_DIR) / prefix


def delete_quietly(name: str) -> None:
    with contextlib.suppress(OSError):
        default_storage.delete(name)
