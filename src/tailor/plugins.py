"""Registries filled by files: import every module of a package, so that each registers what it defines.

The extension points that are one file plus its test (runtimes in `tailor.cost.runtimes`, search algorithms
in `tailor.search.algorithms`) call `import_modules` from their package's `__init__`: a new file is found
without editing anything else.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable


def import_modules(package: str, path: Iterable[str], skip: Iterable[str] = ("base",)) -> list[str]:
    """Import every module of `package` (its `__name__` and `__path__`) but `skip`, by name; returns their names."""
    skipped = set(skip)
    names = sorted(info.name for info in pkgutil.iter_modules(list(path)) if info.name not in skipped)
    for name in names:
        importlib.import_module(f"{package}.{name}")
    return names
