"""Checkpoints: tensors in safetensors, everything else in JSON, written atomically, never unpickled.

A checkpoint is a directory:

- `model.safetensors`: the model's `state_dict()` (weights, shared running statistics and every
  subnet's SubnetNorm statistics);
- `tailor.json`: schema tag, how to rebuild the model (registry name and arguments), its search
  space, the calibrated subnets, and the size and SHA-256 of every tensor file;
- optionally `optimizer.safetensors` + `train_state.json` (optimizer tensors; epoch, step, recipe,
  metrics) so that training can resume.

`save` writes into a temporary sibling directory and renames it into place, so a process killed
while saving leaves the previous checkpoint (or none), never a mixture. `load` checks the schema,
sizes and hashes before reading a tensor: a truncated, edited or foreign file raises
`CheckpointError` naming the file and the problem.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from tailor.errors import CheckpointError, TailorError
from tailor.models import create_model
from tailor.ops import ElasticModel
from tailor.space import SearchSpace
from tailor.validation import validate

CHECKPOINT_SCHEMA = "tailor.checkpoint/1"
CONFIG_FILE = "tailor.json"
WEIGHTS_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
TRAIN_STATE_FILE = "train_state.json"

_Str = Annotated[str, Field(strict=True)]
_Int = Annotated[int, Field(strict=True)]


class _FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    bytes: Annotated[int, Field(strict=True, ge=0)]
    sha256: Annotated[str, Field(strict=True, pattern=r"^[0-9a-f]{64}$")]


class _Architecture(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, Field(strict=True, min_length=1)]
    kwargs: dict[str, Any] = {}


class _ModelRecord(BaseModel):
    model_config = ConfigDict(extra="allow")
    architecture: _Architecture | None = None
    default_input_size: list[_Int] | None = None


class CheckpointSchema(BaseModel):
    """`tailor.json`: how to rebuild the model, its space, the calibrated subnets, the files and their hashes."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    schema_: Annotated[Literal["tailor.checkpoint/1"], Field(alias="schema")]
    model: _ModelRecord
    space: dict[str, Any]
    calibrated_subnets: list[_Str] = []
    files: dict[str, _FileEntry]
    metadata: dict[str, Any] = {}


class RecordedData(BaseModel):
    """The data set a checkpoint records (`metadata.recipe.data`, written by `tailor train`)."""

    model_config = ConfigDict(extra="allow")
    name: _Str | None = None
    root: _Str | None = None
    train: dict[str, Any] = {}
    test: dict[str, Any] = {}


def recorded_data(config: Mapping[str, Any], where: str = "checkpoint") -> RecordedData:
    """The data set recorded in a checkpoint's `tailor.json` (all fields empty when it records none), type-checked."""
    metadata = config.get("metadata") or {}
    recipe = metadata.get("recipe") if isinstance(metadata, Mapping) else None
    data = recipe.get("data") if isinstance(recipe, Mapping) else None
    if data is None:
        return RecordedData()
    return validate(RecordedData, data, CheckpointError, f"{where}: metadata.recipe.data")


@dataclass
class Checkpoint:
    """What `load_checkpoint` read: the model plus the training state, if the checkpoint has one."""

    model: ElasticModel
    config: dict[str, Any]
    train_state: dict[str, Any] | None = None
    optimizer_state: dict[str, Any] | None = None
    path: Path = field(default_factory=Path)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_write(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _plain_tensors(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous, no two entries sharing memory (safetensors refuses shared storage)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in tensors.items():
        value = tensor.detach().to("cpu").contiguous()
        pointer = value.untyped_storage().data_ptr() if value.numel() else -1
        if pointer in seen:
            value = value.clone()
        elif pointer != -1:
            seen.add(pointer)
        out[name] = value
    return out


def _flatten_optimizer(state: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split `optimizer.state_dict()` into tensors (for safetensors) and JSON (everything else)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{param_id}.{key}"] = value
            else:
                scalars.setdefault(str(param_id), {})[key] = value
    return tensors, {"scalars": scalars, "param_groups": state["param_groups"]}


def _unflatten_optimizer(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, param_id, key = name.split(".", 2)
        state.setdefault(int(param_id), {})[key] = value
    for param_id, entries in meta["scalars"].items():
        state.setdefault(int(param_id), {}).update(entries)
    return {"state": state, "param_groups": meta["param_groups"]}


def save(
    model: ElasticModel,
    path: str | os.PathLike[str],
    *,
    optimizer: torch.optim.Optimizer | Mapping[str, Any] | None = None,
    train_state: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write `model` (and optionally an optimizer or its state dict, and JSON training state) to `path`, atomically.

    The directory is replaced as a whole: it is built next to `path` and renamed into place.
    """
    if not isinstance(model, ElasticModel):
        raise CheckpointError(f"save: expected an ElasticModel, got {type(model).__name__}")
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise CheckpointError(f"save: {str(target)!r} exists and is not a directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        files: dict[str, dict[str, Any]] = {}
        weights = tmp / WEIGHTS_FILE
        save_file(_plain_tensors(model.state_dict()), str(weights))
        files[WEIGHTS_FILE] = {}
        if optimizer is not None:
            state_dict = optimizer.state_dict() if isinstance(optimizer, torch.optim.Optimizer) else optimizer
            tensors, meta = _flatten_optimizer(state_dict)
            save_file(_plain_tensors(tensors), str(tmp / OPTIMIZER_FILE))
            files[OPTIMIZER_FILE] = {}
            state = dict(train_state or {})
            state["optimizer"] = meta
            train_state = state
        if train_state is not None:
            _fsync_write(tmp / TRAIN_STATE_FILE, json.dumps(train_state, indent=1, sort_keys=True))
            files[TRAIN_STATE_FILE] = {}
        umask = os.umask(0)
        os.umask(umask)
        for name in files:
            os.chmod(tmp / name, 0o666 & ~umask)  # safetensors creates files private to the owner
            files[name] = {"bytes": (tmp / name).stat().st_size, "sha256": _sha256(tmp / name)}
        config = {
            "schema": CHECKPOINT_SCHEMA,
            "tailor_version": _version(),
            "torch_version": torch.__version__,
            "created_unix": time.time(),
            "model": {
                "class": f"{type(model).__module__}.{type(model).__qualname__}",
                "architecture": model.architecture,
                "default_input_size": list(model.default_input_size),
            },
            "space": model.space.to_dict(),
            "calibrated_subnets": sorted(model.calibrated_subnet_keys()),
            "files": files,
            "metadata": dict(metadata or {}),
        }
        try:
            text = json.dumps(config, indent=1, sort_keys=True)
        except TypeError as exc:
            raise CheckpointError(f"save: model architecture or metadata is not JSON-serialisable: {exc}") from None
        _fsync_write(tmp / CONFIG_FILE, text)
        _swap_into_place(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tailor")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def _swap_into_place(tmp: Path, target: Path) -> None:
    """Rename `tmp` to `target`; an existing `target` is moved aside first and deleted afterwards."""
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    directory = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def read_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The checkpoint's `tailor.json`, validated (schema, listed files present with the right size and hash)."""
    root = Path(path)
    if not root.is_dir():
        leftovers = sorted(root.parent.glob(f".{root.name}.old-*")) if root.parent.is_dir() else []
        hint = f"; an interrupted save left {str(leftovers[0])!r}" if leftovers else ""
        raise CheckpointError(f"checkpoint {str(root)!r} is not a directory{hint}")
    config_path = root / CONFIG_FILE
    if not config_path.is_file():
        raise CheckpointError(f"checkpoint {str(root)!r} has no {CONFIG_FILE}: not a tailor checkpoint")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{str(config_path)!r} is not valid JSON: {exc}") from None
    if not isinstance(config, dict) or config.get("schema") != CHECKPOINT_SCHEMA:
        found = config.get("schema") if isinstance(config, dict) else type(config).__name__
        raise CheckpointError(f"{str(config_path)!r}: schema is {found!r}, expected {CHECKPOINT_SCHEMA!r}")
    validate(CheckpointSchema, config, CheckpointError, repr(str(config_path)))
    files = config["files"]
    if WEIGHTS_FILE not in files:
        raise CheckpointError(f"{str(config_path)!r}: field 'files' must list {WEIGHTS_FILE}")
    for name, info in files.items():
        file = root / name
        if Path(name).name != name:
            raise CheckpointError(f"{str(config_path)!r}: file name {name!r} must not contain a path")
        if not file.is_file():
            raise CheckpointError(f"checkpoint {str(root)!r}: file {name!r} is missing")
        size = file.stat().st_size
        if size != info.get("bytes"):
            raise CheckpointError(
                f"checkpoint {str(root)!r}: {name!r} has {size} bytes, {CONFIG_FILE} says {info.get('bytes')!r} "
                "(truncated or replaced)"
            )
        if _sha256(file) != info.get("sha256"):
            raise CheckpointError(f"checkpoint {str(root)!r}: {name!r} does not match its SHA-256 in {CONFIG_FILE}")
    return config


def _read_tensors(file: Path, device: torch.device | str) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(file), device=str(device))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{str(file)!r} is not a readable safetensors file: {exc}") from None


def _build_model(config: Mapping[str, Any], root: Path) -> ElasticModel:
    architecture = config["model"].get("architecture")
    if not architecture:
        raise CheckpointError(
            f"checkpoint {str(root)!r} holds a model not built by create_model ({config['model'].get('class')}); "
            "pass an instance to load it into: tailor.load(path, model=...)"
        )
    try:
        return create_model(architecture["name"], **architecture.get("kwargs", {}))
    except (TailorError, TypeError, KeyError) as exc:
        raise CheckpointError(f"checkpoint {str(root)!r}: cannot rebuild model {architecture!r}: {exc}") from None


def load_checkpoint(
    path: str | os.PathLike[str], model: ElasticModel | None = None, map_location: torch.device | str = "cpu"
) -> Checkpoint:
    """Read a checkpoint: the model (rebuilt from the registry, or `model` filled in) and any training state."""
    root = Path(path)
    config = read_config(root)
    try:
        space = SearchSpace.from_dict(config["space"])
    except (TailorError, KeyError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {str(root)!r}: field 'space' is invalid: {exc}") from None
    if model is None:
        model = _build_model(config, root)
    if model.space != space:
        raise CheckpointError(f"checkpoint {str(root)!r}: its search space differs from the model's")
    tensors = _read_tensors(root / WEIGHTS_FILE, map_location)
    model.to(map_location)
    try:
        result = model.load_state_dict(tensors, strict=False)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {str(root)!r}: weights do not fit the model: {exc}") from None
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"checkpoint {str(root)!r}: weights do not fit the model "
            f"(missing: {result.missing_keys[:5]}, unexpected: {result.unexpected_keys[:5]})"
        )
    model.invalidate_plans()
    model.clear_cache()
    train_state = optimizer_state = None
    if TRAIN_STATE_FILE in config["files"]:
        try:
            train_state = json.loads((root / TRAIN_STATE_FILE).read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{str(root / TRAIN_STATE_FILE)!r} is not valid JSON: {exc}") from None
        if not isinstance(train_state, dict):
            raise CheckpointError(f"{str(root / TRAIN_STATE_FILE)!r}: expected a JSON object")
        if OPTIMIZER_FILE in config["files"]:
            meta = train_state.pop("optimizer", None)
            if not isinstance(meta, dict):
                raise CheckpointError(f"{str(root / TRAIN_STATE_FILE)!r}: field 'optimizer' is missing")
            optimizer_state = _unflatten_optimizer(_read_tensors(root / OPTIMIZER_FILE, map_location), meta)
    return Checkpoint(model, config, train_state, optimizer_state, root)


def load(
    path: str | os.PathLike[str], model: ElasticModel | None = None, map_location: torch.device | str = "cpu"
) -> ElasticModel:
    """The model stored at `path` (with its SubnetNorm statistics), in eval mode."""
    loaded = load_checkpoint(path, model, map_location).model
    return loaded.eval()
