"""What `tailor export` and `tailor profile` share: the model source, subnet specs, data (progress: `tailor.progress`).

Kept in `tailor.export` because `tailor.cost` builds on export (never the reverse). Every bad argument
raises a `TailorError` naming it, which the CLI prints as one line with exit status 2.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from tailor.checks import non_negative_int
from tailor.data import list_datasets, load_dataset
from tailor.errors import DataError, InvalidSubnetError, ProfileError
from tailor.models import create_model, list_models
from tailor.ops import ElasticModel
from tailor.progress import Progress
from tailor.space import SearchSpace, Subnet
from tailor.space import parse_subnets as parse_space_subnets
from tailor.train import calibrate, check_data_fits, load_checkpoint
from tailor.train.checkpoint import recorded_data
from tailor.train.trainer import BatchSource


@dataclass
class DataRef:
    """A data set by name, root and per-split loader arguments (as a training recipe records it)."""

    name: str
    root: str | None
    train_kwargs: dict[str, Any]
    test_kwargs: dict[str, Any]
    _loaded: dict[str, Dataset] = field(default_factory=dict, repr=False)

    def load(self, split: str) -> Dataset:
        """The split ("train" or "test"), loaded once."""
        if split not in self._loaded:
            kwargs = self.train_kwargs if split == "train" else self.test_kwargs
            self._loaded[split] = load_dataset(self.name, split, self.root, **kwargs)
        return self._loaded[split]


@dataclass
class Source:
    """The model to profile or export: from a checkpoint directory or built from the registry."""

    model: ElasticModel
    name: str
    from_checkpoint: bool
    recipe_data: DataRef | None


def load_source(source: str, num_classes: int | None = None, in_chans: int | None = None) -> Source:
    """A checkpoint directory (`tailor train` / `tailor.save`) or a registered model name (random weights)."""
    path = Path(source)
    if path.is_dir():
        if num_classes is not None:
            raise ProfileError("--num-classes applies to registry models; a checkpoint knows its classes")
        loaded = load_checkpoint(path)
        data = recorded_data(loaded.config, f"checkpoint {str(path)!r}")
        ref = DataRef(data.name, data.root or None, dict(data.train), dict(data.test)) if data.name else None
        arch = getattr(loaded.model, "architecture", None)
        name = (arch.get("name") if isinstance(arch, dict) else None) or type(loaded.model).__name__
        return Source(loaded.model.eval(), str(name), True, ref)
    if source in list_models():
        kwargs: dict[str, Any] = {"num_classes": num_classes or 10}
        if in_chans is not None:
            kwargs["in_chans"] = in_chans
        return Source(create_model(source, **kwargs).eval(), source, False, None)
    if path.exists():
        raise ProfileError(f"{source!r} is not a checkpoint directory")
    raise ProfileError(
        f"{source!r} is neither a checkpoint directory nor a registered model (registered: {', '.join(list_models())})"
    )


def resolve(
    source: str, data: str | None, data_root: str | None, num_classes: int | None = None
) -> tuple[Source, DataRef | None]:
    """The model and the data set to use with it: `--data` if given, else what the checkpoint was trained on.

    A registry model built for `--data` takes the data's channels and classes (unless `--num-classes`).
    """
    if Path(source).is_dir() or source not in list_models():
        loaded = load_source(source, num_classes)
        ref = data_ref(data, data_root, loaded.recipe_data)
        if data is not None and ref is not None:  # another data set than the recorded one must fit the model
            trained_on = loaded.recipe_data.name if loaded.recipe_data is not None else None
            check_data_fits(loaded.model, ref.load("test"), f"--data {data}", trained_on)
        return loaded, ref
    ref = data_ref(data, data_root, None)
    if ref is None:
        return load_source(source, num_classes), None
    sample = ref.load("test")
    in_chans = int(input_shape(None, sample, None)[0])
    classes = num_classes if num_classes is not None else int(getattr(sample, "num_classes", 10))
    return load_source(source, classes, in_chans), ref


def data_ref(name: str | None, root: str | None, source_data: DataRef | None) -> DataRef | None:
    """`--data`/`--data-root` if given (with the recipe's split arguments when it names the same data), else the recipe's."""
    if name is None:
        if root is not None:
            raise DataError("--data-root needs --data")
        return source_data
    if name not in list_datasets():
        raise DataError(f"unknown data set {name!r}; expected one of {list_datasets()}")
    if source_data is not None and source_data.name == name:
        return DataRef(name, root or source_data.root, source_data.train_kwargs, source_data.test_kwargs)
    return DataRef(name, root, {}, {})


def parse_ints(text: str, what: str) -> list[int]:
    """'1,8,32' -> [1, 8, 32]; every value a positive integer, no repeats."""
    values = []
    for part in str(text).split(","):
        part = part.strip()
        if not part.lstrip("-").isdigit():
            raise ProfileError(f"{what}: {part!r} is not an integer (expected e.g. 1,8,32)")
        value = int(part)
        if value <= 0:
            raise ProfileError(f"{what} must be positive integers, got {value}")
        values.append(value)
    if len(set(values)) != len(values):
        raise ProfileError(f"{what} must not repeat, got {values}")
    return values


def parse_subnets(space: SearchSpace, spec: str, what: str = "--subnet") -> list[tuple[str | None, Subnet]]:
    """Subnets named by `spec` in tailor's one notation (`tailor.space.parse_subnets`), in canonical form;
    (the id a file gave it or None, subnet)."""
    return [(n.name if n.name != n.subnet.id else None, n.subnet) for n in parse_space_subnets(spec, space, what=what)]


def random_subnets(space: SearchSpace, count: int, seed: int) -> list[Subnet]:
    """`count` subnets drawn with `space.sample` from a `random.Random(seed)`."""
    non_negative_int("--random", count, InvalidSubnetError)
    rng = random.Random(seed)
    return [space.sample(rng) for _ in range(count)]


def unique(subs: Sequence[tuple[str | None, Subnet]]) -> tuple[list[tuple[str | None, Subnet]], int]:
    """First occurrence of each subnet, in order, and how many repeats were dropped."""
    seen: set[Subnet] = set()
    out = []
    for ident, sub in subs:
        if sub not in seen:
            seen.add(sub)
            out.append((ident, sub))
    return out, len(subs) - len(out)


def parse_shape(text: str | None) -> tuple[int, ...] | None:
    """'3,32,32' -> (3, 32, 32), or None."""
    return None if text is None else tuple(parse_ints(text.replace("x", ","), "--input-shape")) or None


def input_shape(explicit: tuple[int, ...] | None, data: Dataset | None, model: ElasticModel | None) -> tuple[int, ...]:
    """--input-shape, else the data set's image size (what the model was trained on), else the model's default."""
    if explicit is not None:
        return explicit
    if data is not None:
        size = getattr(data, "input_size", None)
        return tuple(size) if size is not None else tuple(data[0][0].shape)
    if model is None:
        raise ProfileError("no input shape: pass --input-shape C,H,W")
    return tuple(model.default_input_size)


def calibration_batches(train: Dataset, batch_size: int, batches: int, seed: int = 0) -> list[torch.Tensor]:
    """The first `batches` shuffled, normalised, un-augmented training batches (inputs only)."""
    if batch_size < 1 or batches < 1:
        raise DataError(f"calibration needs --batch-size and --calib-batches >= 1, got {batch_size} and {batches}")
    source = BatchSource(train, min(batch_size, len(train)), seed)
    return [x for _, (x, _y) in zip(range(batches), source.batches(0))]


def held_out_batches(test: Dataset, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every test sample, in order, as normalised (x, y) batches."""
    return list(BatchSource(test, batch_size, 0, drop_last=False).batches(None))


def calibrate_subnets(
    model: ElasticModel, subs: Sequence[Subnet], batches: list[torch.Tensor], progress: Progress | None = None
) -> None:
    """SubnetNorm statistics of each subnet from the cached batches (exact, so accuracies are the subnets' own)."""
    for index, sub in enumerate(subs, start=1):
        calibrate(model, [sub], batches, batches=len(batches))
        if progress is not None:
            progress(index, len(subs))
