"""`tailor train` / `tailor calibrate` and TOML recipes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tailor import InvalidSubnetError, RecipeError, create_model
from tailor.cli import main
from tailor.train import load_checkpoint, read_config
from tailor.train.recipe import Recipe

ROW = re.compile(r"^(sn-[0-9a-f]{12})\s+([\d.]+)\s+(\S+)\s+([\d.]+)$")


def _rows(text: str) -> list[tuple[str, float]]:
    return [(m.group(1), float(m.group(4))) for m in map(ROW.match, text.splitlines()) if m]


def test_train_then_calibrate_on_digits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ck"
    args = ["train", "--data", "digits", "--model", "small_cnn", "--epochs", "2", "--out", str(out), "--no-progress"]
    assert main(args + ["--batch-size", "64", "--threads", "1"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert len(rows) == 4  # largest, 0.75, 0.5, smallest
    assert rows[0][1] > 0.5, "two epochs on digits must beat chance by far"
    config = read_config(out)
    assert config["metadata"]["recipe"]["data"]["name"] == "digits"
    assert config["metadata"]["recipe"]["train"]["flip"] is False, "digits are not mirror-invariant"
    log = [json.loads(line) for line in (tmp_path / "ck.metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log if r["event"] == "epoch"] == [0, 1]
    assert sum(r["event"] == "step" for r in log) == 2 * (1437 // 64)
    before = len(config["calibrated_subnets"])

    assert main(["calibrate", str(out), "--random", "3", "--eval", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "calibrated" in printed and len(_rows(printed)) >= 5
    loaded = load_checkpoint(out)
    assert len(loaded.model.calibrated_subnet_keys()) > before
    assert loaded.train_state is not None and loaded.optimizer_state is not None, "training state is kept"


def test_recipe_file_and_flag_overrides(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(
        '[model]\nname = "small_cnn"\nkwargs = { channels = [8, 16, 16] }\n'
        '[data]\nname = "synthetic"\ntrain = { n = 256 }\ntest = { n = 64 }\n'
        "[train]\nepochs = 1\nbatch_size = 64\ncrop_padding = 2\n"
    )
    loaded = Recipe.load(recipe)
    assert loaded.model == "small_cnn" and loaded.model_kwargs == {"channels": [8, 16, 16]}
    assert loaded.train.crop_padding == 2 and loaded.train_split == {"n": 256}
    out = tmp_path / "ck"
    flags = ["--lr", "0.02", "--student-loss-weight", "0.5", "--student-ramp-epochs", "0.5", "--project-conflicts",
             "--largest-only-final-epochs", "0.25", "--calib-augment", "--no-progress"]  # fmt: skip
    assert main(["train", "--config", str(recipe), "--out", str(out), *flags]) == 0
    saved = read_config(out)["metadata"]["recipe"]
    assert saved["train"]["lr"] == 0.02 and saved["train"]["crop_padding"] == 2
    assert saved["train"]["student_loss_weight"] == 0.5
    assert saved["train"]["student_ramp_epochs"] == 0.5 and saved["train"]["project_conflicts"] is True
    assert saved["train"]["largest_only_final_epochs"] == 0.25 and saved["train"]["calib_augment"] is True
    assert saved["model"]["kwargs"] == {"channels": [8, 16, 16]}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[train]\nepoch = 3\n", r"train: unknown key 'epoch'; known keys: .*epochs"),
        ("[data]\nnmae = 'digits'\n", r"data: unknown key 'nmae'; known keys: name, root, test, train"),
        ("[train]\nepochs = 0\n", r"train.epochs: input should be greater than or equal to 1"),
        ("[model]\nname = 3\n", r"model.name: expected a string, got 3"),
        ("[model]\nname = 'resnet21'\n", r"model.name: unknown model 'resnet21'; registered: .*resnet20"),
        ("[data]\nname = 'mnist'\n", r"data.name: unknown data set 'mnist'"),
        ("model = 'resnet20'\n", r"model: expected a table \(an object\), got 'resnet20'"),
        ("[train\n", "not valid TOML"),
        # types, not only ranges: each of these used to be accepted or to fail with a raw TypeError
        ("[train]\naugment = 'no'\n", r"train.augment: expected true or false \(a boolean\), got 'no' \(a string\)"),
        ("[train]\ndistill = 'False'\n", r"train.distill: expected true or false \(a boolean\), got 'False'"),
        ("[train]\namp = 'false'\n", r"train.amp: expected true or false \(a boolean\), got 'false'"),
        ("[train]\nseed = 'x'\n", r"train.seed: expected an integer, got 'x' \(a string\)"),
        ("[train]\nflip = 0\n", r"train.flip: expected true or false \(a boolean\), got 0 \(an integer\)"),
        ("[train]\nlr = '0.1'\n", r"train.lr: expected a number, got '0.1' \(a string\)"),
        ("[train]\nepochs = 2.0\n", r"train.epochs: expected an integer, got 2.0 \(a number\)"),
        ("[train]\nsampler = 'sandwitch'\n", r"train.sampler: input should be 'sandwich', 'random_min_max'"),
        ("[train]\nepochs = 2\nlargest_only_epochs = 3\n", r"train: largest_only_epochs=3.0 is more than epochs=2"),
        ("[data]\ntrain = [1]\n", r"data.train: expected a table"),
    ],
)
def test_bad_recipes_name_the_key_and_the_expected_type(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(RecipeError, match=message) as caught:
        Recipe.load(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value), "one line that names the file"
    assert isinstance(caught.value, ValueError) and not isinstance(caught.value, InvalidSubnetError)


def test_a_bad_recipe_is_one_line_and_exit_2_at_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[train]\naugment = 'no'\n")
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "ck")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "train.augment: expected true or false" in err
    assert not (tmp_path / "ck").exists()


def test_valid_recipe_types_are_kept_exactly(tmp_path: Path) -> None:
    path = tmp_path / "ok.toml"
    path.write_text("[train]\naugment = false\nlr = 1\ngrad_clip = 2\nwarmup_epochs = 1\n")
    config = Recipe.load(path).train
    assert config.augment is False and config.lr == 1.0 and isinstance(config.lr, float)
    assert config.grad_clip == 2.0 and config.warmup_epochs == 1.0


def test_cli_reports_bad_input_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "ck")
    assert main(["train", "--data", "digits", "--train-size", "100", "--out", out]) == 2
    assert "--train-size applies to synthetic" in capsys.readouterr().err
    assert main(["train", "--data", "cifar10", "--out", out]) == 2
    assert "root" in capsys.readouterr().err
    assert main(["calibrate", str(tmp_path / "nothing")]) == 2
    assert "not a directory" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("recipe_says", "flag", "augmented"),
    [(None, None, False), (True, None, True), (False, None, False), (True, False, False), (False, True, True)],
)
def test_calibrate_augments_as_the_recipe_says_unless_told(recipe_says: bool | None, flag: bool | None,
                                                           augmented: bool) -> None:  # fmt: skip
    from argparse import Namespace

    from tailor.train.commands import _calibration_config

    train = {} if recipe_says is None else {"calib_augment": recipe_says, "crop_padding": 2, "flip": False}
    config = _calibration_config({"metadata": {"recipe": {"train": train}}}, "synthetic", Namespace(calib_augment=flag, seed=3))
    assert (config is not None) == augmented
    if config is not None:
        assert config.calib_augment and config.seed == 3
        expected = (2, False) if train else (4, True)  # the recipe's augmentation, else the data's default
        assert (config.crop_padding, config.flip) == expected


def test_train_subnets_trains_exactly_those_with_the_fixed_sampler(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    out = tmp_path / "ck"
    args = ["train", "--data", "digits", "--model", "small_cnn", "--epochs", "1", "--batch-size", "128", "--threads", "1"]
    assert main([*args, "--subnet", "smallest,w0.5", "--out", str(out), "--no-progress"]) == 0
    space = create_model("small_cnn").space
    wanted = {space.smallest().id, space.canonical(space.uniform(0.5)).id}
    steps = [json.loads(line) for line in (tmp_path / "ck.metrics.jsonl").read_text().splitlines()]
    steps = [s for s in steps if s["event"] == "step"]
    assert steps and all(set(s["subnets"]) == wanted for s in steps)
    assert read_config(out)["metadata"]["recipe"]["train"]["sampler"] == "fixed"
    capsys.readouterr()
    assert main([*args, "--sampler", "sandwich", "--subnet", "smallest", "--out", str(tmp_path / "x")]) == 2
    assert "contradicts sampler 'sandwich'" in capsys.readouterr().err
    assert main([*args, "--sampler", "fixed", "--out", str(tmp_path / "x")]) == 2
    assert "give it with --subnet" in capsys.readouterr().err
    assert main([*args, "--subnet", "w0.3", "--out", str(tmp_path / "x")]) == 2
    assert "--subnet: subnet 'w0.3': no width dimension allows 0.3" in capsys.readouterr().err
