"""Checks of a model directory's files without loading a framework: the safetensors header
(8 bytes of length, then JSON of tensor names -> dtype, shape, offsets) gives the parameter
count, and pickled weights (which run code when loaded) are refused.

Plain Python, no Django and no torch: the web process checks uploads with it.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

from llmhub.reporting import JobInputError

# Weight formats that unpickle when loaded, i.e. may run arbitrary code.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
# Bytes per element of each safetensors dtype.
DTYPE_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}
# A header past this is not a model's (the largest real ones are a few MB).
MAX_HEADER_BYTES = 100 * 1024 * 1024


def read_safetensors_header(path: Path) -> dict[str, dict]:
    """The tensors of a safetensors file, ``{name: {"dtype", "shape", "data_offsets"}}``,
    checked against the file's size; a JobInputError saying what is wrong otherwise."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise JobInputError(f"{path.name} is not a safetensors file: it is too short.")
        (length,) = struct.unpack("<Q", head)
        if length > min(MAX_HEADER_BYTES, size - 8):
            raise JobInputError(
                f"{path.name} is not a safetensors file: its header length is impossible."
            )
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise JobInputError(
                f"{path.name}: its safetensors header is not JSON ({exc})."
            ) from exc
    if not isinstance(header, dict):
        raise JobInputError(f"{path.name}: its safetensors header is not an object.")
    header.pop("__metadata__", None)
    data_size = size - 8 - length
    tensors: dict[str, dict] = {}
    for name, info in header.items():
        shape = info.get("shape") if isinstance(info, dict) else None
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        dtype = info.get("dtype") if isinstance(info, dict) else None
        if (
            dtype not in DTYPE_BYTES
            or not isinstance(shape, list)
            or not all(isinstance(d, int) and d >= 0 for d in shape)
            or not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) for o in offsets)
        ):
            raise JobInputError(f"{path.name}: tensor {name!r} is not described correctly.")
        begin, end = offsets
        if (
            not 0 <= begin <= end <= data_size
            or end - begin != math.prod(shape) * DTYPE_BYTES[dtype]
        ):
            raise JobInputError(
                f"{path.name}: tensor {name!r} does not fit the file (truncated or corrupt)."
            )
        tensors[name] = info
    if not tensors:
        raise JobInputError(f"{path.name} holds no tensors.")
    return tensors


def count_parameters(model_dir: Path) -> int:
    """Parameters in the safetensors files at the top of ``model_dir`` (every shard)."""
    return sum(
        math.prod(info["shape"])
        for path in sorted(Path(model_dir).glob("*.safetensors"))
        for info in read_safetensors_header(path).values()
    )


def check_model_dir(model_dir: Path) -> dict:
    """Check a model directory: a readable config.json, at least one safetensors file at its
    top (every safetensors file valid), nothing pickled. Returns its config."""
    model_dir = Path(model_dir)
    files = [p for p in model_dir.rglob("*") if p.is_file()]
    pickled = sorted(
        p.relative_to(model_dir).as_posix() for p in files if p.suffix.lower() in PICKLE_SUFFIXES
    )
    if pickled:
        raise JobInputError(
            f"Pickled weights are refused ({', '.join(pickled[:5])}): loading them can run any "
            "code. Convert them to safetensors (model.save_pretrained(dir, "
            "safe_serialization=True)) and upload those."
        )
    config_file = model_dir / "config.json"
    if not config_file.is_file():
        raise JobInputError(
            "The model has no config.json at its top: upload the directory save_pretrained "
            "wrote (config.json, *.safetensors, tokenizer files)."
        )
    try:
        config = json.loads(config_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise JobInputError(f"config.json cannot be read: {exc}") from exc
    if not isinstance(config, dict):
        raise JobInputError("config.json is not a JSON object.")
    if not list(model_dir.glob("*.safetensors")):
        raise JobInputError(
            "The model has no .safetensors weights next to its config.json; save them with "
            "save_pretrained(dir, safe_serialization=True)."
        )
    for path in files:
        if path.suffix == ".safetensors":
            read_safetensors_header(path)
    return config
