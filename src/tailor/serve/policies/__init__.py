"""Serving policies, one file each, registered by name; the contract is in `base.py` (see README.md).

Importing this package imports every module in it, each registering its policy (a new policy is one file);
`make_policy(name, profile, **options)` builds one.
"""

from tailor.plugins import import_modules
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

import_modules(__name__, __path__)  # each policy file registers its policy

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
    "make_policy",
    "policy_names",
    "register_policy",
]
