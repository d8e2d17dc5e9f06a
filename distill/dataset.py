"""Training data as `torch.utils.data` datasets, streamed so memory stays flat.

Items are addressed by `(step, index)`: `StepBatches` yields, for every training step, the
global batch's share of this rank as such pairs, a pure function of the step. Augmentation
draws from `augment_rng(seed, step, index)`. Together they make any resumed or re-sharded run
see exactly the faces, and exactly the augmentations, of an uninterrupted one, whatever the
number of loader workers.

- `CachedFaces` reads one face at a time from the teacher-output shards (memory-mapped
  safetensors), verifying each shard's checksum the first time a worker opens it.
- `OnlineFaces` yields augmented face samples for a teacher that labels every batch as it
  trains (`--teacher-outputs online`).
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

import cv2
import numpy as np
import torch
from safetensors import safe_open
from torch.utils.data import Dataset, Sampler

from faceptor_edge.data import FaceSample
from faceptor_edge.distill.augment import (
    AugmentParams,
    augment_image,
    augment_item,
    augment_rng,
    sample_params,
    warp_matrix,
)
from faceptor_edge.distill.cache import ShardCache
from faceptor_edge.errors import UserError
from faceptor_edge.preprocess import box_from_points
from faceptor_edge.recipe import InputRecipe
from faceptor_edge.tasks import TaskSpec

OPEN_SHARDS = 8  # memory-mapped shards a loader worker keeps open (bounds its resident pages)
POINTS5_FLIP = (1, 0, 2, 4, 3)  # the 5 points' order after a mirror: image-left eye <-> image-right eye, ...


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
        self._verified: set[int] = set()

    def __len__(self) -> int:
        return self.cache.num_items

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_open": OrderedDict()}  # handles do not cross processes

    def _shard(self, shard: int) -> Any:
        if shard in self._open:
            self._open.move_to_end(shard)
            return self._open[shard]
        if shard not in self._verified:
            if not self.cache.is_complete(shard):
                self.cache.discard(shard)
                raise UserError(
                    f"teacher-output shard {shard} in {self.cache.dir} changed or broke since it was built; it was "
                    "deleted: run the same command again to rebuild it (add --resume to keep the training progress)"
                )
            self._verified.add(shard)
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
    """Augmented face samples for a teacher that labels them as training runs.

    A crop-space augmentation W (`warp_matrix`) becomes the image-space warp C⁻¹WC, with C
    the student crop of the face: the warped image keeps the face's framing box, so the
    student's crop of it is exactly the augmented crop, while the 5 points move with the
    face (the teacher's 112 alignment follows them).

    Args:
        source: Face samples (a `FaceSource`).
        recipe: The student crop the augmentation is defined on.
        augment: Apply augmentation.
        seed: Seed of the augmentation.
    """

    def __init__(self, source: Any, recipe: InputRecipe, *, augment: bool, seed: int) -> None:
        self.source, self.recipe, self.augment, self.seed = source, recipe, augment, seed

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: tuple[int, int]) -> FaceSample:
        step, index = key
        (sample,) = self.source.batch([index])
        if not self.augment:
            return sample
        return augment_sample(sample, self.recipe, sample_params(augment_rng(self.seed, step, index)))


def augment_sample(sample: FaceSample, recipe: InputRecipe, params: AugmentParams) -> FaceSample:
    """The sample as the augmentation `params` (defined on the student crop) changes it."""
    box = sample.box if sample.box is not None else None
    if box is None and sample.points5 is not None:
        box = box_from_points(sample.points5)
    crop = recipe.crop(sample.image, box=box)  # framing fixed by the original face box
    to_crop = crop.matrix  # 3×3, image -> crop pixels
    warp = np.vstack([warp_matrix(params, recipe.size), [0, 0, 1]])
    image_warp = (np.linalg.inv(to_crop) @ warp @ to_crop)[:2]
    height, width = sample.image.shape[:2]
    image = cv2.warpAffine(sample.image, image_warp, (width, height), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REFLECT)  # fmt: skip
    points5 = None
    if sample.points5 is not None:
        points5 = (sample.points5 @ image_warp[:, :2].T + image_warp[:, 2]).astype(np.float32)
        if params.flip:
            points5 = points5[list(POINTS5_FLIP)]
    return dataclasses.replace(sample, image=augment_image(image, params), box=box, points5=points5)


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


def collate_samples(samples: Sequence[FaceSample]) -> list[FaceSample]:
    """`DataLoader` collate of `OnlineFaces` items: the samples as a list."""
    return list(samples)
