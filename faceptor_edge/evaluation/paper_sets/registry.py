"""The one table of Faceptor's test sets (the paper's sets): layout, head, protocol, paper number (SPEC §7).

`PAPER_SETS` is the whole registry: the CLI's `--dataset NAME=PATH` names, `--help`, the
runner and the report all read it. Paper numbers are Faceptor's own (the ECCV 2024 paper);
None where the paper gives none here.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from faceptor_edge.evaluation.paper_sets import face_sets, landmark_sets, parsing_sets, verification_sets
from faceptor_edge.evaluation.paper_sets.samples import SampleSet
from faceptor_edge.evaluation.paper_sets.scoring import (
    AgeScore,
    AttributeScore,
    ClassScore,
    LandmarkScore,
    ParsingScore,
    VerificationScore,
    centres,
    corners,
    given,
)
from faceptor_edge.tasks import CELEBA_ATTRIBUTES, CELEBAMASK_HQ_CLASSES, LAPA_CLASSES


@dataclass(frozen=True)
class PaperSet:
    """One of the paper's test sets.

    Attributes:
        title: The paper's name for it.
        head: The task head it scores.
        read: `read(path) -> SampleSet` of the user's copy.
        score: A fresh streaming score (`scoring`).
        headline: The metric the table shows (a key of the score's `result()`).
        lower_is_better: Direction of `headline`.
        paper: Faceptor's number in the paper, in the headline's unit, or None.
        layout: What PATH must hold (for `--help` and errors).
        crop_scale: The paper's landmark crop scale (`scale_mu`), applied to every model's
            dense crop of this set; None keeps each model's own recipe.
        flip: Add the embedding of the mirrored crop (verification).
        pad: Pixels of replicated border before detection (pairs of tight chips).
        test_faces: Faces (verification: images) in the official test set, where known;
            a run on fewer is labelled a format check.
    """

    title: str
    head: str
    read: Callable[[Path], SampleSet]
    score: Callable[[], object]
    headline: str
    lower_is_better: bool
    paper: float | None
    layout: str
    crop_scale: float | None = None
    flip: bool = False
    pad: int = 0
    test_faces: int | None = None


def _verification(name: str, title: str, paper: float | None, images: int) -> PaperSet:
    return PaperSet(title, "recog_ms1mv3", partial(verification_sets.read_verification, name=name),
                     VerificationScore, "accuracy", False, paper,
                     f"{name}.bin (InsightFace pairs), or a folder with it, or LFW's pairs.txt beside person folders",
                     flip=True, pad=50, test_faces=images)  # fmt: skip


_NORMS_AFLW = {"box": given("box"), "io": corners(6, 11), "ip": corners(7, 10)}

PAPER_SETS: dict[str, PaperSet] = {
    "300w": PaperSet("300W", "align_300w", landmark_sets.read_300w,
                      partial(LandmarkScore, {"io": corners(36, 45), "ip": centres(range(36, 42), range(42, 48))},
                              ("full", "common", "challenge")),
                      "full/nme_io", True, 2.86, landmark_sets.LAYOUT_300W, crop_scale=0.8, test_faces=689),
    "cofw": PaperSet("COFW", "align_cofw", landmark_sets.read_cofw,
                      partial(LandmarkScore, {"io": corners(8, 9)}, ("test",), ("io", 0.1)),
                      "test/nme_io", True, 3.01, "COFW_test_color.mat (IsT, phisT, bboxesT; MATLAB v5 or v7.3)",
                      crop_scale=0.8, test_faces=507),
    "wflw": PaperSet("WFLW", "align_wflw", landmark_sets.read_wflw,
                      partial(LandmarkScore, {"io": corners(60, 72), "ip": corners(96, 97)},
                              ("test", *landmark_sets.WFLW_SUBSETS), ("io", 0.1)),
                      "test/nme_io", True, 4.03, "WFLW_annotations/list_98pt_rect_attr_train_test/"
                      "list_98pt_rect_attr_test.txt and WFLW_images/", crop_scale=0.8, test_faces=2500),
    "aflw19": PaperSet("AFLW-19", "align_aflw", landmark_sets.read_aflw19,
                        partial(LandmarkScore, _NORMS_AFLW, ("full", "frontal"), ("box", 0.07)),
                        "full/nme_box", True, 0.95, "face_landmarks_aflw_test.csv (+ _frontal.csv) and images/",
                        crop_scale=1.0, test_faces=4386),
    "celebamask-hq": PaperSet("CelebAMask-HQ", "parsing_celebam", parsing_sets.read_celebamask_hq,
                               partial(ParsingScore, CELEBAMASK_HQ_CLASSES), "f1_fg_mean", False, 88.2,
                               "CelebA-HQ-img/, CelebAMask-HQ-mask-anno/, CelebA-HQ-to-CelebA-mapping.txt and "
                               "CelebA's list_eval_partition.txt", test_faces=2824),
    "lapa": PaperSet("LaPa", "parsing_lapa", parsing_sets.read_lapa, partial(ParsingScore, LAPA_CLASSES),
                      "f1_fg_mean", False, 91.5, "test/{images,labels,landmarks}", test_faces=2000),
    "morph2": PaperSet("MORPH II", "age_morph2", face_sets.read_morph2, AgeScore, "mae", True, 1.96,
                        "RANDOM_80_20/test.txt ('<image> <age>' lines) and the images it names"),
    "utkface": PaperSet("UTKFace", "age_utkface", face_sets.read_utkface, AgeScore, "mae", True, 4.10,
                         "label/test.csv ('<image>,<age>') or images named age_gender_race_date.jpg"),
    "rafdb": PaperSet("RAF-DB", "affect_rafdb", face_sets.read_rafdb, ClassScore, "top1", False, 91.26,
                       "EmoLabel/list_patition_label.txt and Image/aligned/test_*_aligned.jpg", test_faces=3068),
    "ferplus": PaperSet("FERPlus", "affect_ferplus", face_sets.read_ferplus, ClassScore, "top1", False, 90.40,
                         "fer2013new.csv and FER2013Test/"),
    "affectnet": PaperSet("AffectNet", "affect_affectnet", face_sets.read_affectnet, ClassScore, "top1", False,
                           None, "validation.csv (with face boxes) and Manually_Annotated_Images/", test_faces=3500),
    "celeba": PaperSet("CelebA", "biattr_celeba", face_sets.read_celeba, partial(AttributeScore, CELEBA_ATTRIBUTES),
                        "mean_accuracy", False, 91.39, "list_attr_celeba.txt, list_eval_partition.txt, "
                        "list_landmarks_align_celeba.txt and img_align_celeba/", test_faces=19962),
    "lfw": _verification("lfw", "LFW", 99.40, 12000),
    "cfp_fp": _verification("cfp_fp", "CFP-FP", None, 14000),
    "agedb_30": _verification("agedb_30", "AgeDB-30", None, 12000),
    "calfw": _verification("calfw", "CALFW", None, 12000),
    "cplfw": _verification("cplfw", "CPLFW", None, 12000),
}  # fmt: skip


def paper_set_spec(text: str) -> tuple[str, Path]:
    """An argparse type: `NAME=PATH` with NAME in `PAPER_SETS` and PATH existing."""
    name, sep, path = text.partition("=")
    if not sep or not path:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=PATH")
    if name.lower() not in PAPER_SETS:
        raise argparse.ArgumentTypeError(f"unknown paper set {name!r}: choose from {', '.join(PAPER_SETS)}")
    if not Path(path).exists():
        raise argparse.ArgumentTypeError(f"{path}: no such file or folder")
    return name.lower(), Path(path)


def layouts_help() -> str:
    """One line per paper set for `evaluate --help`: name, head and the layout PATH holds."""
    return "\n".join(f"  {name:14s} {b.title}: {b.layout}" for name, b in PAPER_SETS.items())
