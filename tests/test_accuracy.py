"""Accuracy against human labels: inter-ocular NME, k-fold verification, expression accuracy."""

import numpy as np
import pytest

from faceptor_edge.errors import UserError
from faceptor_edge.evaluation import accuracy


def _face(rng, iod=40.0):
    points = rng.uniform(0, 100, (68, 2))
    points[36], points[45] = (30.0, 50.0), (30.0 + iod, 50.0)
    return points


def test_nme_of_shifted_copy_is_shift_over_inter_ocular_distance():
    rng = np.random.default_rng(0)
    truth = np.stack([_face(rng, 40.0), _face(rng, 100.0)])
    nme = accuracy.nme_inter_ocular(truth + [3.0, 4.0], truth)  # every point off by 5 px
    np.testing.assert_allclose(nme, [5 / 40, 5 / 100])
    np.testing.assert_allclose(accuracy.nme_inter_ocular(truth, truth), [0.0, 0.0])


def test_nme_uses_only_the_true_eye_corners():
    rng = np.random.default_rng(1)
    truth = _face(rng)[None]
    pred = truth.copy()
    pred[0, 45] += [40.0, 0.0]  # a wrong prediction must not change the normaliser
    np.testing.assert_allclose(accuracy.nme_inter_ocular(pred, truth), [40 / 68 / 40])


def test_nme_rejects_bad_shapes():
    with pytest.raises(UserError, match="B×68×2"):
        accuracy.nme_inter_ocular(np.zeros((1, 5, 2)), np.zeros((1, 5, 2)))
    with pytest.raises(UserError, match="B×68×2"):
        accuracy.nme_inter_ocular(np.zeros((2, 68, 2)), np.zeros((1, 68, 2)))
    with pytest.raises(UserError, match="36 and 45"):
        accuracy.nme_inter_ocular(np.zeros((1, 68, 2)), np.zeros((1, 68, 2)))


def test_verification_separable_clusters_is_perfect():
    rng = np.random.default_rng(2)
    people = [f"p{k}" for k in range(5) for _ in range(11)]
    centres = np.eye(16)[:5] * 10
    embeddings = centres[[int(p[1]) for p in people]] + rng.normal(0, 0.5, (55, 16))
    result = accuracy.verification_accuracy(embeddings, people)
    assert result["accuracy"] == 1.0
    assert result["pairs"] == 55 * 54 // 2 and result["positive_pairs"] == 5 * 55
    assert 0.0 < result["threshold"] < 1.0  # between orthogonal clusters and near-identical members


def test_verification_random_embeddings_is_chance():
    rng = np.random.default_rng(3)
    people = ["a"] * 30 + ["b"] * 30  # 870 same vs 900 different pairs: chance ≈ 0.5
    result = accuracy.verification_accuracy(rng.normal(size=(60, 64)), people)
    assert result["positive_pairs"] == 870 and result["pairs"] == 1770
    assert 0.4 < result["accuracy"] < 0.6


def test_threshold_is_chosen_out_of_fold():
    # In-sample any threshold in (0.6, 0.9) gets 7/8 right. Out of fold, fold 0 learns 0.76 from
    # fold 1 and misses its 0.5 positive; fold 1 learns 0.3 from fold 0 and misses its 0.6 negative.
    similarity = np.array([0.9, 0.5, 0.1, 0.05, 0.95, 0.92, 0.6, 0.0])
    same = np.array([True, True, False, False, True, True, False, False])
    fold = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    accuracies, thresholds = accuracy._out_of_fold(similarity, same, fold, 2)
    np.testing.assert_allclose(thresholds, [0.76, 0.3])
    np.testing.assert_allclose(accuracies, [0.75, 0.75])


def test_verification_rejects_unusable_input():
    with pytest.raises(UserError, match="identities"):
        accuracy.verification_accuracy(np.zeros((3, 4)), ["a", "b"])
    with pytest.raises(UserError, match="same- and different-person"):
        accuracy.verification_accuracy(np.ones((4, 4)), ["a", "b", "c", "d"])  # no same-person pair


def test_expression_accuracy():
    assert accuracy.expression_accuracy(["Happy", "Sad", "Anger"], ["Happy", "Fear", "Anger"]) == pytest.approx(2 / 3)
    with pytest.raises(UserError, match="equal"):
        accuracy.expression_accuracy(["Happy"], [])
