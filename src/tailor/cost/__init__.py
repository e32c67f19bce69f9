"""What subnets cost (params, MACs, memory, latency, energy), runtimes, profiles and latency predictors (README.md)."""

from typing import Any

from tailor.cost.measure import (
    CLOCKS,
    PERCENTILE_MIN_REPEATS,
    LatencyStats,
    MemoryStats,
    Runner,
    Timings,
    check_runtime,
    energy,
    energy_source,
    interleaved_samples,
    interleaved_timings,
    latency,
    latency_table,
    macs,
    measure_interleaved,
    params,
    peak_memory,
    prepare,
    prepare_module,
    prepare_onnx,
    release_all,
    supported_percentile,
)
from tailor.cost.predict import (
    Block,
    ErrorReport,
    LatencyPredictor,
    LatencyTable,
    LayerTable,
    features,
    subnet_blocks,
)
from tailor.cost.profile import (
    SCHEMA,
    Profile,
    ProfileIssue,
    ProfileWarning,
    SubnetProfile,
    build_profile,
    choose_runtime,
    profile_json_schema,
)
from tailor.cost.runtimes import (
    OutputCheck,
    PreparedModel,
    Runtime,
    RuntimeInfo,
    RuntimeUnavailableError,
    Tolerance,
    get_runtime,
    list_runtimes,
    register_runtime,
)

__all__ = [
    "CLOCKS",
    "PERCENTILE_MIN_REPEATS",
    "SCHEMA",
    "Block",
    "ErrorReport",
    "LatencyPredictor",
    "LatencyStats",
    "LatencyTable",
    "LayerTable",
    "MemoryStats",
    "OutputCheck",
    "PreparedModel",
    "Profile",
    "ProfileIssue",
    "ProfileWarning",
    "Runner",
    "Runtime",
    "RuntimeInfo",
    "RuntimeUnavailableError",
    "SubnetProfile",
    "Timings",
    "Tolerance",
    "build_profile",
    "check_runtime",
    "choose_runtime",
    "energy",
    "energy_source",
    "features",
    "get_runtime",
    "interleaved_samples",
    "interleaved_timings",
    "latency",
    "latency_table",
    "list_runtimes",
    "macs",
    "measure_interleaved",
    "params",
    "peak_memory",
    "prepare",
    "prepare_module",
    "prepare_onnx",
    "profile_json_schema",
    "register_runtime",
    "release_all",
    "subnet_blocks",
    "supported_percentile",
]


def __getattr__(name: str) -> Any:
    if name == "BACKENDS":  # the earlier fixed list; runtimes are a registry now
        import warnings

        warnings.warn("tailor.cost.BACKENDS is deprecated; use tailor.cost.list_runtimes()", DeprecationWarning, stacklevel=2)
        return tuple(list_runtimes())
    raise AttributeError(f"module 'tailor.cost' has no attribute {name!r}")
