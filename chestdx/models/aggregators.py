"""Study-level aggregation: how per-slice (or per-group) outputs become one study's answer.

Probability aggregators take class probabilities ``(n, K)`` of the ``n`` slices or groups of
one study (rows sum to 1, columns in the order of ``config.classes``) and return the
study's probabilities ``(K,)``; ``AGGREGATORS`` maps the names used in
``RecipeConfig.aggregator`` to them (NumPy only). Feature pooling before the classifier
head (``"mean-features"``) is in `chestdx.models.pooling`.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from chestdx.errors import ChestDxError


def _check_probs(p) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"expected probabilities of shape (n, K), got {p.shape}")
    if p.shape[0] == 0:
        raise ChestDxError(
            "no slices left to aggregate: the study has no usable slice after selection; "
            "check that it covers the lungs or relax the recipe's slice filter"
        )
    return p


def mean_prob(p) -> np.ndarray:
    """Mean of the slice probabilities.

    Args:
        p: probabilities ``(n, K)``.

    Returns:
        ``(K,)``, the column means.

    Example:
        >>> mean_prob([[0.8, 0.2], [0.4, 0.6]])
        array([0.6, 0.4])
    """
    return _check_probs(p).mean(axis=0)


def top_k_mean(p, k: int = 3, positive_index: int | None = None) -> np.ndarray:
    """Mean probabilities of the ``k`` most abnormal slices.

    Each slice is scored by ``p[:, positive_index]`` or, when ``positive_index`` is None,
    by ``1 - p[:, 0]`` (the probability of any class but the first, "normal" one). The
    ``min(k, n)`` slices with the highest scores are kept (on equal scores the earlier slice
    wins) and their full probability rows are averaged.

    Args:
        p: probabilities ``(n, K)``.
        k: number of slices averaged.
        positive_index: column that ranks the slices; None for "not the first class".

    Returns:
        ``(K,)``, the mean of the kept rows.

    Example:
        >>> top_k_mean([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.7, 0.3]], k=2)
        array([0.3, 0.7])
    """
    p = _check_probs(p)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    score = 1.0 - p[:, 0] if positive_index is None else p[:, positive_index]
    keep = np.argsort(-score, kind="stable")[:k]
    return p[keep].mean(axis=0)


def majority_vote_override(p_groups, threshold: float = 0.9, healthy_index: int = 0) -> np.ndarray:
    """Kara et al.'s study decision from per-group probabilities.

    Rule, in order:

    1. Override: if any group gives a non-healthy class a probability above ``threshold``
       (strictly), the decision is the non-healthy class with the highest such
       probability, whatever the vote.
    2. Otherwise each group votes for its arg-max class and the class with most votes wins;
       a tie between classes is broken by the higher mean probability over all groups
       (then by the lower class index).

    The returned vector is the mean probability of the groups that support the decision
    (the groups over the threshold for an override, the groups that voted for the winner
    otherwise), so its arg-max is the decision and its values stay a graded score.

    Args:
        p_groups: probabilities ``(g, K)`` of the ``g`` groups of one study.
        threshold: probability above which a non-healthy group overrides the vote.
        healthy_index: column of the healthy / normal class.

    Returns:
        ``(K,)``; ``argmax`` is the study's decision.

    Example:
        >>> majority_vote_override([[0.8, 0.1, 0.1], [0.7, 0.2, 0.1], [0.03, 0.02, 0.95]])
        array([0.03, 0.02, 0.95])
    """
    p = _check_probs(p_groups)
    sick = np.ones(p.shape[1], dtype=bool)
    sick[healthy_index] = False
    over = (p > threshold) & sick
    if over.any():
        winner = int(np.argmax(np.where(over, p, -np.inf).max(axis=0)))
        return p[over[:, winner]].mean(axis=0)
    votes = np.argmax(p, axis=1)
    counts = np.bincount(votes, minlength=p.shape[1])
    tied = np.flatnonzero(counts == counts.max())
    winner = int(tied[np.argmax(p.mean(axis=0)[tied])])
    return p[votes == winner].mean(axis=0)


AGGREGATORS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "mean-prob": mean_prob,
    "top-k-mean": top_k_mean,
    "majority-vote": majority_vote_override,
}
