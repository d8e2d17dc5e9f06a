"""Loading official checkpoints from disk, and refusing everything else with one clear error."""

import os

import pytest
import torch
from safetensors.torch import save_file

from faceptor_edge import CheckpointError, load_teacher
from tests.fixtures import manifest_state

COSFACE_KEY = "module.losses_module.losses.recog_ms1mv3.classifier"


@pytest.fixture(scope="module")
def base_state():
    return {key: torch.from_numpy(value) for key, value in manifest_state("base").items()}


def _official_file(path, state):
    """An official-layout training checkpoint: DDP state dict with CosFace weight, AdamW state, step."""
    params = [torch.nn.Parameter(state[k].clone()) for k in list(state)[:3]]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    sum(p.sum() for p in params).backward()
    optimizer.step()
    full = dict(state)
    full[COSFACE_KEY] = torch.zeros(93431, 512)
    torch.save({"step": 50000, "state_dict": full, "optimizer": optimizer.state_dict()}, path)


def test_official_training_checkpoint_loads_from_disk(tmp_path, base_state):
    path = tmp_path / "20231223_234836.pth.tar"
    _official_file(path, base_state)
    teacher = load_teacher(path)
    assert teacher.variant == "base"
    assert teacher.task_names[0] == "recog_ms1mv3" and len(teacher.task_names) == 7
    loaded = teacher.state_dict()["encoder.conv1.weight"]
    assert torch.equal(loaded, base_state["module.backbone_module.visual.conv1.weight"])


def test_safetensors_of_official_keys_loads(tmp_path, base_state):
    path = tmp_path / "base.safetensors"
    save_file({k.removeprefix("module."): v.contiguous() for k, v in base_state.items()}, str(path))
    assert load_teacher(path).variant == "base"


def test_code_running_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"x": Payload()}}, path)
    with pytest.raises(CheckpointError, match="refused"):
        load_teacher(path)
    assert not marker.exists()


def test_missing_unexpected_and_misshapen_keys_are_named(base_state):
    state = dict(base_state)
    del state["module.heads_module.decoder.adapt_pos2d.0.bias"]
    state["module.heads_module.decoder.extra.weight"] = torch.zeros(3)
    state["module.heads_module.interpreters.value.fc.weight"] = torch.zeros(2, 256)
    with pytest.raises(CheckpointError) as info:
        load_teacher(state)
    message = str(info.value)
    assert "missing (1): module.heads_module.decoder.adapt_pos2d.0.bias" in message
    assert "unexpected (1): module.heads_module.decoder.extra.weight" in message
    assert "wrong shape (1): module.heads_module.interpreters.value.fc.weight (2, 256) != (1, 256)" in message


def test_non_faceptor_state_dict_is_refused(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(torch.nn.Conv2d(3, 8, 3).state_dict(), path)
    with pytest.raises(CheckpointError, match="not a Faceptor checkpoint"):
        load_teacher(path)


def test_naive_faceptor_is_named(base_state):
    state = {k: v for k, v in base_state.items() if "backbone" in k}
    state["module.heads_module.heads.recog.norm.weight"] = torch.ones(768)
    with pytest.raises(CheckpointError, match="Naive Faceptor"):
        load_teacher(state)


@pytest.mark.parametrize(
    "content, match",
    [(b"", "not a PyTorch checkpoint"), (b"hello world", "not a PyTorch checkpoint"),
     (b"\x80\x02garbage", "corrupt")],
)  # fmt: skip
def test_garbage_files_give_one_clear_error(tmp_path, content, match):
    path = tmp_path / "teacher.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        load_teacher(path)


def test_truncated_checkpoint(tmp_path):
    path = tmp_path / "teacher.pth"
    torch.save({"state_dict": {"module.backbone_module.visual.proj": torch.zeros(768, 512)}}, path)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="corrupt|not a PyTorch"):
        load_teacher(path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        load_teacher(tmp_path / "nope.pth")
