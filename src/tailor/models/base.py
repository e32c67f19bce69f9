"""`PooledClassifierModel`: the shared head of models ending in global pooling + one linear layer."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tailor.ops import ElasticLinear, ElasticModel


def fresh_classifier(old: ElasticLinear, num_classes: int) -> ElasticLinear:
    """A new classifier reading what `old` read, for `num_classes` outputs, on `old`'s device and dtype."""
    return ElasticLinear(old.in_features, num_classes, in_dim=old.in_dim).to(old.weight.device, old.weight.dtype)


class PooledClassifierModel(ElasticModel):
    """Uniform interface for models whose head is global average pooling then `self.fc`.

    Subclasses define `forward_features` and set `fc` (an `ElasticLinear`), `num_features`,
    `num_classes`.
    """

    fc: ElasticLinear
    num_features: int
    num_classes: int

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global average pool and classifier (`pre_logits=True`: the pooled features)."""
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a fresh one for `num_classes` outputs (other weights kept)."""
        self.num_classes = num_classes
        self.fc = fresh_classifier(self.fc, num_classes)
        self.invalidate_plans()
