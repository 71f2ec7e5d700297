"""Every write of the data stage: datasets, data cards, uploads, versions, recipes, data jobs.

User actions check the actor's role (EDIT_DATA for everything here, DELETE needs a manager) and
record an audit event. ``*_register`` functions are the system writes the data jobs make when
they finish: they store files first and create rows in one transaction, so a failed job leaves
no version behind.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, models, transaction
from django.db.models import RestrictedError

from datasets_app.cleaning import options as opts
from datasets_app.models import (
    CleaningRecipe,
    DataCard,
    DataJob,
    DataJobKind,
    Dataset,
    DatasetSplit,
    DatasetVersion,
    Tokenizer,
)
from llmhub import storage
from llmhub.jobs import enqueue_job, requires_broker
from llmhub.services import update_instance
from projects.audit import record_event
from projects.models import Project
from projects.permissions import Action
from projects.services import require

UPLOAD_FORMATS = opts.FORMATS
TEXT_ROLES = opts.TEXT_ROLES
TOKENIZER_ALGORITHMS = opts.TOKENIZER_ALGORITHMS


def _options(kind: type, **values: Any):
    """Build one of the runtime's option dataclasses (its one validator); a bad value is a
    ValidationError on the field it names."""
    try:
        return kind(**values)
    except opts.OptionError as exc:
        raise ValidationError({exc.field: str(exc)}) from None


def _checked_columns(field: str, columns: list[str] | None, available: list[str]) -> None:
    try:
        opts.check_columns(field, columns, available)
    except opts.OptionError as exc:
        raise ValidationError({exc.field: str(exc)}) from None


def _create(instance: models.Model, *, may_be_empty: tuple[str, ...] = ()) -> models.Model:
    """Validate (fields, choices, unique constraints) and insert: every create goes here.
    ``may_be_empty`` names fields whose empty value is valid here although the model's field is
    not ``blank`` (a version whose columns have no role yet: ``column_roles={}``)."""
    instance.full_clean(exclude=[f for f in may_be_empty if not getattr(instance, f)])
    instance.save(force_insert=True)
    return instance


def _require_free_name(
    model, project: Project, name: str, *, what: str, exclude_pk: int | None = None
) -> str:
    """``name`` stripped, if no other ``model`` row of ``project`` has it; else a 400."""
    name = (name or "").strip()
    clash = model.objects.filter(project=project, name=name)
    if exclude_pk is not None:
        clash = clash.exclude(pk=exclude_pk)
    if clash.exists():
        raise ValidationError({"name": f"A {what} named '{name}' already exists in this project."})
    return name


# Roles that carry the input text training and evaluation read; a version with none of them
# mapped is warned about at upload and in the launch forms.
INPUT_TEXT_ROLES = ("text", "prompt", "question", "context")


def lacks_text_role(column_roles: dict | None) -> bool:
    """Whether no column of a version has an input-text role."""
    return not set(INPUT_TEXT_ROLES) & set(column_roles or {})


NO_TEXT_ROLE_PREFIX = "No column has a text role"


def _has_string_column(version: DatasetVersion) -> bool:
    return any(c.get("type") == "string" for c in version.schema or [])


def no_text_role_warning(columns: list[str]) -> str:
    """The warning stored on a version whose table has text but no column with a text role."""
    return (
        f"{NO_TEXT_ROLE_PREFIX} ({', '.join(INPUT_TEXT_ROLES)}); the columns are "
        f"{', '.join(columns)}. Map the text column on the version page before training or "
        "evaluating."
    )


def default_dataset_name(*, project: Project, filename: str) -> str:
    """A free dataset name from an uploaded file's name: ``poems.csv.gz`` -> ``poems``, then
    ``poems (2)``... if the project has one (an upload without a name is named after its file)."""
    stem = Path(filename or "").name
    for suffix in (".gz", ".bz2", ".xz", ".zst", ".zip"):
        stem = stem.removesuffix(suffix)
    stem = (Path(stem).stem or "dataset").strip()[:110] or "dataset"
    return free_dataset_name(project_id=project.pk, stem=stem)


def free_dataset_name(*, project_id: int, stem: str) -> str:
    """``stem``, or ``stem (2)``, ``stem (3)``... whichever the project has no dataset named
    (for datasets the system names: uploads without a name, feedback exports, monitor windows)."""
    stem = stem[:110]
    name, number = stem, 1
    while Dataset.objects.filter(project_id=project_id, name=name).exists():
        number += 1
        name = f"{stem} ({number})"
    return name


# --- datasets and data cards --------------------------------------------------------------------


@transaction.atomic
def dataset_create(*, actor, project: Project, name: str, description: str = "") -> Dataset:
    require(actor, project.team, Action.EDIT_DATA)
    name = _require_free_name(Dataset, project, name, what="dataset")
    dataset = Dataset(project=project, name=name, description=description, created_by=actor)
    _create(dataset)
    _create(DataCard(dataset=dataset))
    record_event(
        actor=actor, team=project.team, project=project, verb="dataset.created", target=dataset
    )
    return dataset


@transaction.atomic
def dataset_update(*, actor, dataset: Dataset, **updates: Any) -> Dataset:
    require(actor, dataset.project.team, Action.EDIT_DATA)
    if "name" in updates:
        updates["name"] = _require_free_name(
            Dataset, dataset.project, updates["name"], what="dataset", exclude_pk=dataset.pk
        )
    changes = update_instance(dataset, updates, editable={"name", "description"})
    record_event(actor=actor, verb="dataset.updated", target=dataset, changes=changes)
    return dataset


@transaction.atomic
def dataset_delete(*, actor, dataset: Dataset) -> None:
    """Delete a dataset and its versions, unless a training job, model or evaluation uses one
    of them (lineage must not point at nothing)."""
    require(actor, dataset.project.team, Action.EDIT_PROJECT)
    record_event(
        actor=actor,
        team=dataset.project.team,
        project=dataset.project,
        verb="dataset.deleted",
        target=dataset,
    )
    try:
        dataset.delete()
    except RestrictedError as exc:
        users = sorted({f"{obj._meta.verbose_name} {obj}" for obj in exc.restricted_objects})
        raise ValidationError(
            f"{dataset.name} is used by {', '.join(users[:5])}"
            f"{' and more' if len(users) > 5 else ''}: delete those first."
        ) from exc


DATA_CARD_FIELDS = (
    "source",
    "license",
    "collection_method",
    "consent",
    "personal_data",
    "intended_use",
    "limitations",
)


@transaction.atomic
def data_card_update(*, actor, dataset: Dataset, **fields: str) -> DataCard:
    require(actor, dataset.project.team, Action.EDIT_DATA)
    unknown = set(fields) - set(DATA_CARD_FIELDS)
    if unknown:
        raise ValidationError(f"Unknown data card fields: {', '.join(sorted(unknown))}.")
    card, _ = DataCard.objects.select_for_update().get_or_create(dataset=dataset)

    def stamp(card: DataCard, _diff: dict) -> list[str]:
        card.updated_by = actor
        return ["updated_by"]

    changes = update_instance(
        card,
        {name: (value or "").strip() for name, value in fields.items()},
        touch="updated_at",
        before_save=stamp,
    )
    record_event(
        actor=actor,
        verb="data_card.updated",
        target=card,
        changes={k: "changed" for k in changes},
    )
    return card


# --- uploads ----------------------------------------------------------------------------------


def _check_roles(column_roles: dict | None) -> dict:
    try:
        return opts.check_column_roles(column_roles)
    except opts.OptionError as exc:
        raise ValidationError({exc.field: str(exc)}) from None


@requires_broker
def upload_start(
    *,
    actor,
    dataset: Dataset,
    uploaded_file,
    file_format: str | None = None,
    encoding: str = "utf-8",
    encoding_errors: str = "strict",
    txt_mode: str = "lines",
    chunk_chars: int = 2000,
    column_roles: dict | None = None,
) -> DataJob:
    """Accept an uploaded file and queue its ingestion into a new version of ``dataset``.

    Cheap checks run here so the caller gets an immediate 400: the size limit, the options
    (validated by the runtime's ``IngestOptions``, as the worker does again), the file name
    (no path separators or ``..``), and that the first bytes look like the declared format.
    The file is streamed into storage before the transaction that creates the job opens (no
    transaction is held open during slow I/O), and deleted again if that transaction fails.
    Parsing the whole file happens in the ingest job; if it fails, the job fails with the line
    and reason, and no version is created.
    """
    require(actor, dataset.project.team, Action.EDIT_DATA)
    return _accept_upload(
        actor=actor,
        dataset_for_job=lambda: dataset,
        uploaded_file=uploaded_file,
        options={
            "file_format": file_format,
            "encoding": encoding,
            "encoding_errors": encoding_errors,
            "txt_mode": txt_mode,
            "chunk_chars": chunk_chars,
            "column_roles": column_roles,
        },
    )


def dataset_create_with_upload(
    *,
    actor,
    project: Project,
    name: str,
    description: str = "",
    uploaded_file,
    **options: Any,
) -> DataJob:
    """Create a dataset from its first file (the Data tab's upload). The dataset is created in
    the transaction that queues the ingest, after every check of the file and its options: a
    refused upload leaves no empty dataset behind. ``options`` are those of
    :func:`upload_start`."""
    require(actor, project.team, Action.EDIT_DATA)
    _require_free_name(Dataset, project, name, what="dataset")  # refused before the file is stored
    return _accept_upload(
        actor=actor,
        dataset_for_job=lambda: dataset_create(
            actor=actor, project=project, name=name, description=description
        ),
        uploaded_file=uploaded_file,
        options=options,
    )


def _accept_upload(*, actor, dataset_for_job, uploaded_file, options: dict) -> DataJob:
    """Check an upload and its options, store the file (no transaction open), then in one
    transaction get the dataset (``dataset_for_job()``) and queue the ingest job."""
    from datasets_app.cleaning.readers import sniff_upload
    from llmhub.reporting import JobInputError

    if uploaded_file is None:
        raise ValidationError({"file": "No file was uploaded."})
    if uploaded_file.size == 0:
        raise ValidationError({"file": "The file is empty."})
    if uploaded_file.size > settings.LLMHUB_MAX_UPLOAD_BYTES:
        raise ValidationError(
            {
                "file": f"The file is {uploaded_file.size:,} bytes; the limit is "
                f"{settings.LLMHUB_MAX_UPLOAD_BYTES:,} bytes."
            }
        )
    options = _options(opts.IngestOptions, **options)

    uploaded_file.seek(0)
    head = uploaded_file.read(64 * 1024)
    uploaded_file.seek(0)
    try:
        safe_name = sniff_upload(
            head, filename=uploaded_file.name or "", file_format=options.file_format
        )
    except JobInputError as exc:
        raise ValidationError({"file": str(exc)}) from exc

    from datasets_app.uploads import delete_upload, store_upload

    stored = store_upload(uploaded_file, filename=safe_name)  # slow: before the transaction
    try:
        with transaction.atomic():
            return _queue_ingest(
                actor=actor,
                dataset=dataset_for_job(),
                stored=stored,
                safe_name=safe_name,
                size_bytes=uploaded_file.size,
                params=options.to_params() | {"column_roles": options.column_roles or {}},
            )
    except BaseException:
        delete_upload(stored)  # nothing half-written: no orphaned upload either
        raise


def _queue_ingest(
    *, actor, dataset: Dataset, stored: str, safe_name: str, size_bytes: int, params: dict
) -> DataJob:
    job = _create(
        DataJob(
            kind=DataJobKind.INGEST,
            project=dataset.project,
            dataset=dataset,
            created_by=actor,
            params={"upload": stored, "filename": safe_name, "size_bytes": size_bytes, **params},
        )
    )
    record_event(
        actor=actor,
        team=dataset.project.team,
        project=dataset.project,
        verb="dataset.uploaded",
        target=dataset,
        changes={"file": safe_name, "bytes": size_bytes},
    )
    enqueue_job(job)
    return job


# --- versions ---------------------------------------------------------------------------------


def default_text_columns(version: DatasetVersion) -> list[str]:
    """The columns holding text that cleaning should work on, from the version's roles."""
    return opts.default_text_columns(version.schema, version.column_roles)


def _next_number(locked: Dataset) -> int:
    last = locked.versions.order_by("-number").values_list("number", flat=True).first() or 0
    return last + 1


def version_register(
    *,
    dataset: Dataset,
    local_path: Path,
    sha256: str,
    row_count: int,
    size_bytes: int,
    schema: list[dict],
    column_roles: dict,
    recipe: dict,
    parent: DatasetVersion | None,
    actor,
    note: str = "",
    splits: list[dict] | None = None,
    warnings: list[str] | None = None,
) -> DatasetVersion:
    """Store a finished table (and its splits), then create the version row in a short
    transaction (system write). Tables are content-addressed and may be shared by other
    versions, so a failed transaction leaves them stored (the next identical table reuses
    them) rather than deleting a file another version may hold."""
    name = storage.store_content_addressed(local_path, sha256=sha256)
    stored_splits = [
        {**split, "file": storage.store_content_addressed(split["path"], sha256=split["sha256"])}
        for split in splits or []
    ]
    with transaction.atomic():
        locked = Dataset.objects.select_for_update().get(pk=dataset.pk)
        version = _create(
            DatasetVersion(
                dataset=locked,
                number=_next_number(locked),
                parent=parent,
                file=name,
                content_sha256=sha256,
                row_count=row_count,
                size_bytes=size_bytes,
                schema=schema,
                column_roles=column_roles,
                recipe=recipe,
                note=note[:255],
                warnings=list(warnings or []),
                created_by=actor if getattr(actor, "is_authenticated", False) else None,
            ),
            # A table without text (numbers only) has no roles yet: stored with its warning,
            # not a crash of the ingest.
            may_be_empty=("column_roles",),
        )
        for split in stored_splits:
            _create(
                DatasetSplit(
                    version=version,
                    name=split["name"],
                    file=split["file"],
                    content_sha256=split["sha256"],
                    row_count=split["rows"],
                )
            )
        record_event(
            actor=actor,
            team=dataset.project.team,
            project=dataset.project,
            verb="dataset_version.created",
            target=version,
            changes={"recipe": recipe.get("kind")},
        )
    return version


@transaction.atomic
def version_remap_roles(*, actor, version: DatasetVersion, column_roles: dict) -> DatasetVersion:
    """A new version with the same table and other column roles (no data is copied)."""
    require(actor, version.dataset.project.team, Action.EDIT_DATA)
    column_roles = _check_roles(column_roles)
    missing = sorted({c for c in column_roles.values()} - set(version.columns))
    if missing:
        raise ValidationError(
            {
                "column_roles": f"No column named {', '.join(missing)} in this version. "
                f"Columns: {', '.join(version.columns)}."
            }
        )
    locked = Dataset.objects.select_for_update().get(pk=version.dataset_id)
    new = _create(
        DatasetVersion(
            dataset=locked,
            number=_next_number(locked),
            parent=version,
            file=version.file,
            content_sha256=version.content_sha256,
            row_count=version.row_count,
            size_bytes=version.size_bytes,
            schema=version.schema,
            column_roles=column_roles,
            recipe={"kind": "remap", "column_roles": column_roles},
            # The data's warnings stay; the one about roles follows the new roles.
            warnings=[w for w in version.warnings if not w.startswith(NO_TEXT_ROLE_PREFIX)]
            + (
                [no_text_role_warning(version.columns)]
                if lacks_text_role(column_roles) and _has_string_column(version)
                else []
            ),
            created_by=actor,
        )
    )
    for split in version.splits.all():
        _create(
            DatasetSplit(
                version=new,
                name=split.name,
                file=split.file,
                content_sha256=split.content_sha256,
                row_count=split.row_count,
            )
        )
    record_event(
        actor=actor,
        team=locked.project.team,
        project=locked.project,
        verb="dataset_version.created",
        target=new,
        changes={"recipe": "remap"},
    )
    return new


# --- data jobs --------------------------------------------------------------------------------


def _launch(*, actor, version: DatasetVersion, kind: str, params: dict, recipe=None) -> DataJob:
    job = _create(
        DataJob(
            kind=kind,
            project=version.dataset.project,
            dataset=version.dataset,
            source_version=version,
            params=params,
            recipe=recipe,
            created_by=actor,
        )
    )
    record_event(
        actor=actor,
        team=version.dataset.project.team,
        project=version.dataset.project,
        verb=f"data_job.{kind}_launched",
        target=job,
        changes={"version": str(version)},
    )
    enqueue_job(job)
    return job


def _check_text_columns(version: DatasetVersion, text_columns: list[str] | None) -> list[str]:
    columns = text_columns or default_text_columns(version)
    _checked_columns("text_columns", columns, version.columns)
    if not columns:
        raise ValidationError({"text_columns": "This version has no text column to work on."})
    return columns


@requires_broker
@transaction.atomic
def profile_launch(
    *, actor, version: DatasetVersion, tokenizer: Tokenizer | None = None
) -> DataJob:
    require(actor, version.dataset.project.team, Action.EDIT_DATA)
    if tokenizer is not None and tokenizer.project_id != version.dataset.project_id:
        raise ValidationError({"tokenizer": "The tokenizer belongs to another project."})
    params = _options(opts.ProfileParams, tokenizer=tokenizer.pk if tokenizer else None)
    return _launch(
        actor=actor, version=version, kind=DataJobKind.PROFILE, params=params.to_params()
    )


@transaction.atomic
def profile_queue(*, job: DataJob, version: DatasetVersion) -> DataJob:
    """Queue the profile of a version a data job has just made (system write, no audit: the
    version's creation is recorded)."""
    profile = _create(
        DataJob(
            kind=DataJobKind.PROFILE,
            project=job.project,
            dataset=job.dataset,
            source_version=version,
            created_by=job.created_by,
            params=opts.ProfileParams().to_params(),
        )
    )
    enqueue_job(profile)
    return profile


def validate_steps(steps: Any) -> list[dict]:
    """A recipe's steps, normalized (defaults filled in), or a ValidationError on ``steps``."""
    return _options(opts.CleanParams, steps=steps).steps


@requires_broker
@transaction.atomic
def clean_launch(
    *,
    actor,
    version: DatasetVersion,
    recipe: CleaningRecipe | None = None,
    steps: list[dict] | None = None,
    text_columns: list[str] | None = None,
    num_proc: int = 1,
) -> DataJob:
    """Run a saved recipe (or ad-hoc ``steps``) on ``version``; the job writes a new version."""
    require(actor, version.dataset.project.team, Action.EDIT_DATA)
    if (recipe is None) == (steps is None):
        raise ValidationError("Give either a saved recipe or a list of steps.")
    if recipe is not None and recipe.project_id != version.dataset.project_id:
        raise ValidationError({"recipe": "The recipe belongs to another project."})
    params = _options(
        opts.CleanParams,
        steps=recipe.steps if recipe is not None else steps,
        text_columns=text_columns,
        num_proc=num_proc,
        recipe_name=recipe.name if recipe else None,
    )
    params.text_columns = _check_text_columns(version, params.text_columns)
    return _launch(
        actor=actor,
        version=version,
        kind=DataJobKind.CLEAN,
        recipe=recipe,
        params=params.to_params(),
    )


@requires_broker
@transaction.atomic
def split_launch(
    *,
    actor,
    version: DatasetVersion,
    ratios: dict[str, float] | None = None,
    seed: int = 42,
    stratify_column: str | None = None,
    by_column: str | None = None,
    strategy: str = "random",
) -> DataJob:
    require(actor, version.dataset.project.team, Action.EDIT_DATA)
    params = _options(
        opts.SplitParams,
        ratios=ratios,
        seed=seed,
        stratify_column=stratify_column,
        by_column=by_column,
        strategy=strategy,
    )
    try:
        params.check_columns(version.columns)
    except opts.OptionError as exc:
        raise ValidationError({exc.field: str(exc)}) from None
    return _launch(actor=actor, version=version, kind=DataJobKind.SPLIT, params=params.to_params())


def _tokenizer_name_taken(project: Project, name: str) -> str | None:
    """Why ``name`` cannot be used for a new tokenizer of ``project`` (None if it can): a
    tokenizer has it, or a queued or running tokenizer job will give it."""
    from llmhub.models import JobStatus

    if Tokenizer.objects.filter(project=project, name=name).exists():
        return f"A tokenizer named '{name}' already exists in this project."
    training = DataJob.objects.filter(
        project=project,
        kind=DataJobKind.TOKENIZER,
        status__in=[JobStatus.QUEUED, JobStatus.RUNNING],
    ).only("params")
    if any((job.params or {}).get("name") == name for job in training):
        return f"A tokenizer named '{name}' is being trained in this project: choose another name."
    return None


@requires_broker
@transaction.atomic
def tokenizer_launch(
    *,
    actor,
    version: DatasetVersion,
    name: str,
    algorithm: str = "bpe",
    vocab_size: int = 8000,
    min_frequency: int = 2,
    special_tokens: list[str] | None = None,
    lowercase: bool = False,
    text_columns: list[str] | None = None,
) -> DataJob:
    """Train a tokenizer on ``version``. Its name must be free: no tokenizer of the project
    has it and no queued or running tokenizer job will give it (two jobs with one name would
    leave the second to fail at the end, its work lost)."""
    require(actor, version.dataset.project.team, Action.EDIT_DATA)
    project = version.dataset.project
    # No name given: named after the version and the algorithm (as the form proposes).
    name = (name or "").strip() or f"{version.dataset.name}-v{version.number}-{algorithm}"
    params = _options(
        opts.TokenizerParams,
        name=name,
        algorithm=algorithm,
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=special_tokens,
        lowercase=lowercase,
        text_columns=text_columns,
    )
    # Lock the project row: two requests naming the same tokenizer queue one job, not two.
    Project.objects.select_for_update().filter(pk=project.pk).first()
    if reason := _tokenizer_name_taken(project, params.name):
        raise ValidationError({"name": reason})
    params.text_columns = _check_text_columns(version, params.text_columns)
    return _launch(
        actor=actor, version=version, kind=DataJobKind.TOKENIZER, params=params.to_params()
    )


def tokenizer_register(*, job: DataJob, local_dir: Path, result: dict, stats: dict) -> Tokenizer:
    """Store a trained tokenizer directory, then create its row in a short transaction
    (system write by the job); the stored files are deleted again if the row cannot be made.
    A name taken meanwhile fails the job with that reason, not an IntegrityError."""
    from llmhub.reporting import JobInputError

    prefix = storage.unique_prefix("tokenizers", job.project_id, job.pk)
    files = storage.store_directory(local_dir, prefix=prefix)  # slow: before the transaction
    try:
        with transaction.atomic():
            tokenizer = _create(
                Tokenizer(
                    project=job.project,
                    name=job.params["name"],
                    algorithm=result["algorithm"],
                    vocab_size=result["vocab_size"],
                    special_tokens=result.get("special_tokens", []),
                    source_version=job.source_version,
                    files_prefix=prefix,
                    files=files,
                    stats=stats,
                    created_by=job.created_by,
                )
            )
            record_event(
                actor=job.created_by,
                team=job.project.team,
                project=job.project,
                verb="tokenizer.created",
                target=tokenizer,
            )
    except BaseException as exc:
        for relative in files:
            storage.delete_quietly(f"{prefix}/{relative}")
        if (
            isinstance(exc, ValidationError | IntegrityError)
            and Tokenizer.objects.filter(project=job.project, name=job.params["name"]).exists()
        ):
            raise JobInputError(
                f"A tokenizer named '{job.params['name']}' was created while this job ran: "
                "train it again under another name."
            ) from None
        raise
    return tokenizer


# --- recipes ----------------------------------------------------------------------------------


@transaction.atomic
def recipe_create(
    *, actor, project: Project, name: str, steps: list[dict], description: str = ""
) -> CleaningRecipe:
    require(actor, project.team, Action.EDIT_DATA)
    name = _require_free_name(CleaningRecipe, project, name, what="recipe")
    recipe = CleaningRecipe(
        project=project,
        name=name,
        description=description,
        steps=validate_steps(steps),
        created_by=actor,
    )
    recipe.full_clean()
    recipe.save()
    record_event(
        actor=actor, team=project.team, project=project, verb="recipe.created", target=recipe
    )
    return recipe


@transaction.atomic
def recipe_update(*, actor, recipe: CleaningRecipe, **updates: Any) -> CleaningRecipe:
    require(actor, recipe.project.team, Action.EDIT_DATA)
    if "steps" in updates:
        updates["steps"] = validate_steps(updates["steps"])
    if "name" in updates:
        updates["name"] = _require_free_name(
            CleaningRecipe, recipe.project, updates["name"], what="recipe", exclude_pk=recipe.pk
        )
    changes = update_instance(
        recipe, updates, editable={"name", "description", "steps"}, touch="updated_at"
    )
    record_event(
        actor=actor,
        verb="recipe.updated",
        target=recipe,
        changes={k: "changed" for k in changes},
    )
    return recipe


@transaction.atomic
def recipe_delete(*, actor, recipe: CleaningRecipe) -> None:
    require(actor, recipe.project.team, Action.EDIT_DATA)
    record_event(
        actor=actor,
        team=recipe.project.team,
        project=recipe.project,
        verb="recipe.deleted",
        target=recipe,
    )
    recipe.delete()


def parse_json_field(value: Any, *, field: str) -> Any:
    """Form and multipart fields carry JSON as text; accept both text and parsed values."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValidationError(
                {field: f"Not valid JSON: {exc.msg} at position {exc.pos}."}
            ) from exc
    return value
