"""Serving on a Ray cluster: workers as Ray actors owned by the one ingress, scaled by tailor's signals.

See README.md. Ray is optional (`pip install 'tailor[ray]'`); nothing here imports it until a cluster is used.
"""

from tailor.serve.cluster.executor import ClusterError, RayExecutor, WorkerActorBody, checkpoint_files
from tailor.serve.cluster.scaler import Autoscaler, ScalingPolicy, ScalingSignals

__all__ = ["Autoscaler", "ClusterError", "RayExecutor", "ScalingPolicy", "ScalingSignals", "WorkerActorBody",
           "checkpoint_files"]
