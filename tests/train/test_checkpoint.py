"""tailor.save / tailor.load: round trips, atomic replacement, and every way a checkpoint can be bad."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from model_helpers import sample_input
from tailor import CheckpointError, create_model
from tailor.train import calibrate, load, load_checkpoint, read_config, save
from tailor.train.checkpoint import CONFIG_FILE, WEIGHTS_FILE
from train_helpers import NormFreeNet


def _calibrated_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10)
    batches = [torch.randn(8, 3, 32, 32) for _ in range(2)]
    calibrate(model, [model.space.largest(), model.space.smallest(), model.space.uniform(0.5)], batches, batches=2)
    return model.eval()


def test_round_trip_keeps_outputs_and_subnet_statistics(tmp_path: Path) -> None:
    model = _calibrated_model()
    save(model, tmp_path / "ck")
    loaded = load(tmp_path / "ck")
    assert type(loaded) is type(model)
    assert loaded.calibrated_subnet_keys() == model.calibrated_subnet_keys()
    x = sample_input("resnet20", batch=2)
    for sub in (model.space.smallest(), model.space.uniform(0.5)):
        with torch.no_grad(), model.activated(sub), loaded.activated(sub):
            assert torch.equal(model(x), loaded(x))
    config = read_config(tmp_path / "ck")
    assert config["model"]["architecture"] == {"name": "resnet20", "kwargs": {"in_chans": 3, "num_classes": 10}}
    assert len(config["calibrated_subnets"]) == 3


def test_checkpoint_files_are_safetensors_and_json_only(tmp_path: Path) -> None:
    save(_calibrated_model(), tmp_path / "ck")
    names = sorted(p.name for p in (tmp_path / "ck").iterdir())
    assert names == [WEIGHTS_FILE, CONFIG_FILE]
    assert not list(tmp_path.glob(".ck.*")), "temporary directories must be cleaned up"


def test_save_replaces_an_existing_checkpoint_whole(tmp_path: Path) -> None:
    first = create_model("resnet20", num_classes=10)
    second = create_model("resnet20", num_classes=10)
    save(first, tmp_path / "ck")
    save(second, tmp_path / "ck")
    loaded = load(tmp_path / "ck")
    for name, tensor in second.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_truncated_weights_raise(tmp_path: Path) -> None:
    save(create_model("resnet20", num_classes=10), tmp_path / "ck")
    weights = tmp_path / "ck" / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated"):
        load(tmp_path / "ck")


def test_edited_weights_raise(tmp_path: Path) -> None:
    save(create_model("resnet20", num_classes=10), tmp_path / "ck")
    weights = tmp_path / "ck" / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256"):
        load(tmp_path / "ck")


def test_foreign_checkpoints_raise(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no tailor.json"):
        load(tmp_path / "empty")
    with pytest.raises(CheckpointError, match="not a directory"):
        load(tmp_path / "missing")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / CONFIG_FILE).write_text(json.dumps({"schema": "someone.else/3"}))
    with pytest.raises(CheckpointError, match="someone.else/3"):
        load(tmp_path / "other")
    (tmp_path / "garbled").mkdir()
    (tmp_path / "garbled" / CONFIG_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load(tmp_path / "garbled")


def test_pickle_in_place_of_safetensors_is_rejected_without_unpickling(tmp_path: Path) -> None:
    save(create_model("resnet20", num_classes=10), tmp_path / "ck")
    weights = tmp_path / "ck" / WEIGHTS_FILE
    torch.save({"x": torch.zeros(1)}, weights)  # a pickle where safetensors should be
    config = json.loads((tmp_path / "ck" / CONFIG_FILE).read_text())
    import hashlib

    config["files"][WEIGHTS_FILE] = {
        "bytes": weights.stat().st_size,
        "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
    }
    (tmp_path / "ck" / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load(tmp_path / "ck")


def test_weights_of_another_model_raise(tmp_path: Path) -> None:
    save(create_model("resnet20", num_classes=10), tmp_path / "ck")
    weights = tmp_path / "ck" / WEIGHTS_FILE
    save_file({"conv.weight": torch.zeros(2)}, str(weights))
    config = json.loads((tmp_path / "ck" / CONFIG_FILE).read_text())
    import hashlib

    config["files"][WEIGHTS_FILE] = {
        "bytes": weights.stat().st_size,
        "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
    }
    (tmp_path / "ck" / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="do not fit"):
        load(tmp_path / "ck")


def test_space_mismatch_and_unregistered_models(tmp_path: Path) -> None:
    save(create_model("resnet20", num_classes=10), tmp_path / "r20")
    with pytest.raises(CheckpointError, match="search space differs"):
        load(tmp_path / "r20", model=create_model("resnet32", num_classes=10))
    save(NormFreeNet(), tmp_path / "custom")
    with pytest.raises(CheckpointError, match="pass an instance"):
        load(tmp_path / "custom")
    torch.manual_seed(1)
    net = NormFreeNet()
    save(net, tmp_path / "custom")
    loaded = load(tmp_path / "custom", model=NormFreeNet())
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), loaded.state_dict().values()))


def test_optimizer_and_train_state_round_trip(tmp_path: Path) -> None:
    model = NormFreeNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 16, 16)).sum().backward()
    opt.step()
    save(model, tmp_path / "ck", optimizer=opt, train_state={"epoch": 3, "note": "x"})
    loaded = load_checkpoint(tmp_path / "ck", model=NormFreeNet())
    assert loaded.train_state == {"epoch": 3, "note": "x"}
    fresh = torch.optim.SGD(loaded.model.parameters(), lr=0.1, momentum=0.9)
    fresh.load_state_dict(loaded.optimizer_state)
    for a, b in zip(opt.state.values(), fresh.state.values()):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])


def test_an_interrupted_swap_is_reported(tmp_path: Path) -> None:
    save(create_model("resnet20", num_classes=10), tmp_path / "ck")
    (tmp_path / "ck").rename(tmp_path / ".ck.old-1-abc")
    with pytest.raises(CheckpointError, match="interrupted save"):
        load(tmp_path / "ck")


def test_tailor_exports_save_and_load() -> None:
    import tailor

    assert tailor.save is save and tailor.load is load


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["files"][WEIGHTS_FILE].update(bytes="12"), r"files.model.safetensors.bytes: expected an integer"),
        (lambda c: c["files"][WEIGHTS_FILE].update(sha256="nothex"), r"files.model.safetensors.sha256: string should match"),
        (lambda c: c["model"].update(architecture={"name": 3}), r"model.architecture.name: expected a string"),
        (lambda c: c.update(calibrated_subnets="all"), r"calibrated_subnets: expected a list"),
        (lambda c: c.pop("space"), r"missing key 'space'"),
        (lambda c: c["files"].update({"../x": c["files"][WEIGHTS_FILE]}), r"file name '../x' must not contain a path"),
    ],
)
def test_malformed_checkpoint_metadata_names_the_key(tmp_path: Path, edit, message: str) -> None:
    save(create_model("small_cnn", num_classes=10), tmp_path / "ck")
    path = tmp_path / "ck" / CONFIG_FILE
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=message) as caught:
        load(tmp_path / "ck")
    assert "\n" not in str(caught.value) and CONFIG_FILE in str(caught.value)


def test_recorded_data_is_type_checked(tmp_path: Path) -> None:
    from tailor.train.checkpoint import recorded_data

    assert recorded_data({"metadata": {}}).name is None
    data = recorded_data({"metadata": {"recipe": {"data": {"name": "digits", "root": "", "train": {"n": 3}}}}})
    assert (data.name, data.train) == ("digits", {"n": 3})
    with pytest.raises(CheckpointError, match=r"metadata.recipe.data: train: expected a table"):
        recorded_data({"metadata": {"recipe": {"data": {"name": "digits", "train": [1]}}}})


def test_a_malformed_train_state_is_refused_on_resume(tmp_path: Path) -> None:
    from tailor.train import TrainConfig, Trainer
    from train_helpers import BlobImages

    config = TrainConfig(epochs=1, batch_size=32, augment=False)
    Trainer(NormFreeNet(), BlobImages(64, seed=1), config, checkpoint_dir=tmp_path / "ck", device="cpu").fit()
    state_path = tmp_path / "ck" / "train_state.json"
    state = json.loads(state_path.read_text())
    state["step_in_epoch"] = "2"
    state_path.write_text(json.dumps(state))
    config_path = tmp_path / "ck" / CONFIG_FILE  # keep the recorded hash right: only the content is wrong
    files = json.loads(config_path.read_text())
    import hashlib

    files["files"]["train_state.json"] = {"bytes": state_path.stat().st_size,
                                          "sha256": hashlib.sha256(state_path.read_bytes()).hexdigest()}  # fmt: skip
    config_path.write_text(json.dumps(files))
    with pytest.raises(CheckpointError, match=r"train_state.json'?: step_in_epoch: expected an integer, got '2'"):
        Trainer(NormFreeNet(), BlobImages(64, seed=1), config, checkpoint_dir=tmp_path / "ck", resume=True,
                device="cpu")  # fmt: skip
