"""Dataset versions made from an in-memory pyarrow table through the real service that workers
use to register a finished table (``version_register``), for tests of the readers of versions."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from datasets_app import services
from datasets_app.models import Dataset, DatasetVersion


def _first_text(table: pa.Table) -> str:
    # DatasetVersion needs some roles; the first text column is what upload would infer.
    return next(f.name for f in table.schema if pa.types.is_string(f.type))


def make_version(
    world,
    table: pa.Table,
    *,
    dataset: Dataset | None = None,
    name: str = "reviews",
    parent: DatasetVersion | None = None,
    row_group_size: int | None = None,
    column_roles: dict | None = None,
) -> DatasetVersion:
    """A new version of ``dataset`` (made in ``world.project`` when None) holding ``table``."""
    engineer = world.users["engineer"]
    if dataset is None:
        dataset = services.dataset_create(actor=engineer, project=world.project, name=name)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "table.parquet"
        pq.write_table(table, path, row_group_size=row_group_size)
        data = path.read_bytes()
        return services.version_register(
            dataset=dataset,
            local_path=path,
            sha256=hashlib.sha256(data).hexdigest(),
            row_count=table.num_rows,
            size_bytes=len(data),
            schema=[{"name": f.name, "type": str(f.type)} for f in table.schema],
            column_roles=column_roles or {"text": _first_text(table)},
            recipe={"kind": "upload", "filename": "table.parquet"},
            parent=parent,
            actor=engineer,
        )
