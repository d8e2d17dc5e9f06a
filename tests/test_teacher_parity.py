"""The teacher reproduces the official implementation's outputs on every variant."""

import numpy as np
import pytest
import torch

from faceptor_edge import load_teacher
from faceptor_edge.tasks import heatmap_key
from faceptor_edge.teacher import official_layout
from tests.fixtures import VARIANTS, fixture_input, manifest_layout, manifest_state, reference

TOL = {"atol": 1e-4, "rtol": 1e-4}


@pytest.fixture(scope="module", params=VARIANTS)
def run(request):
    variant = request.param
    teacher = load_teacher(manifest_state(variant))
    with torch.no_grad():
        outputs = teacher.forward_raw(fixture_input(112), fixture_input(512), feature_layers=range(12))
    return variant, teacher, {k: v.numpy() for k, v in outputs.items()}, reference(variant)


@pytest.mark.parametrize("variant", VARIANTS)
def test_layout_matches_official_manifest(variant):
    assert official_layout(variant) == manifest_layout(variant)


def test_variant_and_task_names(run):
    variant, teacher, _, ref = run
    assert teacher.variant == variant
    assert not teacher.training
    expected = [key.split(".")[0] for key in ref if key.endswith((".head_output", ".argmax", ".landmark"))]
    assert list(teacher.task_names) == list(dict.fromkeys(expected))


def test_encoder_features(run):
    _, _, out, ref = run
    np.testing.assert_allclose(out["encoder/face112/layer11"], ref["features_112_layer11"], **TOL)
    np.testing.assert_allclose(out["encoder/face112/layer5"], ref["features_112_layer5"], **TOL)
    np.testing.assert_allclose(out["encoder/face512/layer11"][:, :, :4, :4], ref["features_512_layer11"], **TOL)


def test_head_outputs(run):
    _, teacher, out, ref = run
    for task in teacher.config.tasks:
        name = task.name
        assert out[name].shape[1:] == task.raw_shape, name
        if task.task_type == "parsing":
            np.testing.assert_allclose(out[name][:, ::16, ::16], ref[f"{name}.logits_crop"], **TOL, err_msg=name)
            equal = (out[name].argmax(-1) == ref[f"{name}.argmax"]).mean()
            assert equal >= 0.9999, f"{name}: {equal:.6f} equal argmax pixels"
        elif task.task_type == "landmarks":
            np.testing.assert_allclose(out[name], ref[f"{name}.landmark"], **TOL, err_msg=name)
            heatmap = out[heatmap_key(name)]
            assert heatmap.shape[1:] == (task.num_queries, 128, 128)
            acted = 1.0 / (1.0 + np.exp(-heatmap[:, :, :8, :8]))
            np.testing.assert_allclose(acted, ref[f"{name}.heatmap_acted_crop"], **TOL, err_msg=name)
        else:
            np.testing.assert_allclose(out[name], ref[f"{name}.head_output"], **TOL, err_msg=name)
