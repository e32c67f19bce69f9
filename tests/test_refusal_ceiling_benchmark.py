"""`benchmarks/refusal_ceiling.py` edits a copy of the server's code: each edit must still find its place in the
current app.py exactly once (or the benchmark would measure something else), and the edited module must compile."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import ModuleType

import pytest

from benchmark_helpers import load_benchmark

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ceiling() -> ModuleType:
    return load_benchmark("refusal_ceiling")


def test_the_ceiling_edits_apply_to_the_current_server_once_each_and_compile(ceiling: ModuleType,
                                                                            tmp_path: Path) -> None:
    app = tmp_path / ceiling.APP
    app.parent.mkdir(parents=True)
    shutil.copy(ROOT / ceiling.APP, app)
    ceiling.make_ceiling(tmp_path)
    text = app.read_text()
    for _, new in ceiling.CEILING_EDITS:
        assert text.count(new) == 1
    compile(text, str(app), "exec")
    # the shortcut comes first in data_received, and the pass's end clears it
    received = text.index("def data_received(self, data: bytes) -> None:")
    assert text.index("CEILING[0] is not None", received) < text.index("self.", received)
    assert "CEILING[0] = None" in text[text.index("def _end_refusal_run"):]


def test_code_that_moved_on_is_named_not_measured(ceiling: ModuleType, tmp_path: Path) -> None:
    app = tmp_path / ceiling.APP
    app.parent.mkdir(parents=True)
    app.write_text((ROOT / ceiling.APP).read_text().replace("def data_received(self, data: bytes) -> None:", "def data_received(self, data):"))
    with pytest.raises(SystemExit, match="no longer holds"):
        ceiling.make_ceiling(tmp_path)
