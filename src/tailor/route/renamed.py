"""Route's earlier names, importable for one more release with a `DeprecationWarning`.

Route's `Policy`, `make_policy` and `simulate` had the names of `tailor.serve`'s serving policies and serving
simulator; they are `RoutingPolicy`, `make_routing_policy` and `simulate_cascade` now.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from typing import Any

#: earlier name -> current name
RENAMED = {"Policy": "RoutingPolicy", "make_policy": "make_routing_policy", "simulate": "simulate_cascade"}


def module_getattr(module: str) -> Callable[[str], Any]:
    """A module `__getattr__` that answers an earlier name with the current object and a `DeprecationWarning`."""

    def __getattr__(name: str) -> Any:
        current = RENAMED.get(name)
        namespace = vars(sys.modules[module])
        if current is None or current not in namespace:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        warnings.warn(
            f"{module}.{name} is deprecated (tailor.serve has a {name} of its own); use {current}",
            DeprecationWarning,
            stacklevel=2,
        )
        return namespace[current]

    return __getattr__
