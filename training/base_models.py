"""Registered base models: reads (selectors) and writes (services) of ``BaseModel`` rows.

A base model is a pretrained starting point registered with a team: either an installed offline
package (a fixed catalog, resolved to its directory on the worker) or an uploaded archive of a
model directory (config.json, safetensors weights, tokenizer files; nothing pickled).
"""

from __future__ import annotations

import stat
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet

from llmhub import storage
from projects.audit import record_event
from projects.models import Team
from projects.permissions import Action
from projects.selectors import User, get_visible, visible_to
from projects.services import require
from training.models import BaseModel, BaseModelSource

CHUNK = 1024 * 1024


def base_models_for_user(user: User) -> QuerySet[BaseModel]:
    """The base models of the teams where ``user`` may see work."""
    return visible_to(
        BaseModel.objects.select_related("team", "created_by").order_by("name", "id"),
        user,
        team_path="team",
    )


def get_base_model_for_user(user: User, pk) -> BaseModel:
    """One base model among those ``user`` may see, else Http404."""
    return get_visible(base_models_for_user(user), user, pk, team_path="team")


# --- services ---------------------------------------------------------------------------------


def _error(field: str | None, message: str) -> ValidationError:
    return ValidationError({field: message} if field else message)


def installed_packages() -> list[dict]:
    """The catalog's offline packages importable here, for the page and the API."""
    from training.runtime.base_packages import installed_packages as installed

    return [
        {
            "package": p.package,
            "name": p.name,
            "license": p.license,
            "description": p.description,
        }
        for p in installed()
    ]


def _check_name(team: Team, name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise _error("name", "Give the base model a name.")
    if len(name) > 120:
        raise _error("name", "At most 120 characters.")
    if BaseModel.objects.filter(team=team, name=name).exists():
        raise _error("name", f"The team already has a base model named '{name}'.")
    return name


def _describe(model_dir: Path) -> dict[str, Any]:
    """config, architecture, model type and exact parameter count of a checked model dir."""
    from llmhub.reporting import JobInputError
    from training.runtime.model_files import check_model_dir, count_parameters

    try:
        config = check_model_dir(model_dir)
        parameters = count_parameters(model_dir)
    except JobInputError as exc:
        raise _error("file", str(exc)) from exc
    return {
        "config": config,
        "architecture": str((config.get("architectures") or [""])[0])[:80],
        "model_type": str(config.get("model_type") or "")[:40],
        "parameters": parameters,
        "size_bytes": sum(p.stat().st_size for p in model_dir.rglob("*") if p.is_file()),
    }


def _save(*, actor, team: Team, verb: str, **fields: Any) -> BaseModel:
    base = BaseModel(team=team, created_by=actor, **fields)
    base.full_clean()
    base.save()
    record_event(
        actor=actor,
        team=team,
        verb=verb,
        target=base,
        changes={"source": base.source, "license": base.license},
    )
    return base


def base_model_register_package(
    *, actor, team: Team, package: str, name: str | None = None
) -> BaseModel:
    """Register an installed offline package of the catalog (its files stay in the package,
    resolved where each job runs) as a team's base model."""
    from llmhub.reporting import JobInputError
    from training.runtime.base_packages import catalog_entry, is_installed, package_model_dir

    require(actor, team, Action.RUN_JOBS)
    try:
        entry = catalog_entry(package)
    except JobInputError as exc:
        raise _error("package", str(exc)) from exc
    if not is_installed(package):
        raise _error("package", f"The package {package} is not installed on this server.")
    name = _check_name(team, entry.name if name is None else name)
    try:
        described = _describe(package_model_dir(package))
    except JobInputError as exc:
        raise _error("package", str(exc)) from exc
    with transaction.atomic():
        return _save(
            actor=actor,
            team=team,
            verb="base_model.registered",
            name=name,
            source=BaseModelSource.PACKAGE,
            package=package,
            license=entry.license,
            description=entry.description,
            **described,
        )


ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")


def _extract(archive: Path, target: Path) -> None:
    """Extract a zip or tar archive into ``target`` safely: relative names only (no absolute
    paths, no ``..``), regular files and folders only (no links or devices), within the
    member count and expanded size limits; a ValidationError saying which rule broke."""
    max_members = settings.LLMHUB_MAX_MODEL_ARCHIVE_MEMBERS
    max_bytes = settings.LLMHUB_MAX_MODEL_EXPANDED_BYTES
    written = 0

    def destination(name: str) -> Path | None:
        if "\\" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
            raise _error("file", f"The archive holds an absolute path ({name!r}); refused.")
        parts = PurePosixPath(name).parts
        if ".." in parts:
            raise _error("file", f"The archive holds a path leaving its folder ({name!r}).")
        parts = [p for p in parts if p not in ("", ".")]
        return target.joinpath(*parts) if parts else None

    def copy(source, path: Path) -> None:
        nonlocal written
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as out:
            while chunk := source.read(CHUNK):
                written += len(chunk)
                if written > max_bytes:
                    raise _error(
                        "file",
                        f"The archive expands past the limit of {max_bytes:,} bytes "
                        "(LLMHUB_MAX_MODEL_EXPANDED_BYTES).",
                    )
                out.write(chunk)

    def too_many(count: int) -> None:
        if count > max_members:
            raise _error(
                "file",
                f"The archive has {count:,} members; at most {max_members:,} "
                "(LLMHUB_MAX_MODEL_ARCHIVE_MEMBERS).",
            )

    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as bundle:
            members = bundle.infolist()
            too_many(len(members))
            declared = sum(m.file_size for m in members)
            if declared > max_bytes:
                raise _error(
                    "file",
                    f"The archive expands to {declared:,} bytes; at most {max_bytes:,} "
                    "(LLMHUB_MAX_MODEL_EXPANDED_BYTES).",
                )
            for member in members:
                mode = (member.external_attr >> 16) & 0o170000
                if mode == stat.S_IFLNK:
                    raise _error("file", f"The archive holds a symbolic link ({member.filename}).")
                path = destination(member.filename)
                if path is None or member.is_dir():
                    continue
                if mode not in (0, stat.S_IFREG):
                    raise _error("file", f"{member.filename} is not a regular file.")
                with bundle.open(member) as source:
                    copy(source, path)
        return
    try:
        bundle = tarfile.open(archive, mode="r:*")  # noqa: SIM115 - closed below
    except (tarfile.TarError, OSError) as exc:
        raise _error(
            "file",
            "Upload a .zip or .tar(.gz) archive of the model directory "
            f"(config.json, *.safetensors, tokenizer files); this is neither ({exc}).",
        ) from exc
    with bundle:
        count = 0
        try:
            for member in bundle:
                count += 1
                too_many(count)
                if member.issym() or member.islnk():
                    raise _error("file", f"The archive holds a link ({member.name}); refused.")
                path = destination(member.name)
                if path is None or member.isdir():
                    continue
                if not member.isfile():
                    raise _error("file", f"{member.name} is not a regular file.")
                source = bundle.extractfile(member)
                copy(source, path)
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            raise _error("file", f"The archive cannot be read: {exc}") from exc


def _model_root(extracted: Path) -> Path:
    """The model directory in an extracted archive: its top, or its one folder (an archive
    of the directory itself rather than of its contents)."""
    if (extracted / "config.json").exists():
        return extracted
    entries = [p for p in extracted.iterdir() if not p.name.startswith(("__MACOSX", "."))]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return extracted


def _spool(uploaded, directory: Path, name: str) -> Path:
    """A local file holding an uploaded file (streamed to disk, never held in memory)."""
    path = directory / name
    with open(path, "wb") as out:
        for chunk in uploaded.chunks():
            out.write(chunk)
    return path


def base_model_upload(
    *,
    actor,
    team: Team,
    name: str,
    uploaded_file=None,
    uploaded_files: list | None = None,
    license: str = "",
    description: str = "",
) -> BaseModel:
    """Register uploaded model files as a team's base model: one .zip / .tar(.gz) archive of a
    model directory (``uploaded_file``), or the directory's files themselves
    (``uploaded_files``: config.json, *.safetensors, tokenizer files).

    Extraction and every check (safe names, limits, no pickled weights, a config.json, valid
    safetensors) run on a scratch folder, then the files go to storage, all before the short
    transaction that creates the row; nothing is stored when a check fails."""
    require(actor, team, Action.RUN_JOBS)
    name = _check_name(team, name)
    license = (license or "").strip()
    if len(license) > 100:
        raise _error("license", "At most 100 characters.")
    files = list(uploaded_files or [])
    if (uploaded_file is None) == (not files):
        raise _error("file", "Upload one archive of the model directory, or its files.")
    with tempfile.TemporaryDirectory(prefix="llmhub-base-model-") as scratch:
        scratch = Path(scratch)
        model_dir = scratch / "model"
        model_dir.mkdir()
        if uploaded_file is not None:
            filename = PurePosixPath(uploaded_file.name or "model").name
            if not filename.lower().endswith(ARCHIVE_SUFFIXES):
                raise _error(
                    "file",
                    f"{filename}: upload a .zip, .tar or .tar.gz archive of the model "
                    "directory, or the directory's files one by one.",
                )
            archive = _spool(uploaded_file, scratch, "upload")
            _extract(archive, model_dir)
            archive.unlink()
            root = _model_root(model_dir)
        else:
            if len(files) > settings.LLMHUB_MAX_MODEL_ARCHIVE_MEMBERS:
                raise _error("file", "Too many files; upload an archive of the directory.")
            for uploaded in files:
                filename = PurePosixPath(uploaded.name or "").name
                if not filename or filename.startswith("."):
                    raise _error("file", f"Unusable file name {uploaded.name!r}.")
                _spool(uploaded, model_dir, filename)
            root = model_dir
        described = _describe(root)
        prefix = storage.unique_prefix("base_models", team.pk)
        stored = storage.store_directory(root, prefix=prefix)
    try:
        with transaction.atomic():
            return _save(
                actor=actor,
                team=team,
                verb="base_model.uploaded",
                name=name,
                source=BaseModelSource.UPLOAD,
                files_prefix=prefix,
                files=stored,
                license=license,
                description=(description or "").strip(),
                **described,
            )
    except Exception:
        for relative in stored:  # no row refers to them
            storage.delete_quietly(f"{prefix}/{relative}")
        raise


def base_model_local_dir(base_model: BaseModel) -> Path:
    """Where the job runs: the base model's directory on this machine (the installed
    package's folder, or the uploaded files copied from storage)."""
    from training.runtime.base_packages import package_model_dir

    if base_model.source == BaseModelSource.PACKAGE:
        return package_model_dir(base_model.package)
    return storage.local_directory(base_model.files_prefix, base_model.files)
