"""Serving one supernet under load: profiles, policies, the EDF queue and workloads shared by two subsystems.

`tailor.serve.sim` is the discrete-event simulator and the offline upper bound; `tailor.serve.server` is the
live Open Inference Protocol server. See README.md. `Profile` is `tailor.cost.Profile` (re-exported);
`ServingProfile` is the view policies use; the default policy is `DEFAULT_POLICY` (DrainFit).
"""

from tailor.cost.profile import Profile
from tailor.serve import traces
from tailor.serve.policies import (
    DEFAULT_POLICY,
    Decision,
    DrainFit,
    FixedSubnet,
    INFaaS,
    MaxAcc,
    MaxBatch,
    Policy,
    PolicyError,
    QueueView,
    SlackFit,
    make_policy,
    policy_names,
    register_policy,
)
from tailor.serve.profile import ServingProfile, load_profile, synthetic_profile
from tailor.serve.queue import EDFQueue, QueueError, Request
from tailor.serve.sim.bound import UpperBound, upper_bound
from tailor.serve.sim.simulate import SimResult, SimulationError, simulate
from tailor.serve.traces import Trace, TraceError

__all__ = [
    "DEFAULT_POLICY",
    "Decision",
    "DrainFit",
    "EDFQueue",
    "FixedSubnet",
    "INFaaS",
    "MaxAcc",
    "MaxBatch",
    "Policy",
    "PolicyError",
    "Profile",
    "QueueError",
    "QueueView",
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
    "policy_names",
    "register_policy",
    "simulate",
    "synthetic_profile",
    "traces",
    "upper_bound",
]
