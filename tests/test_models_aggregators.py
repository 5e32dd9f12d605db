"""Study-level aggregators on hand-made probability sequences with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from chestdx.errors import ChestDxError
from chestdx.models.aggregators import AGGREGATORS, majority_vote_override, mean_prob, top_k_mean
from chestdx.models.pooling import FEATURE_AGGREGATORS, AttentionMIL, mean_features

# columns: normal, pneumonia, covid
HEALTHY = [0.8, 0.15, 0.05]


def test_mean_prob():
    np.testing.assert_allclose(mean_prob([[0.8, 0.2], [0.4, 0.6], [0.3, 0.7]]), [0.5, 0.5])


def test_top_k_mean_ranks_by_not_first_class():
    p = [[0.9, 0.05, 0.05], [0.1, 0.1, 0.8], [0.3, 0.6, 0.1], [0.95, 0.0, 0.05]]
    # 1 - p[:, 0] = 0.1, 0.9, 0.7, 0.05 -> rows 1 and 2
    np.testing.assert_allclose(top_k_mean(p, k=2), [0.2, 0.35, 0.45])


def test_top_k_mean_positive_index_and_short_study():
    p = [[0.1, 0.8, 0.1], [0.3, 0.1, 0.6], [0.2, 0.5, 0.3]]
    np.testing.assert_allclose(top_k_mean(p, k=1, positive_index=2), [0.3, 0.1, 0.6])
    np.testing.assert_allclose(top_k_mean(p, k=10), mean_prob(p))


def test_top_k_mean_equal_scores_keep_earlier_slice():
    p = [[0.9, 0.05, 0.05], [0.5, 0.3, 0.2], [0.5, 0.1, 0.4]]
    np.testing.assert_allclose(top_k_mean(p, k=1), [0.5, 0.3, 0.2])


def test_vote_healthy_majority_overridden_by_confident_covid_group():
    p = [HEALTHY, HEALTHY, [0.03, 0.02, 0.95]]
    out = majority_vote_override(p)
    assert out.argmax() == 2
    np.testing.assert_allclose(out, [0.03, 0.02, 0.95])


def test_vote_all_healthy_below_threshold_stays_healthy():
    p = [HEALTHY, [0.6, 0.1, 0.3], [0.2, 0.1, 0.7]]
    out = majority_vote_override(p)
    assert out.argmax() == 0
    np.testing.assert_allclose(out, [0.7, 0.125, 0.175])  # mean of the two healthy-voting groups


def test_vote_threshold_is_strict_and_ignores_healthy_confidence():
    assert majority_vote_override([HEALTHY, HEALTHY, [0.05, 0.05, 0.9]]).argmax() == 0
    assert majority_vote_override([[0.95, 0.03, 0.02], [0.1, 0.1, 0.8], [0.2, 0.1, 0.7]]).argmax() == 2


def test_vote_override_picks_most_confident_sick_class():
    p = [HEALTHY, [0.03, 0.92, 0.05], [0.01, 0.02, 0.97], [0.04, 0.93, 0.03]]
    out = majority_vote_override(p)
    assert out.argmax() == 2
    np.testing.assert_allclose(out, [0.01, 0.02, 0.97])


def test_vote_tie_broken_by_mean_probability():
    covid_wins = [[0.5, 0.1, 0.4], [0.5, 0.1, 0.4], [0.1, 0.1, 0.8], [0.2, 0.1, 0.7]]
    out = majority_vote_override(covid_wins)
    assert out.argmax() == 2
    np.testing.assert_allclose(out, [0.15, 0.1, 0.75])
    healthy_wins = [[0.85, 0.1, 0.05], [0.8, 0.1, 0.1], [0.4, 0.1, 0.5], [0.4, 0.15, 0.45]]
    assert majority_vote_override(healthy_wins).argmax() == 0


def test_vote_binary_and_custom_healthy_index():
    assert majority_vote_override([[0.7, 0.3], [0.6, 0.4], [0.08, 0.92]]).argmax() == 1
    # healthy in the last column: a confident column-0 group overrides
    assert majority_vote_override([[0.3, 0.7], [0.2, 0.8], [0.95, 0.05]], healthy_index=1).argmax() == 0


def test_empty_study_is_a_user_error():
    with pytest.raises(ChestDxError, match="no slices"):
        mean_prob(np.zeros((0, 2)))


def test_registry_names():
    assert set(AGGREGATORS) == {"mean-prob", "top-k-mean", "majority-vote"}
    p = np.array([[0.2, 0.8], [0.6, 0.4]])
    for fn in AGGREGATORS.values():
        out = fn(p)
        assert out.shape == (2,)
        assert out.sum() == pytest.approx(1.0)
    assert FEATURE_AGGREGATORS["mean-features"] is mean_features


def test_mean_features_tensor_and_array():
    f = torch.arange(12, dtype=torch.float32).view(2, 3, 2)
    torch.testing.assert_close(mean_features(f), torch.tensor([[2.0, 3.0], [8.0, 9.0]]))
    np.testing.assert_allclose(mean_features(np.array([[1.0, 2.0], [3.0, 6.0]])), [2.0, 4.0])


def test_attention_mil_shapes_and_weights():
    torch.manual_seed(0)
    pool = AttentionMIL(8, hidden=16)
    feats = torch.randn(3, 5, 8)
    pooled, weights = pool(feats)
    assert pooled.shape == (3, 8) and weights.shape == (3, 5)
    torch.testing.assert_close(weights.sum(1), torch.ones(3))
    assert (weights > 0).all()
    torch.testing.assert_close(pooled, (weights.unsqueeze(-1) * feats).sum(1))
    one, w1 = pool(feats[0])
    assert one.shape == (1, 8)
    torch.testing.assert_close(w1[0], weights[0])


def test_attention_mil_learns_to_attend_to_the_key_slice():
    torch.manual_seed(0)
    n, s, d = 32, 6, 4
    feats = torch.randn(n, s, d) * 0.5
    labels = torch.arange(n) % 2
    key = torch.randint(0, s, (n,))
    feats[labels == 1, key[labels == 1], 0] = 3.0
    pool, clf = AttentionMIL(d, hidden=8), torch.nn.Linear(d, 2)
    opt = torch.optim.Adam([*pool.parameters(), *clf.parameters()], lr=0.05)
    for _ in range(100):
        pooled, _ = pool(feats)
        loss = torch.nn.functional.cross_entropy(clf(pooled), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    _, weights = pool(feats)
    positive = labels == 1
    key_weight = weights[positive, key[positive]]
    assert key_weight.mean() > 0.8  # uniform attention would give 1/6
    assert loss.item() < 0.05
