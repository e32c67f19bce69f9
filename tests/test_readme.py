"""The README's Python examples run as written (in order, in one namespace, in a scratch directory)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import tailor

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_readme_python_blocks_run_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = _python_blocks()
    assert len(blocks) >= 2, "the Using-it and Training examples"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(blocks[0], "README.md (Using it)", "exec"), namespace)
    # what the Using-it example says: the activated supernet and the extracted static subnet agree
    model, sub, x = namespace["model"], namespace["sub"], namespace["x"]
    assert namespace["loader"] is not None and x.shape[1:] == (3, 32, 32)
    with torch.inference_mode():
        assert torch.allclose(namespace["static"].eval()(x), namespace["y"], atol=1e-4)
    assert model.has_norm_stats(sub) and model.has_norm_stats(model.space.smallest())
    for index, block in enumerate(blocks[1:], start=1):
        exec(compile(block, f"README.md (block {index + 1})", "exec"), namespace)
    # the Training example: a 1-channel model for 1-channel digits, trained, saved and loaded back
    history, loaded = namespace["history"], namespace["model"]
    assert isinstance(loaded, tailor.ElasticModel) and loaded.default_input_size[0] == 1
    largest = loaded.space.largest().id
    assert history[-1].accuracy[largest] > 0.3, "well above chance (0.1) after three epochs"
    assert all(loaded.has_norm_stats(s) for s in namespace["subs"])
    assert (tmp_path / "ck" / "tailor.json").is_file()
