"""The wheel a user installs: every package document (the server's and simulator's too) and the core dependencies
are in it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_carries_the_documents_and_the_plotting_and_progress_libraries(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", str(tmp_path / "dist"), str(source)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("tailor-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = Parser().parsestr(archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode())
    documents = {str(p.relative_to(ROOT / "src")) for p in (ROOT / "src").rglob("*.md")}
    assert {"tailor/serve/server/README.md", "tailor/serve/sim/README.md", "tailor/serve/cluster/README.md"} <= documents
    assert documents <= names, f"missing from the wheel: {sorted(documents - names)}"
    required = {r.split(">")[0].split("=")[0].split("<")[0].strip().lower() for r in metadata.get_all("Requires-Dist")}
    assert {"matplotlib", "tqdm"} <= required
