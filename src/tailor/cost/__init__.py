"""What subnets cost (params, MACs, memory, latency, energy), profiles and latency predictors (see README.md)."""

from tailor.cost.measure import (
    BACKENDS,
    LatencyStats,
    MemoryStats,
    energy,
    energy_source,
    latency,
    latency_table,
    macs,
    params,
    peak_memory,
)
from tailor.cost.predict import ErrorReport, LatencyPredictor, LayerTable, features
from tailor.cost.profile import SCHEMA, Profile, SubnetProfile, build_profile

__all__ = [
    "BACKENDS",
    "SCHEMA",
    "ErrorReport",
    "LatencyPredictor",
    "LatencyStats",
    "LayerTable",
    "MemoryStats",
    "Profile",
    "SubnetProfile",
    "build_profile",
    "energy",
    "energy_source",
    "features",
    "latency",
    "latency_table",
    "macs",
    "params",
    "peak_memory",
]
