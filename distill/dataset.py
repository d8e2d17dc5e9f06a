"""Training data as `torch.utils.data` datasets, streamed so memory stays flat.

Items are addressed by `(step, index)`: `StepBatches` yields, for every training step, the
global batch's share of this rank as such pairs, a pure function of the step. Augmentation
draws from `augment_rng(seed, step, index)`. Together they make any resumed or re-sharded run
see exactly the faces, and exactly the augmentations, of an uninterrupted one, whatever the
number of loader workers.

- `CachedFaces` reads one face at a time from the teacher-output shards (memory-mapped
  safetensors), each shard's checksum verified once, before training, by one rank.
- `OnlineFaces` yields what the teacher on the device needs of each augmented face
  (`distill.crops`) for a teacher that labels every batch as it trains (`--teacher-outputs online`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors import safe_open
from torch.utils.data import Dataset, Sampler

from faceptor_edge.distill.augment import augment_item, augment_rng, sample_params
from faceptor_edge.distill.cache import ShardCache
from faceptor_edge.distill.crops import Plan, collate_inputs, face_inputs
from faceptor_edge.distill.labels import CropRecipe
from faceptor_edge.errors import UserError
from faceptor_edge.tasks import TaskSpec

OPEN_SHARDS = 8  # memory-mapped shards a loader worker keeps open (bounds its resident pages)


class StepBatches(Sampler[list[tuple[int, int]]]):
    """This rank's `(step, index)` pairs for steps `start..steps-1`.

    Args:
        start: First step (a resumed run's checkpoint step).
        steps: Total training steps.
        batch_size: Global batch size (over all ranks).
        num_items: Faces in the training set.
        seed: Seed of the epoch permutations.
        rank: This process's rank.
        world: Number of processes.
    """

    def __init__(
        self, *, start: int, steps: int, batch_size: int, num_items: int, seed: int, rank: int = 0, world: int = 1
    ) -> None:
        self.start, self.steps, self.batch_size = start, steps, batch_size
        self.num_items, self.seed, self.rank, self.world = num_items, seed, rank, world

    def __len__(self) -> int:
        return max(0, self.steps - self.start)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start, self.steps):
            yield [(step, int(index)) for index in self.indices(step)]

    def indices(self, step: int) -> np.ndarray:
        """This rank's share of the global batch at `step`: epoch permutations laid end to end."""
        first = step * self.batch_size
        epochs = range(first // self.num_items, (first + self.batch_size - 1) // self.num_items + 1)
        stream = np.concatenate([np.random.default_rng([self.seed, e]).permutation(self.num_items) for e in epochs])
        offset = first - epochs[0] * self.num_items
        return stream[offset : offset + self.batch_size][self.rank :: self.world]


class CachedFaces(Dataset):
    """Cached teacher outputs, one face per item, read from the shards on demand.

    Args:
        cache: The built cache (every shard complete).
        tasks: The student's tasks (for the label transforms of augmentation).
        augment: Apply label-true augmentation (`distill.augment`).
        seed: Seed of the augmentation.
    """

    def __init__(self, cache: ShardCache, tasks: tuple[TaskSpec, ...], *, augment: bool, seed: int) -> None:
        self.cache, self.tasks, self.augment, self.seed = cache, tasks, augment, seed
        self._open: OrderedDict[int, Any] = OrderedDict()  # per worker process: shard -> safe_open handle

    def __len__(self) -> int:
        return self.cache.num_items

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_open": OrderedDict()}  # handles do not cross processes

    def verify(self, device: torch.device | None = None) -> None:
        """Check every shard's checksum once: each rank its share (shards ≡ rank mod world), and
        every rank fails together when any share holds a shard that changed since it was built
        (deleted, to be rebuilt by the next run).

        Raises:
            UserError: A shard changed or broke.
        """
        rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
        broken = [shard for shard in range(rank, self.cache.num_shards, world) if not self.cache.is_complete(shard)]
        for shard in broken:
            self.cache.discard(shard)
        count = torch.tensor([len(broken)], device=device)
        if dist.is_initialized():
            dist.all_reduce(count)
        if int(count):
            raise UserError(
                f"{int(count)} teacher-output shard(s) in {self.cache.dir} changed or broke since they were built and "
                "were deleted: run the same command again to rebuild them (add --resume to keep the training progress)"
            )

    def _shard(self, shard: int) -> Any:
        if shard in self._open:
            self._open.move_to_end(shard)
            return self._open[shard]
        handle = safe_open(str(self.cache.shard_path(shard)), framework="numpy")
        self._open[shard] = handle
        if len(self._open) > OPEN_SHARDS:
            self._open.popitem(last=False)
        return handle

    def item(self, index: int, without: Sequence[str] = ()) -> dict[str, np.ndarray]:
        """Face `index` as stored (no batch axis), less the keys `without`."""
        shard, offset = divmod(index, self.cache.shard_size)
        handle = self._shard(shard)
        return {key: handle.get_slice(key)[offset] for key in handle.keys() if key not in without}  # noqa: SIM118 (not iterable)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, np.ndarray]:
        step, index = key
        item = self.item(index)
        if not self.augment:
            return item
        return augment_item(item, self.tasks, sample_params(augment_rng(self.seed, step, index)))

    def sample(self, count: int, without: Sequence[str] = ()) -> dict[str, np.ndarray]:
        """The first `count` faces, stacked, unaugmented, less the keys `without` (statistics of
        the teacher's outputs)."""
        return collate_arrays([self.item(i, without) for i in range(min(count, len(self)))])


class OnlineFaces(Dataset):
    """Faces for a teacher that labels them on its device as training runs: each item is what a
    loader worker ships for one face (`distill.crops.face_inputs`: the student's augmented crop,
    patches of the photo, the geometry of the teacher's crops), never the photo itself.

    Args:
        source: Face samples (a `FaceSource`).
        recipe: The teacher's and the student's crops.
        plan: What the teacher needs of every face (`distill.crops.Plan`).
        augment: Apply augmentation (one transform per face, drawn from (seed, step, face)).
        seed: Seed of the augmentation.
    """

    def __init__(self, source: Any, recipe: CropRecipe, plan: Plan, *, augment: bool, seed: int) -> None:
        self.source, self.recipe, self.plan, self.augment, self.seed = source, recipe, plan, augment, seed

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        step, index = key
        (sample,) = self.source.batch([index])
        params = sample_params(augment_rng(self.seed, step, index)) if self.augment else None
        return face_inputs(sample, self.recipe, self.plan, params)

    def inputs(self, indices: Sequence[int]) -> dict:
        """The faces `indices`, unaugmented, as one collated batch (statistics of the teacher's outputs)."""
        return collate_inputs([face_inputs(s, self.recipe, self.plan, None) for s in self.source.batch(list(indices))])


def collate_arrays(items: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Items with the same keys -> one B×... array per key."""
    keys = items[0].keys()
    uneven = [i for i, item in enumerate(items) if item.keys() != keys]
    if uneven:
        raise ValueError(f"items {uneven[:5]} hold other keys than item 0")
    return {key: np.stack([item[key] for item in items]) for key in keys}


def collate_tensors(items: Sequence[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    """`DataLoader` collate of `CachedFaces` items: numpy -> CPU tensors (dtypes kept)."""
    return {key: torch.from_numpy(value) for key, value in collate_arrays(items).items()}
