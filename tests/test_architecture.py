"""The layers docs/architecture.md draws are the ones the code has: every import of a tailor module points down.

The test reads every `import` in src/tailor (at module level and inside functions) and checks it against the
layer table below, which is the one the architecture page shows.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "tailor"
DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"

# bottom to top; a unit may import its own package and any unit of a lower layer
LAYERS: list[set[str]] = [
    {"errors"},
    {"jsonio", "progress", "plot", "validation", "checks", "plugins", "graph"},
    {"space", "data"},
    {"cli_args"},
    {"ops"},
    {"models", "convert"},
    {"train"},
    {"export"},
    {"cost"},
    {"search", "route", "serve", "dnas"},
    {"__init__"},
    {"report"},
    {"demo"},
    {"cli", "schemas"},
]
LEVEL = {unit: level for level, units in enumerate(LAYERS) for unit in units}


def unit_of(path: Path) -> str:
    relative = path.relative_to(SRC)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def imported_units(tree: ast.AST) -> list[tuple[str, int]]:
    """(unit, line) of every tailor module a file imports; `from tailor import X` counts as the package root,
    except `__version__`, which is metadata anyone may read."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "tailor":
            parts = node.module.split(".")
            if len(parts) > 1:
                found.append((parts[1], node.lineno))
            elif any(alias.name != "__version__" for alias in node.names):
                found.append(("__init__", node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "tailor":
                    found.append((parts[1] if len(parts) > 1 else "__init__", node.lineno))
    return found


def test_every_unit_has_a_layer() -> None:
    units = {unit_of(path) for path in SRC.rglob("*.py")}
    assert units <= set(LEVEL), f"place these in LAYERS and docs/architecture.md: {sorted(units - set(LEVEL))}"


def test_imports_point_down_only() -> None:
    upward = []
    for path in sorted(SRC.rglob("*.py")):
        unit = unit_of(path)
        for target, line in imported_units(ast.parse(path.read_text(encoding="utf-8"))):
            if target != unit and LEVEL[target] >= LEVEL[unit]:
                upward.append(f"{path.relative_to(SRC.parent)}:{line}: {unit} imports {target}")
    assert not upward, "imports that point up or sideways:\n" + "\n".join(upward)


def test_the_architecture_page_names_every_package() -> None:
    text = DOC.read_text(encoding="utf-8")
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert all(f"`{name}`" in text for name in packages), sorted(p for p in packages if f"`{p}`" not in text)
    for line in text.splitlines():  # relative links from docs/ resolve inside the repository
        for target in (part.split(")")[0] for part in line.split("](")[1:]):
            if not target.startswith(("http", "#")):
                assert (DOC.parent / target.split("#")[0]).exists(), target
