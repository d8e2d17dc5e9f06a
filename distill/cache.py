"""Sharded on-disk cache of teacher outputs, safe against interruption.

Layout: `ROOT/<key>/shard-00012.safetensors` plus `shard-00012.sha256`. `key` hashes
everything that changes the outputs (teacher weights, crop recipe, images), so a
change lands in a fresh directory. A shard counts only once its checksum file exists
and matches: both are written to a temporary name, fsynced and renamed, so a run
killed mid-write leaves either a complete shard or nothing that is trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from faceptor_edge.files import atomic_write_bytes, file_sha256

FORMAT_VERSION = 1


def cache_key(**identity: object) -> str:
    """A short stable hash of the JSON-serialisable identity of the cached outputs."""
    blob = json.dumps({"format": FORMAT_VERSION, **identity}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


class ShardCache:
    """Teacher outputs for items 0..N-1 in shards of `shard_size` items.

    Args:
        root: Cache root shared by runs.
        key: `cache_key(...)` of teacher, crop recipe and images.
        num_items: Items to cache.
        shard_size: Items per shard.
        identity: Written beside the shards as `identity.json`, for people.
    """

    def __init__(self, root: str | Path, key: str, *, num_items: int, shard_size: int, identity: dict) -> None:
        self.dir = Path(root) / key
        self.num_items = num_items
        self.shard_size = shard_size
        self.dir.mkdir(parents=True, exist_ok=True)
        identity_path = self.dir / "identity.json"
        if not identity_path.exists():
            atomic_write_bytes(identity_path, json.dumps(identity, indent=2, sort_keys=True).encode())

    @property
    def num_shards(self) -> int:
        return -(-self.num_items // self.shard_size)

    def shard_items(self, shard: int) -> range:
        return range(shard * self.shard_size, min((shard + 1) * self.shard_size, self.num_items))

    def _paths(self, shard: int) -> tuple[Path, Path]:
        stem = self.dir / f"shard-{shard:05d}"
        return stem.with_suffix(".safetensors"), stem.with_suffix(".sha256")

    def is_complete(self, shard: int) -> bool:
        data, checksum = self._paths(shard)
        return data.exists() and checksum.exists() and checksum.read_text().strip() == file_sha256(data)

    def missing(self, shards: Iterable[int] | None = None) -> list[int]:
        """Shards (of `shards`, default all) that are absent or fail their checksum."""
        return [s for s in (range(self.num_shards) if shards is None else shards) if not self.is_complete(s)]

    def write(self, shard: int, arrays: dict[str, np.ndarray]) -> None:
        """Store one shard atomically; every array's first axis indexes the shard's items."""
        expected = len(self.shard_items(shard))
        wrong = {k: v.shape for k, v in arrays.items() if v.shape[0] != expected}
        if wrong:
            raise ValueError(f"shard {shard} holds {expected} items, arrays disagree: {wrong}")
        data, checksum = self._paths(shard)
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=f".{data.name}.", suffix=".tmp")
        os.close(fd)
        try:
            save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, tmp)
            with open(tmp, "rb+") as file:
                os.fsync(file.fileno())
            digest = file_sha256(Path(tmp))
            os.replace(tmp, data)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        atomic_write_bytes(checksum, digest.encode())

    def read(self, shard: int) -> dict[str, np.ndarray]:
        """Load a verified shard; a corrupt one is deleted and reported."""
        if not self.is_complete(shard):
            for path in self._paths(shard):
                path.unlink(missing_ok=True)
            raise FileNotFoundError(f"teacher-output shard {shard} in {self.dir} is missing or corrupt; rebuild it")
        return load_file(str(self._paths(shard)[0]))

    def build(
        self,
        compute: Callable[[range], dict[str, np.ndarray]],
        *,
        shards: Iterable[int] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Compute and store every missing shard of `shards`; returns how many were built."""
        todo = self.missing(shards)
        for shard in todo:
            # Temporary files of this shard left by a killed writer. Only the process that
            # builds a shard touches them, so ranks building other shards are not disturbed.
            for stale in self.dir.glob(f".shard-{shard:05d}.*.tmp"):
                stale.unlink(missing_ok=True)
            self.write(shard, compute(self.shard_items(shard)))
            if progress is not None:
                progress(len(self.shard_items(shard)))
        return len(todo)

    def load_all(self) -> dict[str, np.ndarray]:
        """All shards concatenated along the item axis."""
        parts = [self.read(shard) for shard in range(self.num_shards)]
        return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
