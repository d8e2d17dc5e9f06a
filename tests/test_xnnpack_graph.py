"""The student's delegable export form computes what the student does (issue: int8 fast and
true): each rewrite against the op it replaces, and the whole lite0 and tiny students."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from faceptor_edge.landmarks import soft_argmax
from faceptor_edge.student.model import build_student
from faceptor_edge.targets.base import ExportWrapper
from faceptor_edge.targets.xnnpack_graph import LayerNormAsMeans, NearestUpsample2x, delegable_copy


def test_nearest_upsampling_as_a_transposed_convolution_is_bit_exact():
    x = torch.randn(2, 24, 7, 5)
    assert torch.equal(NearestUpsample2x(24)(x), nn.Upsample(scale_factor=2, mode="nearest")(x))


def test_layer_norm_from_means_matches_layer_norm():
    norm = nn.LayerNorm(48)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    x = torch.randn(3, 17, 48) * 5 + 2
    assert (LayerNormAsMeans(norm)(x) - norm(x)).abs().max() < 1e-5


def test_soft_argmax_as_a_grid_product_matches_the_weighted_sums():
    heatmap = torch.randn(2, 68, 64, 48) * 4
    weights = torch.sigmoid(heatmap)
    total = weights.sum(dim=(2, 3)).clamp_min(1e-6)
    x = (weights.sum(dim=2) * torch.arange(48.0)).sum(-1) / total
    y = (weights.sum(dim=3) * torch.arange(64.0)).sum(-1) / total
    want = torch.stack([(x + 0.5) / 48, (y + 0.5) / 64], dim=-1)
    assert (soft_argmax(heatmap, grid_product=True) - want).abs().max() < 1e-5
    assert (soft_argmax(heatmap) - want).abs().max() < 1e-5


@pytest.mark.parametrize("size", ["tiny", "lite0"])
def test_the_delegable_copy_leaves_every_output_unchanged(size):
    torch.manual_seed(0)
    wrapper = ExportWrapper(build_student(size, pretrained=False))
    graph = delegable_copy(wrapper)
    assert not any(isinstance(m, (nn.LayerNorm, nn.Upsample)) for m in graph.modules())
    assert any(isinstance(m, nn.LayerNorm) for m in wrapper.modules()), "the original is left as it was"
    images = torch.randn(2, 3, wrapper.input_size, wrapper.input_size)
    with torch.no_grad():
        for name, got, want in zip(wrapper.output_names, graph(images), wrapper(images)):
            assert (got - want).abs().max() <= 1e-5 * max(1.0, want.abs().max().item()), name
