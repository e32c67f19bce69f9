"""`Trainer`: one set of weights trained so that every subnet is good.

Each step runs the subnets a sampler picks (the sandwich rule by default: largest, smallest, two
random), accumulates their gradients and takes one optimizer step. The largest subnet learns from
the labels; the others also learn from its softened predictions (in-place distillation, US-Nets).
Everything random in a step (subnets, augmentation, dropout) is drawn from generators seeded by
(seed, epoch, step), and the data order by (seed, epoch): a run resumed from a checkpoint taken
mid-epoch replays exactly what the uninterrupted run would have done.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import random
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import ConfigDict, Field, ValidationError, model_validator
from pydantic.dataclasses import dataclass as pydantic_dataclass
from torch.utils.data import DataLoader, Dataset

from tailor.errors import CheckpointError, InvalidSubnetError, RecipeError, SubnetNormFallbackWarning
from tailor.ops import ElasticModel
from tailor.progress import Progress
from tailor.space import Subnet
from tailor.train import distributed as distr
from tailor.train.calibrate import calibrate
from tailor.train.checkpoint import load_checkpoint, save
from tailor.train.samplers import SubnetSampler, make_sampler
from tailor.train.state import EpochRecord, TrainState, TrainStateSchema
from tailor.validation import reraise, validate

#: the samplers `TrainConfig.sampler` names (see `tailor.train.samplers`)
SAMPLERS = ("sandwich", "random_min_max", "uniform", "fixed")
#: samplers that train the largest subnet and teach the others: the default largest-only phase and student ramp
#: (a quarter of the epochs each) apply to these; `uniform` and `fixed` train their subnets from the first step
TEACHER_SAMPLERS = ("sandwich", "random_min_max")
#: the share of the epochs the default largest-only phase and student ramp take (benchmarks/supernet_vs_independent.py)
DEFAULT_PHASE_FRACTION = 0.25

#: Optimizers a `TrainConfig` can name.
OPTIMIZERS = ("sgd", "adamw")


# strict per field (not for the whole class, which would then refuse a table in place of a TrainConfig)
@pydantic_dataclass(config=ConfigDict(extra="forbid"))
class TrainConfig:
    """The training recipe (JSON/TOML-serialisable; stored in checkpoints), type- and range-checked on creation.

    Strict types: a boolean is `true`/`false` (not `"no"` or `0`), a number is not a string. A wrong key, type
    or range raises `tailor.RecipeError` naming the key. Each field's meaning is its `description` (and the
    table in `tailor/train/README.md`; `recipe.schema.json` publishes both).
    """

    epochs: Annotated[int, Field(strict=True, ge=1, description="passes over the training data")] = 10
    batch_size: Annotated[
        int, Field(strict=True, ge=1, description="global batch size, split evenly across distributed ranks")
    ] = 128
    lr: Annotated[
        float, Field(strict=True, gt=0, description="peak learning rate, reached after the warm-up")
    ] = 0.1
    optimizer: Annotated[
        Literal["sgd", "adamw"],
        Field(description="sgd (momentum, Nesterov) or adamw (betas 0.9/0.999; what transformers train with)"),
    ] = "sgd"
    momentum: Annotated[float, Field(strict=True, ge=0, lt=1, description="SGD momentum")] = 0.9
    nesterov: Annotated[bool, Field(strict=True, description="Nesterov momentum")] = True
    weight_decay: Annotated[
        float, Field(strict=True, ge=0, description="L2 penalty on weights (not on norms and biases)")
    ] = 5e-4
    warmup_epochs: Annotated[
        float, Field(strict=True, ge=0, description="epochs of linear learning-rate warm-up before the cosine decay")
    ] = 0.0
    largest_only_epochs: Annotated[
        float | None,
        Field(
            strict=True,
            ge=0,
            description="epochs at the start in which only the largest subnet trains (Once-for-All's first phase); "
            "null: a quarter of `epochs` with the sandwich and random_min_max samplers, 0 with the others. "
            "Several subnets' summed gradients from random weights can stay at chance",
        ),
    ] = None
    largest_only_final_epochs: Annotated[
        float, Field(strict=True, ge=0, description="epochs at the end in which only the largest subnet trains again")
    ] = 0.0
    label_smoothing: Annotated[
        float, Field(strict=True, ge=0, lt=1, description="label smoothing of the cross-entropy")
    ] = 0.1
    sampler: Annotated[
        Literal["sandwich", "random_min_max", "uniform", "fixed"],
        Field(description="which subnets train in a step: sandwich, random_min_max, uniform or fixed (a list)"),
    ] = "sandwich"
    num_random: Annotated[
        int, Field(strict=True, ge=0, description="random subnets per step besides the largest and smallest")
    ] = 2
    distill: Annotated[
        bool, Field(strict=True, description="students learn from the largest subnet's outputs (in-place distillation)")
    ] = True
    temperature: Annotated[float, Field(strict=True, gt=0, description="softmax temperature of the distillation")] = 1.0
    distill_weight: Annotated[
        float, Field(strict=True, ge=0, le=1, description="students' loss: w * KL(teacher) + (1 - w) * cross-entropy")
    ] = 1.0
    student_loss_weight: Annotated[
        float,
        Field(
            strict=True,
            gt=0,
            le=1,
            description="scale of every non-largest subnet's loss in a step (every subnet's without a teacher)",
        ),
    ] = 1.0
    student_ramp_epochs: Annotated[
        float | None,
        Field(
            strict=True,
            ge=0,
            description="after the largest-only phase, the students' loss weight rises linearly from ~0 over this "
            "many epochs; null: a quarter of `epochs` with the sandwich and random_min_max samplers, 0 with the others",
        ),
    ] = None
    project_conflicts: Annotated[
        bool, Field(strict=True, description="drop the students' gradient component against the largest's (NASViT)")
    ] = False
    augment: Annotated[bool, Field(strict=True, description="random crop and flip of training batches")] = True
    crop_padding: Annotated[int, Field(strict=True, ge=0, description="pixels of padding of the random crop")] = 4
    flip: Annotated[bool, Field(strict=True, description="random horizontal flip (off for digits)")] = True
    amp: Annotated[bool, Field(strict=True, description="bfloat16 autocast on CUDA (ignored on CPU)")] = True
    in_place_grad: Annotated[bool, Field(strict=True, description="add sliced gradients into .grad in place")] = True
    grad_clip: Annotated[
        float | None, Field(strict=True, gt=0, description="clip the gradient norm to this (null: no clipping)")
    ] = None
    seed: Annotated[int, Field(strict=True, description="seed of data order, subnets, augmentation and dropout")] = 0
    checkpoint_every: Annotated[
        int, Field(strict=True, ge=0, description="steps between mid-epoch checkpoints (0: end of epoch only)")
    ] = 0
    calib_batches: Annotated[
        int, Field(strict=True, ge=1, description="training batches for SubnetNorm calibration")
    ] = 8
    calib_augment: Annotated[
        bool,
        Field(
            strict=True,
            description="calibrate on training-augmented batches (seeded), the inputs the weights were fitted to",
        ),
    ] = False
    eval_batch_size: Annotated[int, Field(strict=True, ge=1, description="batch size of evaluation")] = 256

    @model_validator(mode="after")
    def _phases_fit(self) -> TrainConfig:
        for name in ("warmup_epochs", "largest_only_epochs", "student_ramp_epochs"):
            value = getattr(self, name)
            if value is not None and value > self.epochs:
                raise ValueError(f"{name}={value!r} is more than epochs={self.epochs}")
        if self.largest_only_final_epochs > self.epochs - self.effective_largest_only_epochs:
            raise ValueError(
                f"largest_only_final_epochs={self.largest_only_final_epochs!r} does not fit after "
                f"largest_only_epochs={self.effective_largest_only_epochs!r} in epochs={self.epochs}"
            )
        return self

    @property
    def effective_largest_only_epochs(self) -> float:
        """`largest_only_epochs`, or its default when null: a quarter of the epochs for teacher samplers, else 0."""
        return self._phase(self.largest_only_epochs)

    @property
    def effective_student_ramp_epochs(self) -> float:
        """`student_ramp_epochs`, or its default when null: a quarter of the epochs for teacher samplers, else 0."""
        return self._phase(self.student_ramp_epochs)

    def _phase(self, value: float | None) -> float:
        if value is not None:
            return float(value)
        return DEFAULT_PHASE_FRACTION * self.epochs if self.sampler in TEACHER_SAMPLERS else 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Build from a mapping; an unknown key, a wrong type or a value out of range raises `RecipeError`."""
        if not isinstance(data, Mapping):
            raise RecipeError(f"train config: expected a table, got {type(data).__name__}")
        return cls(**dict(data))


def _checked(method: Callable[..., None]) -> Callable[..., None]:
    """`method` (creation, assignment) with pydantic's `ValidationError` turned into a one-line `RecipeError`."""

    @functools.wraps(method)
    def checked(self: TrainConfig, *args: Any, **kwargs: Any) -> None:
        try:
            method(self, *args, **kwargs)
        except ValidationError as exc:
            raise reraise(exc, RecipeError, "train config", TrainConfig) from None

    return checked


def _checked_setattr(self: TrainConfig, name: str, value: Any) -> None:
    """Assigning a field checks the whole config with the new value first; a bad value changes nothing."""
    if name in self.__dict__ and name in TrainConfig.__pydantic_fields__:
        value = getattr(dataclasses.replace(self, **{name: value}), name)  # raises RecipeError naming the key
    object.__setattr__(self, name, value)


TrainConfig.__init__ = _checked(TrainConfig.__init__)  # type: ignore[method-assign]
TrainConfig.__setattr__ = _checked_setattr  # type: ignore[method-assign]


def _seed(*parts: object) -> int:
    """A 63-bit seed from any parts (stable across processes and Python versions)."""
    text = json.dumps([str(p) for p in parts])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def _normalise_inputs(dataset: Any, x: torch.Tensor) -> torch.Tensor:
    """A batch of stored images as the dataset's items would be: `dataset.normalize` if it has one.

    In-memory datasets without it (plain tensors) are taken as already prepared; uint8 is scaled to [0, 1].
    """
    normalize = getattr(dataset, "normalize", None)
    if normalize is not None:
        return normalize(x)
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x


class BatchSource:
    """Batches of a dataset in an order fixed by (seed, epoch); this rank's share of each global batch.

    In-memory datasets with `images`/`labels` tensors and no per-sample transform are batched by
    indexing (fast); anything else goes through a `DataLoader` over the same index lists.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        seed: int,
        ctx: distr.DistContext | None = None,
        num_workers: int = 0,
        drop_last: bool = True,
    ) -> None:
        n = len(dataset)  # type: ignore[arg-type]
        ctx = ctx or distr.DistContext()
        if batch_size % ctx.world_size:
            raise InvalidSubnetError(
                f"batch_size {batch_size} must be divisible by the number of processes {ctx.world_size}"
            )
        if n < batch_size and drop_last:
            raise InvalidSubnetError(f"the dataset has {n} samples, fewer than one batch of {batch_size}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self.ctx = ctx
        self.num_workers = num_workers
        self.drop_last = drop_last
        self.size = n
        images = getattr(dataset, "images", None)
        labels = getattr(dataset, "labels", None)
        self.fast = (
            isinstance(images, torch.Tensor)
            and isinstance(labels, torch.Tensor)
            and getattr(dataset, "transform", None) is None
        )

    def __len__(self) -> int:
        full, rest = divmod(self.size, self.batch_size)
        return full if self.drop_last or not rest else full + 1

    def _indices(self, epoch: int | None) -> torch.Tensor:
        if epoch is None:
            return torch.arange(self.size)
        generator = torch.Generator().manual_seed(_seed("data", self.seed, epoch))
        return torch.randperm(self.size, generator=generator)

    def batches(self, epoch: int | None, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches `start`, `start + 1`, ... of `epoch` (None: dataset order, for evaluation)."""
        order = self._indices(epoch)
        per_rank = self.batch_size // self.ctx.world_size
        chunks = []
        for b in range(start, len(self)):
            batch = order[b * self.batch_size : (b + 1) * self.batch_size]
            share = max(1, math.ceil(len(batch) / self.ctx.world_size)) if not self.drop_last else per_rank
            chunks.append(batch[self.ctx.rank * share : (self.ctx.rank + 1) * share])
        if self.fast:
            images, labels = self.dataset.images, self.dataset.labels  # type: ignore[attr-defined]
            for idx in chunks:
                yield _normalise_inputs(self.dataset, images[idx]), labels[idx]
            return
        loader = DataLoader(self.dataset, batch_sampler=[c.tolist() for c in chunks], num_workers=self.num_workers)
        for x, y in loader:
            yield x, torch.as_tensor(y)


def _lr_at(config: TrainConfig, step: int, total: int, steps_per_epoch: int) -> float:
    """Linear warm-up then cosine decay to zero, as a function of the global step (resume-safe)."""
    warmup = int(config.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * config.lr * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _augment(x: torch.Tensor, config: TrainConfig, generator: torch.Generator) -> torch.Tensor:
    from tailor.data.transforms import augment_batch

    return augment_batch(x, generator, crop_padding=config.crop_padding, flip=config.flip)


def calibration_inputs(
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]], count: int, config: TrainConfig | None = None
) -> list[torch.Tensor]:
    """The inputs of the first `count` batches, cached for calibration.

    With a `config` whose `calib_augment` and `augment` are set, each batch gets the training augmentation
    from a generator seeded by (config.seed, batch index), so the same checkpoint calibrates identically.
    """
    inputs: list[torch.Tensor] = []
    for index, (x, _y) in enumerate(batches):
        if index >= count:
            break
        if config is not None and config.calib_augment and config.augment:
            x = _augment(
                x, config, torch.Generator(device=x.device).manual_seed(_seed("calibrate", config.seed, index))
            )
        inputs.append(x)
    return inputs


def project_conflicting(
    total: Sequence[torch.Tensor | None], teacher: Sequence[torch.Tensor | None]
) -> tuple[float, bool]:
    """Remove from `total - teacher` (the students' gradient) its component against `teacher`, in place.

    `total` holds the summed gradients (teacher + students) and is updated; the result keeps the teacher's
    gradient whole and the students' part orthogonal to it when the two conflicted (PCGrad/NASViT, over
    all parameters as one vector). Returns (cosine of students vs teacher before, whether it projected).
    """
    dot = torch.zeros((), dtype=torch.float64)
    teacher_sq = torch.zeros((), dtype=torch.float64)
    student_sq = torch.zeros((), dtype=torch.float64)
    for g, t in zip(total, teacher):
        if g is None or t is None:
            continue
        student = (g - t).double()
        dot += (student * t.double()).sum()
        teacher_sq += t.double().square().sum()
        student_sq += student.square().sum()
    denominator = float((teacher_sq * student_sq).sqrt())
    cosine = float(dot) / denominator if denominator > 0 else 0.0
    if float(dot) >= 0 or float(teacher_sq) == 0:
        return cosine, False
    coefficient = float(dot / teacher_sq)
    for g, t in zip(total, teacher):
        if g is not None and t is not None:
            g.sub_(t, alpha=coefficient)
    return cosine, True


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) on temperature-softened distributions, scaled by T^2 (Hinton et al.)."""
    t = temperature
    log_student = F.log_softmax(student.float() / t, dim=1)
    log_teacher = F.log_softmax(teacher.float() / t, dim=1)
    return F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True) * (t * t)


@torch.no_grad()
def evaluate(
    model: ElasticModel,
    subs: Sequence[Subnet],
    data: Dataset | BatchSource,
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """Top-1 accuracy of each subnet on `data` (eval mode; subnets use their SubnetNorm statistics).

    Returns {subnet id: accuracy}; the model's mode and active subnet are restored.
    """
    source = data if isinstance(data, BatchSource) else BatchSource(data, batch_size, 0, drop_last=False)
    device = device or next(model.parameters()).device
    cached = [(x.to(device), y.to(device)) for x, y in source.batches(None)]
    was_training, previous = model.training, model.active_subnet
    results: dict[str, float] = {}
    try:
        with warnings.catch_warnings():  # the previous subnet may lack statistics; the evaluated ones warn below
            warnings.simplefilter("ignore", SubnetNormFallbackWarning)
            model.eval()
        for sub in subs:
            model.activate(sub)
            correct = total = 0
            for x, y in cached:
                correct += int((model(x).argmax(1) == y).sum())
                total += len(y)
            results[sub.id] = correct / max(1, total)
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SubnetNormFallbackWarning)
            model.train(was_training)
            model.activate(previous)
    return results


StepCallback = Callable[["Trainer", dict[str, Any]], None]
#: One subnet's losses on one batch, `loss(model, subnet, x, y) -> {name: (weight, loss)}`: it activates the subnet
#: in the mode it needs and runs it; the Trainer back-propagates the weighted sum and logs each loss by name.
SubnetLoss = Callable[[ElasticModel, Subnet, torch.Tensor, torch.Tensor], Mapping[str, tuple[float, torch.Tensor]]]
#: A batch augmentation, `augment(x, generator) -> x` (e.g. `tailor.data.BatchAugmentation`).
BatchAugment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


class Trainer:
    """Trains an `ElasticModel` supernet with a subnet sampler, in-place distillation and SubnetNorm calibration.

    `fit()` runs the remaining epochs; `checkpoint_dir` (if given) receives a checkpoint at the end of
    every epoch and every `config.checkpoint_every` steps, from which `resume=True` continues.

    The same loop trains other objectives over the same data, seeds, schedule, progress, logs and checkpoints
    (early-exit heads, `tailor.route.train_exits`): `loss` replaces the supernet loss (cross-entropy and in-place
    distillation) by a `SubnetLoss`, `optimizer` the config's SGD over every trainable parameter (its learning
    rate follows the config's schedule, peak `config.lr`), and `augment` the config's crop and flip (applied
    when `config.augment` is set).
    """

    def __init__(
        self,
        model: ElasticModel,
        train_data: Dataset,
        config: TrainConfig | None = None,
        *,
        eval_data: Dataset | None = None,
        eval_subnets: Sequence[Subnet] | None = None,
        subnets: Sequence[Subnet] | None = None,
        sampler: SubnetSampler | None = None,
        device: torch.device | str | None = None,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        resume: bool = False,
        log_path: str | os.PathLike[str] | None = None,
        progress: bool = False,
        callbacks: Sequence[StepCallback] = (),
        num_workers: int = 0,
        metadata: Mapping[str, Any] | None = None,
        loss: SubnetLoss | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        augment: BatchAugment | None = None,
    ) -> None:
        self.config = config or TrainConfig()
        self.loss = loss
        self.augment = augment or self._config_augment
        self.metadata = dict(metadata or {})
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.ctx = distr.init_from_env(self.device)
        if self.device.type == "cuda" and self.ctx.enabled:
            self.device = torch.device("cuda", self.ctx.local_rank)
        self.model = model.to(self.device)
        if sampler is None:
            if self.config.sampler == "fixed":
                if not subnets:
                    raise InvalidSubnetError("sampler 'fixed' needs the list of subnets to train")
                sampler = make_sampler(list(subnets))
            else:
                sampler = make_sampler(self.config.sampler, self.config.num_random)
        self.sampler = sampler
        self.train_source = BatchSource(train_data, self.config.batch_size, self.config.seed, self.ctx, num_workers)
        self.calib_source = BatchSource(
            train_data, min(self.config.batch_size, len(train_data)), self.config.seed, num_workers=num_workers
        )
        self.eval_data = eval_data
        space = model.space
        self.eval_subnets = list(eval_subnets) if eval_subnets is not None else [space.largest(), space.smallest()]
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.log_path = Path(log_path) if log_path is not None else None
        self.progress = progress and self.ctx.is_main
        self.callbacks = list(callbacks)
        self.optimizer = optimizer if optimizer is not None else self._make_optimizer()
        self.state = TrainState()
        self.model.set_in_place_grad(self.config.in_place_grad)
        if resume:
            if self.checkpoint_dir is None:
                raise CheckpointError("resume=True needs a checkpoint_dir")
            if self.checkpoint_dir.exists():
                self._restore(self.checkpoint_dir)
        distr.broadcast_model(self.model, self.ctx)

    # -- set-up ---------------------------------------------------------------------------------------
    def _make_optimizer(self) -> torch.optim.Optimizer:
        """SGD with momentum or AdamW; no weight decay on norms and biases (1-d parameters) nor on the
        parameters a model names in `no_weight_decay()` (a ViT's position embedding and class token)."""
        exempt = set(getattr(self.model, "no_weight_decay", lambda: ())())
        decay, no_decay = [], []
        for name, param in self.model.named_parameters():
            if param.requires_grad:
                (no_decay if param.ndim <= 1 or name in exempt else decay).append(param)
        groups = [
            {"params": decay, "weight_decay": self.config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        if self.config.optimizer == "adamw":
            return torch.optim.AdamW(groups, lr=self.config.lr)
        return torch.optim.SGD(groups, lr=self.config.lr, momentum=self.config.momentum, nesterov=self.config.nesterov)

    @property
    def steps_per_epoch(self) -> int:
        return len(self.train_source)

    @property
    def largest_only_steps(self) -> int:
        """Global steps at the start of training in which only the largest subnet is trained."""
        return int(self.config.effective_largest_only_epochs * self.steps_per_epoch)

    @property
    def largest_only_final_steps(self) -> int:
        """Global steps at the end of training in which only the largest subnet is trained."""
        return int(self.config.largest_only_final_epochs * self.steps_per_epoch)

    def largest_only_at(self, global_step: int) -> bool:
        """Whether step `global_step` trains the largest subnet alone (the opening or the closing phase)."""
        return global_step < self.largest_only_steps or global_step >= self.total_steps - self.largest_only_final_steps

    def student_weight_at(self, global_step: int) -> float:
        """Scale of the students' losses at `global_step`: `student_loss_weight`, ramped after the largest-only phase."""
        cfg = self.config
        ramp = int(cfg.effective_student_ramp_epochs * self.steps_per_epoch)
        into = global_step - self.largest_only_steps
        if ramp <= 0 or into >= ramp:
            return cfg.student_loss_weight
        return cfg.student_loss_weight * (max(0, into) + 1) / ramp

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.config.epochs

    def _restore(self, path: Path) -> None:
        loaded = load_checkpoint(path, self.model, map_location=self.device)
        state = loaded.train_state
        if state is None or loaded.optimizer_state is None:
            raise CheckpointError(f"checkpoint {str(path)!r} has no training state to resume from")
        parsed = validate(TrainStateSchema, state, CheckpointError, f"{str(path / 'train_state.json')!r}")
        saved = parsed.config
        for name in ("seed", "batch_size", "sampler", "num_random", "epochs"):
            if saved.get(name) != getattr(self.config, name):
                raise CheckpointError(
                    f"checkpoint {str(path)!r} was trained with {name}={saved.get(name)!r}, "
                    f"this run has {getattr(self.config, name)!r}; resume with the same recipe"
                )
        self.optimizer.load_state_dict(loaded.optimizer_state)
        self.state = TrainState(  # the loss sums are absent (empty) in checkpoints written before they were kept
            parsed.epoch,
            parsed.step_in_epoch,
            parsed.global_step,
            [EpochRecord.from_dict(h.model_dump()) for h in parsed.history],
            dict(parsed.epoch_loss_sums),
            parsed.epoch_loss_steps,
        )
        self.model.set_in_place_grad(self.config.in_place_grad)

    # -- one step -------------------------------------------------------------------------------------
    def _config_augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The config's augmentation: random crop (`crop_padding`) and horizontal flip (`flip`)."""
        return _augment(x, self.config, generator)

    def _autocast(self) -> Any:
        if self.config.amp and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def train_step(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        subs: Sequence[Subnet],
        teacher_first: bool,
        student_weight: float | None = None,
    ) -> dict[str, float]:
        """Forward/backward every subnet in `subs` on one batch, then one optimizer step. Returns losses.

        `student_weight` scales the non-teacher losses (default: the config's `student_loss_weight`). With a
        `loss`, each subnet's loss terms are its losses (by name, averaged over `subs`) and no one teaches.
        """
        if self.loss is not None:
            return self._loss_step(x, y, subs)
        cfg = self.config
        student_scale = cfg.student_loss_weight if student_weight is None else student_weight
        model = self.model
        model.train()
        self.optimizer.zero_grad(set_to_none=True)
        teacher: torch.Tensor | None = None
        teacher_grads: list[torch.Tensor | None] | None = None
        losses: dict[str, float] = {}
        for index, sub in enumerate(subs):
            model.activate(sub)
            with self._autocast():
                logits = model(x)
            ce = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
            if teacher is not None:
                kd = distillation_loss(logits, teacher, cfg.temperature)
                loss = cfg.distill_weight * kd + (1.0 - cfg.distill_weight) * ce
            else:
                loss = ce
            is_teacher = index == 0 and teacher_first
            if is_teacher and cfg.distill and len(subs) > 1:
                teacher = logits.detach()
            scale = 1.0 if is_teacher or len(subs) == 1 else student_scale
            (loss * scale).backward()
            if is_teacher and cfg.project_conflicts and len(subs) > 1:
                teacher_grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
            role = "largest" if is_teacher else f"subnet{index}"
            losses[role] = float(loss.detach())
        if teacher_grads is not None:
            cosine, _ = project_conflicting([p.grad for p in model.parameters()], teacher_grads)
            losses["student_teacher_cosine"] = cosine
        self._apply_gradients()
        return losses

    def _loss_step(self, x: torch.Tensor, y: torch.Tensor, subs: Sequence[Subnet]) -> dict[str, float]:
        """One step of the given `loss`: every subnet's weighted terms back-propagated, then one optimizer step."""
        assert self.loss is not None
        self.optimizer.zero_grad(set_to_none=True)
        losses: dict[str, float] = {}
        for sub in subs:
            terms = self.loss(self.model, sub, x, y)
            sum(weight * value for weight, value in terms.values()).backward()  # type: ignore[union-attr]
            for name, (_, value) in terms.items():
                losses[name] = losses.get(name, 0.0) + float(value.detach()) / len(subs)
        self._apply_gradients()
        return losses

    def _apply_gradients(self) -> None:
        """Average the accumulated gradients over ranks, clip them if the config says so, take the step."""
        distr.average_gradients(self.model, self.ctx)
        if self.config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()

    # -- the loop -------------------------------------------------------------------------------------
    def fit(self) -> list[EpochRecord]:
        """Train the remaining epochs; returns the history, one `EpochRecord` per epoch (losses, evaluation, time)."""
        cfg = self.config
        space = self.model.space
        try:
            while self.state.epoch < cfg.epochs:
                epoch = self.state.epoch
                progress = Progress(f"epoch {epoch + 1}/{cfg.epochs}", self.steps_per_epoch, self.progress, unit="step",
                                    initial=self.state.step_in_epoch)  # fmt: skip
                start = time.perf_counter()
                totals = self.state.epoch_loss_sums  # carried over from the checkpoint when resumed mid-epoch
                for x, y in self.train_source.batches(epoch, self.state.step_in_epoch):
                    step = self.state.step_in_epoch
                    step_seed = _seed("step", cfg.seed, epoch, step)
                    subs = self.sampler.sample(space, random.Random(step_seed))
                    if self.largest_only_at(self.state.global_step):
                        subs = [space.largest()]
                    torch.manual_seed(_seed("torch", cfg.seed, epoch, step, self.ctx.rank))
                    x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
                    if cfg.augment:
                        generator = torch.Generator(device=x.device).manual_seed(
                            _seed("augment", cfg.seed, epoch, step, self.ctx.rank)
                        )
                        x = self.augment(x, generator)
                    lr = _lr_at(cfg, self.state.global_step, self.total_steps, self.steps_per_epoch)
                    for group in self.optimizer.param_groups:
                        group["lr"] = lr
                    losses = self.train_step(
                        x, y, subs, self.sampler.largest_first, self.student_weight_at(self.state.global_step)
                    )
                    self.state.step_in_epoch += 1
                    self.state.global_step += 1
                    for key, value in losses.items():
                        totals[key] = totals.get(key, 0.0) + value
                    self.state.epoch_loss_steps += 1
                    record = {"event": "step", "epoch": epoch, "step": step, "global_step": self.state.global_step}
                    record.update(lr=lr, loss=losses, subnets=[s.id for s in subs])
                    self._log(record)
                    progress(step + 1, info=" ".join(f"{k}={v:.3f}" for k, v in losses.items()))
                    for callback in self.callbacks:
                        callback(self, record)
                    every = cfg.checkpoint_every
                    if (
                        every
                        and self.state.global_step % every == 0
                        and self.state.step_in_epoch < self.steps_per_epoch
                    ):
                        self.save_checkpoint()
                progress.close()
                distr.average_buffers(self.model, self.ctx)
                summary = EpochRecord(
                    epoch, {k: v / max(1, self.state.epoch_loss_steps) for k, v in totals.items()},
                    time.perf_counter() - start,
                )  # fmt: skip
                if self.eval_data is not None:
                    summary.accuracy = self.calibrate_and_evaluate(self.eval_subnets)
                self.state.history.append(summary)
                self._log(summary.to_dict())
                self.state.epoch += 1
                self.state.step_in_epoch = 0
                self.state.epoch_loss_sums, self.state.epoch_loss_steps = {}, 0
                self.save_checkpoint()
        finally:
            distr.barrier(self.ctx)
        return self.state.history

    def calibrate(self, subs: Sequence[Subnet]) -> list[str]:
        """SubnetNorm statistics for `subs` from the first `calib_batches` training batches (same on every rank).

        The batches are plain images, or augmented as in training when `config.calib_augment` is set.
        """
        inputs = calibration_inputs(self.calib_source.batches(None), self.config.calib_batches, self.config)
        return calibrate(self.model, subs, inputs, batches=len(inputs), device=self.device)

    def calibrate_and_evaluate(self, subs: Sequence[Subnet]) -> dict[str, float]:
        """Calibrate `subs`, then their accuracy on the evaluation data ({subnet id: accuracy})."""
        if self.eval_data is None:
            raise InvalidSubnetError("no eval_data was given to the Trainer")
        self.calibrate(subs)
        return evaluate(self.model, subs, self.eval_data, self.config.eval_batch_size, self.device)

    # -- persistence ----------------------------------------------------------------------------------
    def save_checkpoint(self, path: str | os.PathLike[str] | None = None) -> Path | None:
        """Write model, optimizer and training state (rank 0 only); returns the path written."""
        target = Path(path) if path is not None else self.checkpoint_dir
        written = None
        if target is not None and self.ctx.is_main:
            state = {
                "epoch": self.state.epoch,
                "step_in_epoch": self.state.step_in_epoch,
                "global_step": self.state.global_step,
                "history": [record.to_dict() for record in self.state.history],
                "epoch_loss_sums": self.state.epoch_loss_sums,
                "epoch_loss_steps": self.state.epoch_loss_steps,
                "config": self.config.to_dict(),
                "sampler": self.sampler.describe(),
                "world_size": self.ctx.world_size,
            }
            written = save(self.model, target, optimizer=self.optimizer, train_state=state, metadata=self.metadata)
        distr.barrier(self.ctx)
        return written

    def _log(self, record: Mapping[str, Any]) -> None:
        if self.log_path is None or not self.ctx.is_main:
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"time": time.time(), **record}) + "\n")
