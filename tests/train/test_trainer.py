"""The supernet trainer: learning, distillation, in-place gradients, schedule, logs, resume after a kill, DDP."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from tailor import CheckpointError, InvalidSubnetError, RecipeError, create_model
from tailor.data import load_dataset
from tailor.space import Subnet
from tailor.train import (
    BatchSource,
    EpochRecord,
    TrainConfig,
    Trainer,
    distillation_loss,
    evaluate,
    project_conflicting,
)
from tailor.train.calibrate import calibrate
from tailor.train.checkpoint import WEIGHTS_FILE
from tailor.train.trainer import _lr_at, calibration_inputs
from train_helpers import BlobImages, NormFreeNet, PerSampleImages, same_tensors

HERE = Path(__file__).parent
SCRIPT = HERE / "run_training.py"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_sandwich_training_learns_every_subnet() -> None:
    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=4, channels=(8, 16, 16))
    config = TrainConfig(epochs=3, batch_size=32, lr=0.05, augment=False, calib_batches=4)
    trainer = Trainer(model, BlobImages(512, seed=1), config, eval_data=BlobImages(128, seed=2), device="cpu")
    history = trainer.fit()
    assert len(history) == 3
    accuracy = history[-1].accuracy
    assert accuracy[model.space.largest().id] > 0.8
    assert accuracy[model.space.smallest().id] > 0.6
    assert history[-1].loss["largest"] < history[0].loss["largest"]


def test_the_history_is_typed_and_its_json_is_the_metrics_log_and_the_train_state(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=4, channels=(8, 8, 8))
    config = TrainConfig(epochs=2, batch_size=32, augment=False, calib_batches=1)
    log, ck = tmp_path / "log.jsonl", tmp_path / "ck"
    trainer = Trainer(model, BlobImages(64, seed=1), config, eval_data=BlobImages(32, seed=2), log_path=log,
                      checkpoint_dir=ck, device="cpu")  # fmt: skip
    history = trainer.fit()
    assert all(isinstance(h, EpochRecord) for h in history) and [h.epoch for h in history] == [0, 1]
    logged = [json.loads(line) for line in log.read_text().splitlines()]
    epochs = [{k: v for k, v in e.items() if k != "time"} for e in logged if e["event"] == "epoch"]
    assert [h.to_dict() for h in history] == epochs
    assert list(epochs[0]) == ["event", "epoch", "loss", "seconds", "accuracy"], "the log's key order is kept"
    assert json.loads((ck / "train_state.json").read_text())["history"] == epochs
    resumed = Trainer(model, BlobImages(64, seed=1), config, checkpoint_dir=ck, resume=True, device="cpu")
    assert resumed.state.history == history, "read back from train_state.json as records"
    assert EpochRecord.from_dict(epochs[1]) == history[1]
    with pytest.warns(DeprecationWarning, match=r"EpochRecord\['accuracy'\] is deprecated; read .accuracy"):
        assert history[1]["accuracy"] == history[1].accuracy
    no_eval = EpochRecord(3, {"largest": 1.5}, 2.0)
    assert no_eval.to_dict() == {"event": "epoch", "epoch": 3, "loss": {"largest": 1.5}, "seconds": 2.0}


def test_a_given_loss_optimizer_and_augmentation_train_in_the_same_loop(tmp_path: Path) -> None:
    def run() -> tuple[Trainer, list[EpochRecord], list[tuple[int, float]], dict[str, torch.Tensor]]:
        torch.manual_seed(0)
        model = create_model("small_cnn", num_classes=4, channels=(8, 8, 8))
        calls: list[tuple[int, float]] = []

        def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
            calls.append((len(x), float(torch.rand((), generator=generator))))  # a seeded draw per step
            return x.flip(3)

        def loss(net: Any, sub: Subnet, x: torch.Tensor, y: torch.Tensor) -> dict[str, tuple[float, torch.Tensor]]:
            net.train()
            net.activate(sub)
            logits = net(x)
            return {"ce": (0.5, F.cross_entropy(logits, y)), "margin": (0.0, logits.std())}

        fc = [model.fc.weight, model.fc.bias]
        config = TrainConfig(epochs=2, batch_size=16, lr=0.01, sampler="fixed", seed=5)
        space = model.space
        trainer = Trainer(model, BlobImages(64, seed=1), config, subnets=[space.smallest(), space.largest()],
                          device="cpu", log_path=tmp_path / "log.jsonl", loss=loss,
                          optimizer=torch.optim.Adam(fc, lr=config.lr), augment=augment)  # fmt: skip
        before = {k: v.clone() for k, v in model.state_dict().items()}
        history = trainer.fit()
        changed = {k: not torch.equal(v, before[k]) for k, v in model.state_dict().items()}
        return trainer, history, calls, changed

    trainer, history, calls, changed = run()
    assert [set(h.loss) for h in history] == [{"ce", "margin"}] * 2, "the loss's own names, each averaged"
    assert history[1].loss["ce"] < history[0].loss["ce"]
    assert changed["fc.weight"] and changed["fc.bias"], "the given optimizer steps its parameters"
    assert not any(changed[k] for k in changed if k.endswith("conv.weight")), "and only those"
    assert len(calls) == 8 and all(n == 16 for n, _ in calls), "the given augmentation sees every batch"
    assert isinstance(trainer.optimizer, torch.optim.Adam)
    last = trainer.total_steps - 1
    assert trainer.optimizer.param_groups[0]["lr"] == _lr_at(trainer.config, last, trainer.total_steps, 4)
    _, again, calls_again, _ = run()
    assert calls_again == calls and [h.loss for h in again] == [h.loss for h in history], "seeded like fit()"


def test_students_learn_from_the_teacher() -> None:
    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=4, channels=(8, 16, 16))
    trainer = Trainer(model, BlobImages(64, seed=1), TrainConfig(batch_size=32, augment=False), device="cpu")
    x, y = next(trainer.train_source.batches(0))
    space = model.space
    losses = trainer.train_step(x, y, [space.largest(), space.largest()], teacher_first=True)
    # the student is the same network, in train mode on the same batch: it matches its teacher exactly
    assert losses["subnet1"] == pytest.approx(0.0, abs=1e-6)
    assert losses["largest"] > 0.5


@pytest.mark.parametrize("weight", [0.25, 0.5])
def test_student_loss_weight_scales_only_the_students_gradients(weight: float) -> None:
    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=4, channels=(8, 16, 16))
    data = BlobImages(64, seed=1)
    space = model.space
    subs = [space.largest(), space.smallest(), space.uniform(0.5)]

    def grads(config: TrainConfig, step_subs: list) -> list[torch.Tensor]:
        trainer = Trainer(model, data, config, device="cpu")
        trainer.optimizer.step = lambda: None  # keep the weights: only the gradients are compared
        x, y = next(trainer.train_source.batches(0))
        trainer.train_step(x, y, step_subs, teacher_first=True)
        return [p.grad.clone() for p in model.parameters()]

    base = TrainConfig(batch_size=32, augment=False)
    teacher = grads(base, subs[:1])  # the largest alone: a one-subnet step is never scaled
    assert grads(TrainConfig(batch_size=32, augment=False, student_loss_weight=weight), subs[:1])[0].equal(teacher[0])
    full = grads(base, subs)
    scaled = grads(TrainConfig(batch_size=32, augment=False, student_loss_weight=weight), subs)
    assert any(not torch.allclose(f, t) for f, t in zip(full, teacher)), "the students contribute gradients"
    for f, t, s in zip(full, teacher, scaled):
        assert torch.allclose(s, t + weight * (f - t), atol=1e-5)
    with pytest.raises(RecipeError, match="student_loss_weight"):
        TrainConfig(student_loss_weight=0.0)


def test_student_ramp_rises_after_the_largest_only_phase_and_scales_the_step() -> None:
    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=4, channels=(8, 16, 16))
    data = BlobImages(64, seed=1)  # batch 16: 4 steps per epoch
    config = TrainConfig(epochs=4, batch_size=16, augment=False, largest_only_epochs=1.0, student_ramp_epochs=2.0,
                         student_loss_weight=0.5)  # fmt: skip
    trainer = Trainer(model, data, config, device="cpu")
    weights = [trainer.student_weight_at(step) for step in range(trainer.total_steps)]
    ramp = weights[4:12]  # the 8 steps after the 4 largest-only ones
    assert ramp == sorted(ramp) and len(set(ramp)) == 8 and 0 < ramp[0] < ramp[-1] <= 0.5
    assert ramp[-1] == pytest.approx(0.5) and weights[12:] == [0.5] * 4
    plain = Trainer(model, data, TrainConfig(batch_size=16, student_loss_weight=0.5, student_ramp_epochs=0.0), device="cpu")
    assert {plain.student_weight_at(s) for s in range(plain.total_steps)} == {0.5}  # no ramp: constant

    subs = [model.space.largest(), model.space.smallest()]
    trainer.optimizer.step = lambda: None  # compare gradients only
    x, y = next(trainer.train_source.batches(0))

    def grads(weight: float | None) -> list[torch.Tensor]:
        trainer.train_step(x, y, subs, teacher_first=True, student_weight=weight)
        return [p.grad.clone() for p in model.parameters()]

    teacher, half, quarter = grads(1e-12), grads(None), grads(0.25)  # None: the config's 0.5
    for t, h, q in zip(teacher, half, quarter):
        assert torch.allclose(q - t, 0.5 * (h - t), atol=1e-5)  # the students' share scales linearly
    assert any(not torch.allclose(h, t) for h, t in zip(half, teacher))
    with pytest.raises(RecipeError, match="student_ramp_epochs"):
        TrainConfig(epochs=2, student_ramp_epochs=3.0)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 3), st.floats(-2.0, 2.0))
def test_projection_removes_only_the_conflicting_component(seed: int, tensors: int, bias: float) -> None:
    generator = torch.Generator().manual_seed(seed)
    teacher = [torch.randn(5, 3, generator=generator) for _ in range(tensors)] + [None]
    # students' gradient = a random part + `bias` times the teacher's: conflicting when the sum points away
    students = [torch.randn(5, 3, generator=generator) * 0.5 + bias * t for t in teacher[:-1]] + [None]
    total = [t + s for t, s in zip(teacher[:-1], students[:-1])] + [None]
    before = [g.clone() for g in total[:-1]]
    dot = sum(float((s * t).sum()) for s, t in zip(students[:-1], teacher[:-1]))
    cosine, projected = project_conflicting(total, teacher)
    assert projected == (dot < 0) and (cosine < 0) == (dot < 0)
    after_dot = sum(float(((g - t) * t).sum()) for g, t in zip(total[:-1], teacher[:-1]))
    if projected:
        assert abs(after_dot) < 1e-4 * (1 + abs(dot))  # the students' part is now orthogonal to the teacher's
        coefficient = dot / sum(float(t.square().sum()) for t in teacher[:-1])
        for g, b, t in zip(total[:-1], before, teacher[:-1]):
            torch.testing.assert_close(g, b - coefficient * t)  # only the teacher's direction moved
    else:
        assert all(torch.equal(g, b) for g, b in zip(total[:-1], before))  # no conflict: untouched


def test_project_conflicts_keeps_the_largest_subnets_gradient_whole() -> None:
    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=4, channels=(8, 16, 16))
    data = BlobImages(64, seed=1)
    subs = [model.space.largest(), model.space.smallest(), model.space.uniform(0.5)]
    trainer = Trainer(model, data, TrainConfig(batch_size=32, augment=False, project_conflicts=True), device="cpu")
    trainer.optimizer.step = lambda: None
    x, y = next(trainer.train_source.batches(0))
    trainer.train_step(x, y, subs[:1], teacher_first=True)
    teacher = [p.grad.clone() for p in model.parameters()]
    plain = Trainer(model, data, TrainConfig(batch_size=32, augment=False), device="cpu")
    plain.optimizer.step = lambda: None
    plain.train_step(x, y, subs, teacher_first=True)
    summed = [p.grad.clone() for p in model.parameters()]
    losses = trainer.train_step(x, y, subs, teacher_first=True)
    projected = [p.grad.clone() for p in model.parameters()]
    students = [s - t for s, t in zip(summed, teacher)]
    dot = sum(float((s * t).sum()) for s, t in zip(students, teacher))
    norm = sum(float(t.square().sum()) for t in teacher) ** 0.5
    assert losses["student_teacher_cosine"] == pytest.approx(
        dot / norm / sum(float(s.square().sum()) for s in students) ** 0.5, rel=1e-4
    )
    assert dot < 0  # untrained students pull against the largest here: the projection is exercised
    after = sum(float(((p - t) * t).sum()) for p, t in zip(projected, teacher))
    assert abs(after) <= 1e-4 * norm**2  # no longer against the largest subnet's gradient
    assert any(not torch.allclose(p, s) for p, s in zip(projected, summed))


def test_distillation_loss_properties() -> None:
    logits = torch.randn(16, 10)
    assert distillation_loss(logits, logits, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    other = torch.randn(16, 10)
    assert distillation_loss(other, logits, 1.0).item() > 0
    # T^2 scaling keeps gradients comparable across temperatures: values stay the same order
    assert distillation_loss(other, logits, 4.0).item() < 10 * distillation_loss(other, logits, 1.0).item()


def test_in_place_gradients_equal_autograd_slicing() -> None:
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10)
    x = torch.randn(4, 3, 32, 32)
    subs = [model.space.largest(), model.space.smallest(), model.space.sample(1), model.space.sample(2)]

    def grads(in_place: bool) -> list[torch.Tensor]:
        model.set_in_place_grad(in_place)
        model.zero_grad(set_to_none=True)
        for sub in subs:
            model.activate(sub)
            model(x).square().mean().backward()
        return [p.grad.clone() for p in model.parameters()]

    reference, in_place = grads(False), grads(True)
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(reference, in_place))
    model.set_in_place_grad(False)


def test_fast_and_dataloader_paths_give_the_same_batches() -> None:
    fast = BatchSource(BlobImages(100, seed=3), 32, seed=5)
    slow = BatchSource(PerSampleImages(100, seed=3), 32, seed=5)
    assert fast.fast and not slow.fast
    assert len(fast) == 3
    for (xa, ya), (xb, yb) in zip(fast.batches(1), slow.batches(1), strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(next(fast.batches(0))[1], next(fast.batches(1))[1]), "each epoch reshuffles"
    tail = list(BatchSource(BlobImages(100, seed=3), 32, seed=5, drop_last=False).batches(None))
    assert sum(len(y) for _, y in tail) == 100, "evaluation sees every sample"


@settings(max_examples=20, deadline=None)
@given(count=st.integers(1, 5), seed=st.integers(0, 2**31), padding=st.integers(0, 3), flip=st.booleans())
def test_calibration_inputs_are_the_first_batches_augmented_reproducibly(
    count: int, seed: int, padding: int, flip: bool
) -> None:
    source = BatchSource(BlobImages(100, seed=3), 32, seed=5)  # 3 batches
    plain = calibration_inputs(source.batches(None), count)
    assert len(plain) == min(count, 3)
    assert all(torch.equal(a, x) for a, (x, _) in zip(plain, source.batches(None)))
    config = TrainConfig(calib_augment=True, crop_padding=padding, flip=flip, seed=seed)
    once = calibration_inputs(source.batches(None), count, config)
    again = calibration_inputs(source.batches(None), count, config)
    assert [a.shape for a in once] == [a.shape for a in plain]
    assert all(torch.equal(a, b) for a, b in zip(once, again, strict=True)), "seeded: the same inputs every time"
    assert any(not torch.equal(a, b) for a, b in zip(once, plain)) == bool(padding or flip)
    off = calibration_inputs(source.batches(None), count, TrainConfig(calib_augment=False, seed=seed))
    assert all(torch.equal(a, b) for a, b in zip(off, plain, strict=True))


def test_trainer_calibrates_on_augmented_batches_when_asked() -> None:
    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=4, channels=(8, 16, 16))
    data, largest = BlobImages(128, seed=1), model.space.largest()
    probe = data.images[:8]
    outputs = {}
    for flag in (False, True):
        config = TrainConfig(batch_size=32, calib_batches=2, calib_augment=flag, crop_padding=2)
        Trainer(model, data, config, device="cpu").calibrate([largest])
        model.eval().activate(largest)
        outputs[flag] = model(probe).detach()
    assert not torch.allclose(outputs[False], outputs[True]), "augmented batches give other statistics"
    calibrate(model, [largest], calibration_inputs(BatchSource(data, 32, 0).batches(None), 2, config))
    model.eval().activate(largest)
    assert torch.allclose(model(probe), outputs[True]), "the Trainer calibrates on exactly calibration_inputs"


def test_learning_rate_warms_up_then_decays_to_zero() -> None:
    config = TrainConfig(epochs=4, lr=0.2, warmup_epochs=1)
    total, per_epoch = 40, 10
    rates = [_lr_at(config, step, total, per_epoch) for step in range(total + 1)]
    assert rates[0] == pytest.approx(0.02) and rates[9] == pytest.approx(0.2)
    assert all(a >= b for a, b in itertools.pairwise(rates[10:]))
    assert rates[-1] == pytest.approx(0.0, abs=1e-12)


def test_config_rejects_unknown_fields_and_bad_values() -> None:
    with pytest.raises(RecipeError, match="learning_rate"):
        TrainConfig.from_dict({"learning_rate": 0.1})
    with pytest.raises(RecipeError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(RecipeError, match="sampler"):
        TrainConfig(sampler="sandwitch")
    with pytest.raises(RecipeError, match="label_smoothing"):
        TrainConfig(label_smoothing=1.5)
    assert TrainConfig.from_dict(TrainConfig(epochs=3).to_dict()) == TrainConfig(epochs=3)


def test_fixed_sampler_trains_only_its_subnets(tmp_path: Path) -> None:
    model = NormFreeNet()
    sub = model.space.smallest()
    config = TrainConfig(epochs=1, batch_size=32, sampler="fixed", augment=False)
    log = tmp_path / "log.jsonl"
    Trainer(model, BlobImages(64, seed=1), config, subnets=[sub], log_path=log, device="cpu").fit()
    steps = [json.loads(line) for line in log.read_text().splitlines() if '"step"' in line]
    steps = [s for s in steps if s["event"] == "step"]
    assert len(steps) == 2
    assert all(s["subnets"] == [model.space.canonical(sub).id] for s in steps)
    with pytest.raises(InvalidSubnetError, match="needs the list"):
        Trainer(NormFreeNet(), BlobImages(64, seed=1), config, device="cpu")


@pytest.mark.parametrize(("largest_only_epochs", "final_epochs"), [(0.0, 0.0), (0.5, 0.0), (1.5, 0.0), (0.5, 0.75), (0.0, 2.0)])
def test_largest_only_phases_train_the_largest_around_the_sampler(
    largest_only_epochs: float, final_epochs: float, tmp_path: Path
) -> None:
    model = NormFreeNet()
    config = TrainConfig(
        epochs=2,
        batch_size=16,
        augment=False,
        num_random=1,
        largest_only_epochs=largest_only_epochs,
        largest_only_final_epochs=final_epochs,
    )
    log = tmp_path / "log.jsonl"
    Trainer(model, BlobImages(64, seed=1), config, log_path=log, device="cpu").fit()
    steps = [json.loads(line) for line in log.read_text().splitlines()]
    steps = [s for s in steps if s["event"] == "step"]
    assert len(steps) == 8
    largest_id = model.space.largest().id
    opening, closing = int(largest_only_epochs * 4), int(final_epochs * 4)
    middle = steps[opening : 8 - closing]
    alone = steps[:opening] + steps[8 - closing :]
    assert [s["subnets"] for s in alone] == [[largest_id]] * (opening + closing)
    assert all(len(s["subnets"]) == 3 and s["subnets"][0] == largest_id for s in middle)
    assert all(set(s["loss"]) == {"largest"} for s in alone)
    with pytest.raises(RecipeError, match="largest_only_epochs"):
        TrainConfig(epochs=2, largest_only_epochs=3)
    with pytest.raises(RecipeError, match="largest_only_final_epochs"):
        TrainConfig(epochs=2, largest_only_epochs=1.5, largest_only_final_epochs=1.0)  # the phases overlap


def test_evaluate_restores_mode_and_subnet() -> None:
    model = NormFreeNet().train()
    sub = model.space.smallest()
    model.activate(sub)
    result = evaluate(model, [model.space.largest()], BlobImages(40, seed=1), batch_size=16)
    assert set(result) == {model.space.largest().id} and 0 <= result[model.space.largest().id] <= 1
    assert model.training and model.active_subnet == model.space.canonical(sub)


def test_resume_after_kill_replays_the_uninterrupted_run(tmp_path: Path) -> None:
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run([sys.executable, str(SCRIPT), str(straight), "-1"], check=True, env=_env(), timeout=300)
    # 6 steps per epoch, checkpoints every 2 steps: killed at global step 9, mid-epoch 2, after the step-8 save
    crashed = subprocess.run([sys.executable, str(SCRIPT), str(killed), "9"], env=_env(), timeout=300)
    assert crashed.returncode == -9
    state = json.loads((killed / "train_state.json").read_text())
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (1, 2, 8)
    assert state["epoch_loss_steps"] == 2 and set(state["epoch_loss_sums"]) >= {"largest"}
    subprocess.run([sys.executable, str(SCRIPT), str(killed), "-1"], check=True, env=_env(), timeout=300)
    a, b = load_file(str(straight / WEIGHTS_FILE)), load_file(str(killed / WEIGHTS_FILE))
    assert same_tensors(a, b) == []
    history_a = json.loads((straight / "train_state.json").read_text())["history"]
    history_b = json.loads((killed / "train_state.json").read_text())["history"]
    assert [h["accuracy"] for h in history_a] == [h["accuracy"] for h in history_b]
    # the epoch loss after the mid-epoch resume averages all 6 steps of the epoch, as the straight run's does
    assert [h["loss"] for h in history_a] == [h["loss"] for h in history_b]


def test_resume_with_another_recipe_is_refused(tmp_path: Path) -> None:
    config = TrainConfig(epochs=1, batch_size=32, augment=False)
    Trainer(NormFreeNet(), BlobImages(64, seed=1), config, checkpoint_dir=tmp_path / "ck", device="cpu").fit()
    other = TrainConfig(epochs=1, batch_size=32, augment=False, seed=99)
    with pytest.raises(CheckpointError, match="seed=0"):
        Trainer(NormFreeNet(), BlobImages(64, seed=1), other, checkpoint_dir=tmp_path / "ck", resume=True, device="cpu")


def _torchrun(tmp_path: Path, *args: str) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "--log-dir", str(tmp_path / "torchrun_logs"), str(SCRIPT)]  # not a new folder in /tmp per run
    subprocess.run(command + list(args), check=True, env=_env(), timeout=300, cwd=tmp_path, capture_output=True)


def test_two_process_data_parallel_equals_one_process_on_the_whole_batch(tmp_path: Path) -> None:
    _torchrun(tmp_path, str(tmp_path / "ddp"), "-1", "--norm-free", "--dump", str(tmp_path / "ddp_weights"))
    rank0 = load_file(str(tmp_path / "ddp_weights.rank0"))
    rank1 = load_file(str(tmp_path / "ddp_weights.rank1"))
    assert same_tensors(rank0, rank1) == [], "ranks must hold one model"
    single = tmp_path / "single"
    subprocess.run(
        [sys.executable, str(SCRIPT), str(single), "-1", "--norm-free", "--dump", str(tmp_path / "one")],
        check=True,
        env=_env(),
        timeout=300,
    )
    one = load_file(str(tmp_path / "one.rank0"))
    assert same_tensors(rank0, one, atol=1e-5) == [], "2 x 16 samples must train like 1 x 32"


@pytest.mark.parametrize("name", ["densenet", "resnext"])
def test_elasticized_user_models_train_with_the_sandwich_rule(name: str, tmp_path: Path) -> None:
    import tailor
    from convert.user_models import make_user_model

    x = torch.randn(2, 3, 16, 16)
    model = tailor.elasticize(make_user_model(name), (x,), mode="per_group")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = TrainConfig(epochs=1, batch_size=16, augment=False, calib_batches=1)
    data = BlobImages(32, seed=1, num_classes=10)
    trainer = Trainer(model, data, config, eval_data=data, checkpoint_dir=tmp_path / "ck", device="cpu")
    history = trainer.fit()
    assert set(history[0].accuracy) == {model.space.largest().id, model.space.smallest().id}
    changed = [k for k, v in model.state_dict().items() if k in before and not torch.equal(v, before[k])]
    assert changed, "training must move the user's weights"
    fresh = tailor.elasticize(make_user_model(name), (x,), mode="per_group")
    loaded = tailor.load(tmp_path / "ck", model=fresh)
    assert same_tensors(loaded.state_dict(), model.state_dict()) == []


def test_batches_of_real_datasets_match_their_items() -> None:
    from tailor.data import synthetic

    data = synthetic(n=64, seed=3)
    fast = BatchSource(data, 16, seed=1)
    slow = BatchSource(data.with_transform(lambda image: image), 16, seed=1)  # a transform forces per-item loading
    assert fast.fast and not slow.fast
    for (xa, ya), (xb, yb) in zip(fast.batches(0), slow.batches(0), strict=True):
        assert torch.allclose(xa, xb, atol=1e-6) and torch.equal(ya, yb)


def test_adamw_with_warm_up_trains_a_vit_supernet_and_resumes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    kwargs = {"img_size": 8, "patch_size": 2, "embed_dim": 32, "depth": 2, "num_heads": 2, "num_classes": 10,
              "in_chans": 1}  # fmt: skip
    model = create_model("vit_micro", **kwargs)
    # students learn from the labels: on 1,438 images in 6 epochs a tiny ViT's teacher is too weak to distil from
    config = TrainConfig(epochs=6, batch_size=64, lr=3e-3, optimizer="adamw", weight_decay=0.05, warmup_epochs=1,
                         label_smoothing=0.1, largest_only_epochs=2, student_ramp_epochs=2, distill=False,
                         augment=False)  # fmt: skip
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    trainer = Trainer(model, train, config, eval_data=test, checkpoint_dir=tmp_path / "ck", device="cpu")
    assert isinstance(trainer.optimizer, torch.optim.AdamW)
    decay, no_decay = trainer.optimizer.param_groups
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    exempt = {id(p) for p in no_decay["params"]}
    assert id(model.pos_embed) in exempt and id(model.cls_token) in exempt  # the model's no_weight_decay()
    assert id(model.stages[0].blocks[0].attn.qkv.weight) not in exempt
    history = trainer.fit()
    assert history[-1].accuracy[model.space.largest().id] > 0.5  # chance: 0.1
    assert history[-1].accuracy[model.space.smallest().id] > 0.3
    resumed = Trainer(create_model("vit_micro", **kwargs), train, config, checkpoint_dir=tmp_path / "ck", resume=True,
                      device="cpu")  # fmt: skip
    state, saved = resumed.optimizer.state_dict()["state"], trainer.optimizer.state_dict()["state"]
    assert state.keys() == saved.keys() and all(
        torch.equal(state[k]["exp_avg_sq"], saved[k]["exp_avg_sq"]) for k in state
    )  # AdamW's moments survive the checkpoint
    with pytest.raises(RecipeError, match="optimizer: input should be 'sgd' or 'adamw', got 'adam'"):
        TrainConfig(optimizer="adam")
