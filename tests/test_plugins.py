"""tailor.plugins.import_modules: a package's every module is imported (but `base`), so files register themselves."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from tailor.plugins import import_modules


def test_every_module_but_base_is_imported_in_name_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "fake_plugins"
    package.mkdir()
    (package / "__init__.py").write_text("SEEN = []\n")
    (package / "base.py").write_text("raise RuntimeError('base is the contract, not a plugin')\n")
    for name in ("zeta", "alpha", "mid"):
        (package / f"{name}.py").write_text(f"from fake_plugins import SEEN\nSEEN.append({name!r})\n")
    (package / "notes.txt").write_text("not a module")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        imported = importlib.import_module("fake_plugins")
        assert import_modules("fake_plugins", imported.__path__) == ["alpha", "mid", "zeta"]
        assert imported.SEEN == ["alpha", "mid", "zeta"]
        import_modules("fake_plugins", imported.__path__)
        assert imported.SEEN == ["alpha", "mid", "zeta"], "a second call imports nothing again"
    finally:
        for name in [n for n in sys.modules if n == "fake_plugins" or n.startswith("fake_plugins.")]:
            del sys.modules[name]


def test_the_built_in_registries_are_filled_by_their_files() -> None:
    from tailor.cost import list_runtimes
    from tailor.search import ALGORITHMS, algorithm_names

    assert set(ALGORITHMS) <= set(algorithm_names())
    assert {"torch", "onnxruntime"} <= set(list_runtimes())
