"""The paper's evaluation protocols against hand-computed values, including the details that change
the number: the NME's normalising distance, whole-set F1 against a per-image mean, flip
averaging before the L2 norm, and thresholds picked on the other folds."""

import numpy as np
import pytest

from faceptor_edge.backends import Backend
from faceptor_edge.errors import UserError
from faceptor_edge.evaluation.paper_sets import protocols
from faceptor_edge.evaluation.paper_sets.runner import mirrored, predict
from faceptor_edge.evaluation.paper_sets.samples import Sample
from faceptor_edge.evaluation.paper_sets.scoring import (
    AgeScore,
    AttributeScore,
    LandmarkScore,
    ParsingScore,
    VerificationScore,
    centres,
    corners,
    given,
)
from faceptor_edge.recipe import InputRecipe
from faceptor_edge.tasks import BIATTR_CELEBA, RECOG_MS1MV3


def _face_68():
    """68 points: outer eye corners 36, 45 at 10 px apart; the eye centres (36–41, 42–47) 8 px apart."""
    truth = np.zeros((68, 2))
    truth[36:42] = [[0, 0], [2, 0], [1, 0], [1, 0], [1, 0], [1, 0]]  # mean x = 1
    truth[42:48] = [[9, 0], [9, 0], [9, 0], [9, 0], [8, 0], [10, 0]]  # mean x = 9
    truth[45] = [10, 0]
    truth[44] = [8, 0]  # keeps the right eye's mean at 9
    return truth


def test_nme_depends_on_the_normalising_distance():
    truth = _face_68()
    assert protocols.corner_distance(truth, 36, 45) == 10.0
    assert protocols.centre_distance(truth, range(36, 42), range(42, 48)) == 8.0
    score = LandmarkScore({"io": corners(36, 45), "ip": centres(range(36, 42), range(42, 48))}, ("full",))
    score.add(0, Sample("a", b"", truth, tags=("full",)), truth + [3.0, 4.0])  # every point 5 px off
    assert score.result() == {"full/nme_io": pytest.approx(50.0), "full/nme_ip": pytest.approx(62.5)}


def test_nme_is_a_mean_over_faces_of_per_face_ratios_and_splits_count_their_own_faces():
    truth = _face_68()
    score = LandmarkScore({"io": corners(36, 45)}, ("full", "common", "challenge"))
    score.add(0, Sample("a", b"", truth, tags=("common", "full")), truth + [1.0, 0.0])  # 1/10
    score.add(1, Sample("b", b"", 2 * truth, tags=("common", "full")), 2 * truth + [0.0, 1.0])  # 1/20
    out = score.result()
    # The mean of per-face NMEs (7.5 %), not the total error over the total distance (2/30 = 6.67 %).
    assert out["full/nme_io"] == pytest.approx(7.5) and out["common/nme_io"] == pytest.approx(7.5)
    assert out["challenge/nme_io"] is None and "challenge" in score.reasons["challenge/nme_io"]


def test_aflw_box_normalisation_reads_the_dataset_box_size():
    truth = np.zeros((19, 2))
    truth[:, 0] = np.arange(19)
    score = LandmarkScore({"box": given("box")}, ("full",), ("box", 0.07))
    score.add(0, Sample("a", b"", truth, norm={"box": 200.0}, tags=("full",)), truth + [0.0, 2.0])
    out = score.result()
    assert out["full/nme_box"] == pytest.approx(1.0)  # 2 px / 200 px
    assert out["full/fr_0.07"] == 0.0 and out["full/auc_0.07"] == pytest.approx(100 * (1 - 0.01 / 0.07), abs=0.2)


def test_auc_and_failure_rate_of_the_ced_curve():
    assert protocols.auc_fr([0.0], 0.1) == pytest.approx((1.0, 0.0))
    assert protocols.auc_fr([0.2], 0.1) == pytest.approx((0.0, 1.0))
    assert protocols.auc_fr([0.0, 0.2], 0.1) == pytest.approx((0.5, 0.5))
    auc, fr = protocols.auc_fr([0.05], 0.1)
    assert fr == 0.0 and auc == pytest.approx(0.5, abs=2e-3)  # a step at half the threshold
    assert protocols.auc_fr([0.1], 0.1)[1] == 0.0  # NME at the threshold counts as success (CED is ≤)
    # Against a direct count at every CED sample, integrated by Simpson's rule.
    from scipy.integrate import simpson

    nmes = np.array([0.012, 0.034, 0.034, 0.061, 0.09, 0.15])
    xs = np.arange(0, 0.1 + 1e-4, 1e-4)
    ced = np.array([np.mean(nmes <= x) for x in xs])
    assert protocols.auc_fr(nmes, 0.1) == pytest.approx((simpson(ced, x=xs) / 0.1, 1 - ced[-1]))


def test_parsing_f1_is_one_histogram_over_the_whole_set_not_a_mean_of_images():
    score = ParsingScore(("background", "skin"))
    # Image A: its single skin pixel found (F1 = 1). Image B: 3 skin pixels, none found (F1 = 0).
    score.add(0, Sample("a", b"", lambda: np.array([[1, 0, 0, 0]], np.uint8)), np.array([[1, 0, 0, 0]], np.uint8))
    score.add(1, Sample("b", b"", lambda: np.array([[1, 1, 1, 0]], np.uint8)), np.zeros((1, 4), np.uint8))
    out = score.result()
    assert out["f1_fg_mean"] == pytest.approx(40.0)  # 2·1 / (1 predicted + 4 true); a per-image mean gives 50
    assert out["f1/background"] == pytest.approx(100 * 8 / 11)  # 2·4 / (7 predicted + 4 true), not in fg_mean


def test_parsing_fg_mean_leaves_out_a_class_absent_everywhere_and_says_so():
    score = ParsingScore(("background", "skin", "hat"))
    score.add(0, Sample("a", b"", lambda: np.array([[1, 0]], np.uint8)), np.array([[1, 1]], np.uint8))
    out = score.result()
    assert out["f1/hat"] is None and out["f1_fg_mean"] == pytest.approx(100 * 2 / 3)
    assert "hat" in score.reasons["f1_fg_mean"]
    with pytest.raises(UserError, match="label map"):
        score.add(1, Sample("b", b"", lambda: np.zeros((2, 2), np.uint8)), np.zeros((1, 2), np.uint8))


def test_age_mae_cs_and_epsilon_error():
    score = AgeScore()
    for i, (pred, truth) in enumerate([(10, 12), (20, 20), (33, 25)]):
        score.add(i, Sample(str(i), b"", truth), float(pred))
    out = score.result()
    assert out["mae"] == pytest.approx(10 / 3)
    assert out["cs_5"] == pytest.approx(200 / 3)  # the 8-year error is outside 5
    expected = 1 - np.mean([np.exp(-4 / 18), 1.0, np.exp(-64 / 18)])  # σ = 3: 2σ² = 18
    assert out["epsilon_error"] == pytest.approx(expected)


def test_attribute_mean_accuracy_averages_per_attribute_accuracies():
    names = ("a", "b", "c")
    score = AttributeScore(names)
    score.add(0, Sample("x", b"", np.array([1, 1, 1])), np.array([True, False, True]))
    score.add(1, Sample("y", b"", np.array([1, 0, 1])), np.array([False, False, True]))
    out = score.result()
    assert out["accuracy/a"] == 50.0 and out["accuracy/b"] == 50.0 and out["accuracy/c"] == 100.0
    assert out["mean_accuracy"] == pytest.approx(200 / 3)


def test_attributes_round_sigmoid_so_a_zero_logit_is_absent():
    backend = Backend("fake", (BIATTR_CELEBA,), lambda x: {"biattr_celeba": np.r_[0.0, 1e-3, -1e-3, [5] * 37][None]},
                      InputRecipe(size=32))  # fmt: skip
    present = predict(backend, backend.recipe, BIATTR_CELEBA, np.zeros((32, 32, 3), np.uint8), None, None, flip=False)
    assert present[:3].tolist() == [False, True, False]


def test_kfold_splits_are_sklearns_contiguous_folds():
    for count in (10, 23, 600, 6000):
        splits = protocols.kfold_splits(count)
        assert np.concatenate(splits).tolist() == list(range(count))
        assert [len(s) for s in splits] == [count // 10 + (k < count % 10) for k in range(10)]
    sklearn = pytest.importorskip("sklearn.model_selection")
    for count in (23, 601):
        theirs = [test for _, test in sklearn.KFold(10, shuffle=False).split(np.arange(count))]
        assert all(np.array_equal(a, b) for a, b in zip(protocols.kfold_splits(count), theirs))
    with pytest.raises(UserError, match="at least 10 pairs"):
        protocols.kfold_splits(9)


def test_verification_picks_each_folds_threshold_on_the_other_nine():
    same = np.tile([True, False], 10)  # 20 pairs: folds of 2, one same and one different pair each
    distances = np.where(same, 0.505, 1.505)
    distances[0] = 1.205  # a hard same-person pair in fold 0
    out = protocols.verification(distances, same)
    # Fold 0 trains on clean folds: threshold 0.51, so its hard pair fails (0.5). The other folds train
    # with the hard pair and pick 1.21, which is perfect on them.
    assert out["accuracy"] == pytest.approx(0.95)
    assert out["std"] == pytest.approx(0.15)
    assert out["threshold"] == pytest.approx((0.51 + 9 * 1.21) / 10)
    # One threshold for all pairs (the best on all of them, 1.21) would score 1.0: the folds matter.
    assert np.mean((distances < 1.21) == same) == 1.0


def _asymmetric_backend():
    """A recognition 'model' whose raw embedding is [3·mean(left half), mean(right half)]."""

    def run(inputs):
        image = inputs["image"]
        half = image.shape[-1] // 2
        return {"recog_ms1mv3": np.stack([3 * image[..., :half].mean((1, 2, 3)), image[..., half:].mean((1, 2, 3))], 1)}

    return Backend("fake", (RECOG_MS1MV3,), run, InputRecipe(size=32, mean=(0, 0, 0), std=(1, 1, 1)))


def test_flip_adds_the_mirrored_crops_raw_embedding_before_normalising():
    backend = _asymmetric_backend()
    image = np.zeros((32, 32, 3), np.uint8)
    image[:, :16] = 255  # left half white
    plain = predict(backend, backend.recipe, RECOG_MS1MV3, image, None, None, flip=False)
    flipped = predict(backend, backend.recipe, RECOG_MS1MV3, image, None, None, flip=True)
    assert plain == pytest.approx([1.0, 0.0])  # raw [3, 0]
    assert flipped == pytest.approx(np.array([3.0, 1.0]) / np.sqrt(10))  # raw [3, 0] + mirror [0, 1]
    # Averaging the normalised embeddings instead would give [1, 1]/√2: a different number.
    assert not np.allclose(flipped, np.array([1.0, 1.0]) / np.sqrt(2))


def test_mirrored_inputs_flip_images_and_crop_boxes():
    recipe = InputRecipe(size=8, pixels="uint8")
    inputs = {
        "image": np.arange(2 * 8 * 8 * 3, dtype=np.uint8).reshape(2, 8, 8, 3),
        "box": np.array([[1, 2, 3, 4.0]] * 2),
    }
    out = mirrored(inputs, recipe)
    assert np.array_equal(out["image"][:, :, 0], inputs["image"][:, :, 7]) and out["box"][0].tolist() == [5, 2, 7, 4]
    planar = {"image": np.arange(3 * 4 * 4, dtype=np.float32).reshape(1, 3, 4, 4)}
    assert np.array_equal(mirrored(planar, InputRecipe(size=4 * 4))["image"][0, :, :, 0], planar["image"][0, :, :, 3])


def test_verification_score_uses_squared_l2_of_complete_pairs_only():
    score = VerificationScore()
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((24, 4))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    for i, vector in enumerate(vectors):
        if i != 5:  # image 5 corrupt: pair 2 cannot be scored
            score.add(i, Sample(str(i), b"", i % 4 < 2), vector)
    distances, _, left_out = score.pairs()
    assert left_out == 1 and len(distances) == 11
    assert distances[0] == pytest.approx(np.sum((vectors[0] - vectors[1]) ** 2))
    assert score.result()["accuracy"] is not None and "1 pairs" in score.reasons["accuracy"]
