"""Photo-like synthetic faces: MobileStyleGAN trained on FFHQ, from the `random-face` wheel.

The wheel (Apache-2.0 code) carries the generator as two OpenVINO IR graphs, a mapping
network (512-d noise -> 512-d style) and a synthesis network (style -> 1024×1024 RGB in
[-1, 1]). Its own Python code targets an OpenVINO API that no longer exists, so only the
graph files are read, with today's `openvino` runtime, and nothing in the package is run.
The generator was distilled from StyleGAN2 trained on FFHQ, whose weights and images carry
non-commercial licences: see docs/licences.md before shipping a model trained on them.

Faces are FFHQ-aligned portraits (the face centred, with hair and shoulders around it),
so samples carry no box: distillation frames them with the detector (`detection.photos.DetectedSource`)
exactly as photos are framed at inference.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from faceptor_edge.data import FaceSample
from faceptor_edge.errors import UserError
from faceptor_edge.files import package_dir

STYLEGAN_INSTALL = "pip install --no-deps random-face==2021.7.21.1"
GRAPHS = ("MappingNetwork", "SynthesisNetwork")  # .xml + .bin each, in random_face/data/
STYLE_DIM = 512
NATIVE_SIZE = 1024
TRUNCATION = 0.7  # pull styles towards the mean: fewer broken faces, a little less variety
MEAN_SAMPLES = 4096  # noise vectors averaged for the mean style (fixed seed)
_MEAN_SEED = 0x5EED
_SEED_STRIDE = 1_000_003  # face i of seed s uses noise seed (s * stride + i), as `SyntheticSource`


def graphs_folder() -> Path:
    """Where the installed `random-face` wheel keeps the two graphs.

    Raises:
        UserError: The wheel is not installed or lacks a graph file.
    """
    folder = package_dir("random_face", "data")
    if folder is None:
        raise UserError(f"StyleGAN faces need the random-face wheel: {STYLEGAN_INSTALL}")
    missing = [
        f"{name}{suffix}"
        for name in GRAPHS
        for suffix in (".xml", ".bin")
        if not (folder / f"{name}{suffix}").is_file()
    ]
    if missing:
        raise UserError(f"random-face at {folder} lacks {', '.join(missing)}: {STYLEGAN_INSTALL}")
    return folder


def missing() -> str:
    """ "" when StyleGAN faces can be generated here, else why not."""
    try:
        graphs_folder()
        import openvino  # noqa: F401
    except UserError as error:
        return str(error)
    except ImportError:
        return 'StyleGAN faces run in OpenVINO: pip install -e ".[openvino]"'
    return ""


class StyleGANSource:
    """FFHQ-like synthetic portraits from MobileStyleGAN.

    Face i depends only on `seed` and i (its noise comes from a generator seeded with both),
    so any subset, in any order and in any batch, regenerates the same faces.
    """

    def __init__(self, count: int, *, seed: int = 0, size: int = 512, threads: int | None = None) -> None:
        """Describes the faces; the graphs are compiled on first use (once per process).

        Args:
            count: Number of faces.
            seed: Chooses the faces; 0 <= seed < 2**32.
            size: Side of the square output images (area-downscaled from 1024).
            threads: OpenVINO inference threads (default: its own choice).

        Raises:
            UserError: A bad argument, or the wheel or OpenVINO is not installed.
        """
        if count < 1:
            raise UserError(f"StyleGAN face count must be at least 1, got {count}")
        if not 0 <= seed < 2**32:
            raise UserError(f"StyleGAN face seed must be in [0, 2**32), got {seed}")
        if not 64 <= size <= NATIVE_SIZE:
            raise UserError(f"StyleGAN face size must be in [64, {NATIVE_SIZE}] pixels, got {size}")
        reason = missing()
        if reason:
            raise UserError(reason)
        self.count, self.seed, self.size, self.threads = count, seed, size, threads
        self._folder = graphs_folder()
        self._compiled: tuple[Any, Any, np.ndarray] | None = None
        self._sha256: str | None = None

    def __getstate__(self) -> dict:
        """Worker processes get the description and compile their own graphs."""
        return {**self.__dict__, "_compiled": None}

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> FaceSample:
        return self.batch([index])[0]

    def __iter__(self) -> Iterator[FaceSample]:
        for index in range(self.count):
            yield self[index]

    def batch(self, indices: Sequence[int]) -> list[FaceSample]:
        """Generates several faces, one synthesis call each (batching does not run faster).

        Returns:
            The samples in the order of `indices`: size×size×3 uint8 RGB, no box, no points.
        """
        samples = []
        for index in indices:
            if not -self.count <= index < self.count:
                raise IndexError(f"sample index {index} is out of range for {self.count} samples")
            index %= self.count
            image = self._generate(index)
            samples.append(FaceSample(index, image, None, None, f"stylegan-s{self.seed}-{index}"))
        return samples

    def fingerprint(self) -> str:
        """Identifies the faces for caching teacher outputs: sha256 over the graphs' sha256,
        seed, count, size and truncation."""
        if self._sha256 is None:
            digest = hashlib.sha256()
            for name in GRAPHS:
                for suffix in (".xml", ".bin"):
                    digest.update((self._folder / f"{name}{suffix}").read_bytes())
            self._sha256 = digest.hexdigest()
        recipe = ["faceptor-edge stylegan source v1", self._sha256, self.seed, self.count, self.size, TRUNCATION]
        return hashlib.sha256(json.dumps(recipe).encode()).hexdigest()

    def _graphs(self) -> tuple[Any, Any, np.ndarray]:
        """The compiled mapping and synthesis graphs and the mean style, once per process."""
        if self._compiled is None:
            from faceptor_edge.backends.openvino import shared_core

            core = shared_core()
            config = {"INFERENCE_NUM_THREADS": self.threads} if self.threads else {}
            mapping = core.read_model(self._folder / "MappingNetwork.xml", self._folder / "MappingNetwork.bin")
            synthesis = core.read_model(self._folder / "SynthesisNetwork.xml", self._folder / "SynthesisNetwork.bin")
            mapping.reshape({"var": [-1, STYLE_DIM]})
            mapping = core.compile_model(mapping, "CPU", config)
            noise = np.random.default_rng(_MEAN_SEED).standard_normal((MEAN_SAMPLES, STYLE_DIM), dtype=np.float32)
            mean = mapping(noise)[0].mean(axis=0, keepdims=True)
            self._compiled = (mapping, core.compile_model(synthesis, "CPU", config), mean)
        return self._compiled

    def _generate(self, index: int) -> np.ndarray:
        mapping, synthesis, mean = self._graphs()
        rng = np.random.default_rng(self.seed * _SEED_STRIDE + index)
        style = mapping(rng.standard_normal((1, STYLE_DIM), dtype=np.float32))[0]
        style = mean + TRUNCATION * (style - mean)
        image = synthesis(style)[0][0].transpose(1, 2, 0)  # 3×1024×1024 RGB in [-1, 1] -> H×W×3
        pixels = np.clip((image + 1.0) * 127.5, 0, 255).astype(np.float32)
        if self.size != NATIVE_SIZE:
            pixels = cv2.resize(pixels, (self.size, self.size), interpolation=cv2.INTER_AREA)
        return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
