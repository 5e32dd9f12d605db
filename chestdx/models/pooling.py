"""Feature pooling: slice feature vectors become one study's feature vector before the head.

``mean_features`` is ai-corona's fixed pooling; ``AttentionMIL`` a learned alternative.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn


def mean_features(features: torch.Tensor) -> torch.Tensor:
    """Average of slice feature vectors (ai-corona's study pooling).

    Args:
        features: ``(S, D)`` for one study or ``(B, S, D)`` for a batch (tensor or array).

    Returns:
        ``(D,)`` or ``(B, D)``: the mean over the slice axis.

    Example:
        >>> mean_features(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        tensor([2., 3.])
    """
    return features.mean(-2)


FEATURE_AGGREGATORS: dict[str, Callable] = {"mean-features": mean_features}


class AttentionMIL(nn.Module):
    """Gated attention pooling of slice features (Ilse et al., 2018), trainable.

    For slice features ``h_s``, ``a_s = w^T (tanh(V h_s) * sigmoid(U h_s))``, the weights
    are ``softmax(a)`` over the slices and the pooled feature is ``sum_s weight_s h_s``.

    Args:
        in_dim: feature size ``D``.
        hidden: size of the attention projections.
        dropout: dropout on the projections during training.

    Example:
        >>> pool = AttentionMIL(8)
        >>> pooled, weights = pool(torch.randn(2, 5, 8))
        >>> pooled.shape, weights.shape
        (torch.Size([2, 8]), torch.Size([2, 5]))
    """

    def __init__(self, in_dim: int, hidden: int = 128, dropout: float = 0.0) -> None:
        super().__init__()
        self.value = nn.Sequential(nn.Linear(in_dim, hidden), nn.Tanh(), nn.Dropout(dropout))
        self.gate = nn.Sequential(nn.Linear(in_dim, hidden), nn.Sigmoid(), nn.Dropout(dropout))
        self.score = nn.Linear(hidden, 1)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: features: ``(S, D)`` (one study) or ``(B, S, D)``.

        Returns:
            ``(pooled (B, D), weights (B, S))``; each row of ``weights`` sums to 1.
        """
        if features.ndim == 2:
            features = features.unsqueeze(0)
        logits = self.score(self.value(features) * self.gate(features)).squeeze(-1)
        weights = torch.softmax(logits, dim=1)
        return torch.einsum("bs,bsd->bd", weights, features), weights
