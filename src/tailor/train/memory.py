"""Tensor memory of a piece of code, measured on any device: peak live bytes and total bytes allocated.

CPU has no allocator statistics like CUDA's `max_memory_allocated`, so `TensorMemory` watches every
operator call (a `TorchDispatchMode`), records each new output storage, and notices when storages
die (weak references). That counts exactly the tensors created inside the block (activations,
gradients, temporaries), not the tensors alive before it (the weights), which `baseline_bytes`
reports separately. Used by the training benchmarks to compare a sandwich step with a plain one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


@dataclass
class MemoryReport:
    """Bytes of tensors created inside the block: the most alive at once, and all allocations summed."""

    peak_bytes: int = 0
    allocated_bytes: int = 0
    allocations: int = 0


class TensorMemory(TorchDispatchMode):
    """`with TensorMemory() as m: ...` then `m.report` (peak live bytes, total bytes allocated)."""

    def __init__(self) -> None:
        super().__init__()
        self.report = MemoryReport()
        self._live: dict[int, tuple[StorageWeakRef, int]] = {}
        self._current = 0

    def __enter__(self) -> TensorMemory:
        return super().__enter__()  # type: ignore[return-value]

    def _sweep(self) -> None:
        dead = [key for key, (ref, _) in self._live.items() if ref.expired()]
        for key in dead:
            self._current -= self._live.pop(key)[1]

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        self._sweep()
        inputs = {
            value.untyped_storage().data_ptr()
            for value in tree_flatten((args, kwargs))[0]
            if isinstance(value, torch.Tensor)
        }
        for value in tree_flatten(out)[0]:
            if not isinstance(value, torch.Tensor):
                continue
            storage = value.untyped_storage()
            key = storage.data_ptr()
            if key == 0 or key in self._live or key in inputs:  # views and in-place results are not new memory
                continue
            nbytes = storage.nbytes()
            self._live[key] = (StorageWeakRef(storage), nbytes)
            self._current += nbytes
            self.report.allocated_bytes += nbytes
            self.report.allocations += 1
            self.report.peak_bytes = max(self.report.peak_bytes, self._current)
        return out


def parameter_bytes(module: torch.nn.Module) -> int:
    """Bytes of a module's parameters and buffers (what is alive before a training step)."""
    tensors = list(module.parameters()) + list(module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)
