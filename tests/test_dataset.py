"""Streaming training data: batches by step, per-face shard reads, corrupt shards, changing folders."""

import os

import cv2
import numpy as np
import pytest
import torch

from faceptor_edge.data import FolderSource
from faceptor_edge.distill.cache import ShardCache
from faceptor_edge.distill.dataset import CachedFaces, StepBatches, collate_tensors
from faceptor_edge.distill.devices import check_precision, resolve_device
from faceptor_edge.errors import UserError
from faceptor_edge.tasks import FULL_TASKS


def _cache(tmp_path, items=10, shard_size=4):
    cache = ShardCache(tmp_path, "k", num_items=items, shard_size=shard_size, identity={})
    cache.build(lambda r: ({"x": np.arange(r.start, r.stop, dtype=np.float32)[:, None].repeat(3, 1)}, None))
    return cache


def test_step_batches_cover_each_epoch_once_and_split_over_ranks():
    whole = StepBatches(start=0, steps=5, batch_size=4, num_items=10, seed=3)
    steps = [whole.indices(step) for step in range(5)]
    first_epoch = np.concatenate(steps)[:10]
    assert sorted(first_epoch) == list(range(10))  # every face once per epoch
    ranks = [StepBatches(start=0, steps=5, batch_size=4, num_items=10, seed=3, rank=r, world=2) for r in (0, 1)]
    for step in range(5):
        assert sorted(np.concatenate([r.indices(step) for r in ranks])) == sorted(steps[step])
    resumed = list(StepBatches(start=3, steps=5, batch_size=4, num_items=10, seed=3))
    assert resumed == list(whole)[3:]  # a resumed run gets the same (step, face) pairs


def test_cached_faces_read_single_faces_across_worker_processes(tmp_path):
    data = CachedFaces(_cache(tmp_path), FULL_TASKS, augment=False, seed=0)
    assert data[(0, 6)]["x"].tolist() == [6.0, 6.0, 6.0]
    batches = StepBatches(start=0, steps=3, batch_size=4, num_items=10, seed=0)
    loader = torch.utils.data.DataLoader(data, batch_sampler=batches, num_workers=2, collate_fn=collate_tensors)
    got = [batch["x"][:, 0].long().tolist() for batch in loader]
    assert got == [batches.indices(step).tolist() for step in range(3)]


def test_shard_changed_since_it_was_built_is_reported_and_deleted_before_training(tmp_path, monkeypatch):
    cache = _cache(tmp_path)
    data = CachedFaces(cache, FULL_TASKS, augment=False, seed=0)
    data.verify()  # intact
    with monkeypatch.context() as patched:
        hashed = []
        patched.setattr(type(cache), "is_complete", lambda self, shard: hashed.append(shard) or True)
        batches = StepBatches(start=0, steps=3, batch_size=4, num_items=10, seed=0)
        list(torch.utils.data.DataLoader(data, batch_sampler=batches, num_workers=0, collate_fn=collate_tensors))
        assert hashed == [], "reading faces never re-hashes a shard"
    path = cache.shard_path(1)
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0xFF
    path.write_bytes(bytes(blob))
    assert cache.missing(verify=False) == []  # same size: only the checksum can tell
    with pytest.raises(UserError, match="1 teacher-output shard.* deleted: run the same command again"):
        data.verify()
    assert not path.exists() and cache.missing(verify=False) == [1]  # the next run rebuilds it
    assert data[(0, 9)]["x"][0] == 9  # other shards still read


def test_unvalidated_folder_masks_unreadable_images_and_refuses_changed_ones(tmp_path):
    image = np.full((40, 40, 3), 128, np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), image)
    cv2.imwrite(str(tmp_path / "b.png"), image)
    (tmp_path / "c.jpg").write_bytes(b"not a jpeg")
    source = FolderSource(tmp_path, validate=False)
    assert [entry["path"] for entry in source.manifest] == ["a.png", "b.png", "c.jpg"]
    broken = source[2]
    assert broken.problem and broken.box is None and broken.points5 is None
    assert source[0].problem is None
    os.utime(tmp_path / "b.png", ns=(0, 1_000_000_000))
    with pytest.raises(UserError, match="changed or disappeared since the folder was listed"):
        source[1]
    (tmp_path / "a.png").unlink()
    with pytest.raises(UserError, match="a.png' changed or disappeared"):
        source[0]


def test_unknown_device_and_missing_precision_fail_with_one_message():
    with pytest.raises(UserError, match="choose from"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA GPU"):
            resolve_device("cuda")
    with pytest.raises(UserError, match="fp16 .* use bf16"):
        check_precision(torch.device("cpu"), "fp16")
    check_precision(torch.device("cpu"), "bf16")
