"""The teacher-output cache: atomic, checksummed shards that survive a killed writer."""

import numpy as np
import pytest

from faceptor_edge.distill.cache import ShardCache, cache_key


def _cache(tmp_path, key="k", items=10):
    return ShardCache(tmp_path, key, num_items=items, shard_size=4, identity={"test": True})


def _compute(items):
    return {"x": np.arange(items.start, items.stop, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)}, None


def test_build_then_reuse(tmp_path):
    cache = _cache(tmp_path)
    assert cache.num_shards == 3 and cache.missing() == [0, 1, 2]
    assert cache.build(_compute) == 3
    assert _cache(tmp_path).build(_compute) == 0  # a second run computes nothing
    np.testing.assert_array_equal(cache.load_all()["x"][:, 0], np.arange(10))


def test_corrupt_shard_is_detected_and_rebuilt(tmp_path):
    cache = _cache(tmp_path)
    cache.build(_compute)
    shard = cache.dir / "shard-00001.safetensors"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert cache.missing() == [1]
    with pytest.raises(FileNotFoundError, match="corrupt"):
        cache.read(1)
    assert cache.build(_compute) == 1
    assert cache.missing() == []


def test_writer_killed_mid_write_leaves_nothing_trusted(tmp_path, monkeypatch):
    cache = _cache(tmp_path)

    def crash(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("faceptor_edge.distill.cache.os.replace", crash)
    with pytest.raises(KeyboardInterrupt):
        cache.build(_compute)
    monkeypatch.undo()
    assert list(cache.dir.glob("shard-*")) == [] and list(cache.dir.glob(".*.tmp")) == []
    assert _cache(tmp_path).build(_compute) == 3


def test_shard_without_checksum_is_not_trusted(tmp_path):
    cache = _cache(tmp_path)
    cache.build(_compute)
    (cache.dir / "shard-00002.sha256").unlink()  # killed between data and checksum
    assert cache.missing() == [2]


def test_identity_change_means_a_fresh_cache():
    assert cache_key(teacher="a", images="x") != cache_key(teacher="b", images="x")
    assert cache_key(teacher="a", images="x") != cache_key(teacher="a", images="y")
    assert cache_key(teacher="a", images="x") == cache_key(images="x", teacher="a")


def test_wrong_item_count_is_refused(tmp_path):
    with pytest.raises(ValueError, match="holds 4 items"):
        _cache(tmp_path).write(0, {"x": np.zeros((3, 1))})


def test_stale_temporary_files_of_a_killed_writer_are_removed_when_their_shard_is_built(tmp_path):
    cache = _cache(tmp_path)
    stale = cache.dir / ".shard-00001.safetensors.abc123.tmp"
    stale.write_bytes(b"half a shard")
    other = cache.dir / ".identity.json.xyz.tmp"  # another process's write in flight: left alone
    other.write_bytes(b"{}")
    cache.build(_compute, shards=[1])
    assert not stale.exists() and other.exists() and cache.missing() == [0, 2]
