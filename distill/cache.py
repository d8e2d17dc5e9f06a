"""Sharded on-disk cache of teacher outputs, safe against interruption.

Layout: `ROOT/<key>/shard-00012.safetensors` plus `shard-00012.sha256`. `key` hashes
everything that changes the outputs (teacher weights, crop recipe, images), so a
change lands in a fresh directory. A shard counts only once its checksum file exists
and matches: both are written to a temporary name, fsynced and renamed, so a run
killed mid-write leaves either a complete shard or nothing that is trusted. The checksum
file also records the shard's size: starting a run only checks sizes (`missing(verify=False)`),
and training verifies each shard's checksum when it first reads it (`distill.dataset`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from faceptor_edge.files import atomic_write_bytes, file_sha256

FORMAT_VERSION = 3  # 3: parsing logits stored channels last (B×M×M×C), as every model outputs them


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

    def shard_path(self, shard: int) -> Path:
        return self._paths(shard)[0]

    def _recorded(self, shard: int) -> tuple[str, int] | None:
        """(sha256, size) the checksum file records, or None when the shard is absent."""
        data, checksum = self._paths(shard)
        try:
            digest, size = checksum.read_text().split()
            return (digest, int(size)) if data.stat().st_size == int(size) else None
        except (OSError, ValueError):
            return None

    def is_complete(self, shard: int, *, verify: bool = True) -> bool:
        """The shard and its checksum file exist, and the data has the recorded size and
        (with `verify`) checksum."""
        recorded = self._recorded(shard)
        return recorded is not None and (not verify or recorded[0] == file_sha256(self._paths(shard)[0]))

    def missing(self, shards: Iterable[int] | None = None, *, verify: bool = True) -> list[int]:
        """Shards (of `shards`, default all) that are absent or fail their size (and with `verify`,
        checksum) check."""
        chosen = range(self.num_shards) if shards is None else shards
        return [s for s in chosen if not self.is_complete(s, verify=verify)]

    def discard(self, shard: int) -> None:
        """Delete a shard (a corrupt one), so that the next build computes it again."""
        for path in self._paths(shard):
            path.unlink(missing_ok=True)

    def write(self, shard: int, arrays: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> None:
        """Store one shard atomically; every array's first axis indexes the shard's items.
        `metadata` (strings) goes into the safetensors header (`metadata`)."""
        expected = len(self.shard_items(shard))
        wrong = {k: v.shape for k, v in arrays.items() if v.shape[0] != expected}
        if wrong:
            raise ValueError(f"shard {shard} holds {expected} items, arrays disagree: {wrong}")
        data, checksum = self._paths(shard)
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=f".{data.name}.", suffix=".tmp")
        os.close(fd)
        try:
            save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, tmp, metadata=metadata)
            with open(tmp, "rb+") as file:
                os.fsync(file.fileno())
            digest, size = file_sha256(Path(tmp)), Path(tmp).stat().st_size
            os.replace(tmp, data)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        atomic_write_bytes(checksum, f"{digest} {size}".encode())

    def read(self, shard: int) -> dict[str, np.ndarray]:
        """Load a verified shard; a corrupt one is deleted and reported."""
        if not self.is_complete(shard):
            self.discard(shard)
            raise FileNotFoundError(f"teacher-output shard {shard} in {self.dir} is missing or corrupt; rebuild it")
        return load_file(str(self._paths(shard)[0]))

    def metadata(self, shard: int) -> dict[str, str]:
        """The header metadata a shard was written with (reads the header only)."""
        with safe_open(str(self._paths(shard)[0]), framework="numpy") as handle:
            return handle.metadata() or {}

    def build(
        self,
        compute: Callable[[range], tuple[dict[str, np.ndarray], dict[str, str] | None]],
        *,
        shards: Iterable[int] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Compute (arrays and header metadata) and store every missing shard of `shards` (by the
        size check); returns how many were built."""
        todo = self.missing(shards, verify=False)
        for shard in todo:
            # Temporary files of this shard left by a killed writer. Only the process that
            # builds a shard touches them, so ranks building other shards are not disturbed.
            for stale in self.dir.glob(f".shard-{shard:05d}.*.tmp"):
                stale.unlink(missing_ok=True)
            self.write(shard, *compute(self.shard_items(shard)))
            if progress is not None:
                progress(len(self.shard_items(shard)))
        return len(todo)

    def load_all(self) -> dict[str, np.ndarray]:
        """All shards concatenated along the item axis (small caches only: the held-out faces;
        training streams through `distill.dataset.CachedFaces`)."""
        parts = [self.read(shard) for shard in range(self.num_shards)]
        return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
