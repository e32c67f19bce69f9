"""Serving policies, one file each, registered by name; the contract is in `base.py` (see README.md).

Importing this package registers every built-in policy; `make_policy(name, profile, **options)` builds one.
"""

from tailor.serve.policies import drainfit, fixed, infaas, maxacc, maxbatch, slackfit
from tailor.serve.policies.base import (
    DEFAULT_POLICY,
    Decision,
    Policy,
    PolicyError,
    QueueView,
    make_policy,
    policy_names,
    register_policy,
)
from tailor.serve.policies.drainfit import DrainFit
from tailor.serve.policies.fixed import FixedSubnet
from tailor.serve.policies.infaas import INFaaS
from tailor.serve.policies.maxacc import MaxAcc
from tailor.serve.policies.maxbatch import MaxBatch
from tailor.serve.policies.slackfit import SlackFit

__all__ = [
    "DEFAULT_POLICY",
    "Decision",
    "DrainFit",
    "FixedSubnet",
    "INFaaS",
    "MaxAcc",
    "MaxBatch",
    "Policy",
    "PolicyError",
    "QueueView",
    "SlackFit",
    "drainfit",
    "fixed",
    "infaas",
    "make_policy",
    "maxacc",
    "maxbatch",
    "policy_names",
    "register_policy",
    "slackfit",
]
