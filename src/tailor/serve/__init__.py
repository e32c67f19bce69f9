"""Serving one supernet under load: profiles, policies (SlackFit and baselines), EDF queue, workloads, simulator.

See README.md. `Profile` is `tailor.cost.Profile` (re-exported); `ServingProfile` is the view policies use.
"""

from tailor.cost.profile import Profile
from tailor.serve import traces
from tailor.serve.policies import (
    Decision,
    FixedSubnet,
    INFaaS,
    MaxAcc,
    MaxBatch,
    Policy,
    PolicyError,
    SlackFit,
    make_policy,
)
from tailor.serve.profile import ServingProfile, load_profile, synthetic_profile
from tailor.serve.queue import EDFQueue, QueueError, Request
from tailor.serve.simulate import SimResult, SimulationError, UpperBound, simulate, upper_bound
from tailor.serve.traces import Trace, TraceError

__all__ = [
    "Decision",
    "EDFQueue",
    "FixedSubnet",
    "INFaaS",
    "MaxAcc",
    "MaxBatch",
    "Policy",
    "PolicyError",
    "Profile",
    "QueueError",
    "Request",
    "ServingProfile",
    "SimResult",
    "SimulationError",
    "SlackFit",
    "Trace",
    "TraceError",
    "UpperBound",
    "load_profile",
    "make_policy",
    "simulate",
    "synthetic_profile",
    "traces",
    "upper_bound",
]
