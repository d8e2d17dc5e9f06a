"""Task heads of Faceptor: one `HeadType` per task type, one `TaskSpec` per head, and the official task lists.

Every backend (teacher, student, exported artifacts) produces raw outputs keyed by
the official task name with the layouts described on each spec, so decoding and
metrics are written once (SPEC §1, §4, §5). `HEAD_TYPES` is the one table of what
each type of head outputs and how it is scored; code asks it, not the type's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

TaskType = Literal["recognition", "age", "attributes", "expression", "parsing", "landmarks"]
HeadKind = Literal["embedding", "value", "map"]
InputGroup = Literal["face112", "face512"]

EMBEDDING_DIM = 512
AGE_BINS = 101

CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair",
    "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair",
    "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings",
    "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)  # fmt: skip

# AffectNet order; RAF-DB and FERPlus heads were trained on labels remapped to it.
AFFECTNET_EXPRESSIONS = ("Neutral", "Happy", "Sad", "Surprise", "Fear", "Disgust", "Anger")

CELEBAMASK_HQ_CLASSES = (
    "background", "neck", "face", "cloth", "rr", "lr", "rb", "lb", "re", "le", "nose",
    "imouth", "llip", "ulip", "hair", "glass", "hat", "earr", "neckl",
)  # fmt: skip

LAPA_CLASSES = ("background", "face_lr_rr", "lb", "rb", "le", "re", "nose", "ul", "im", "ll", "hair")

# Per-sample raw dimensions: an int is fixed; "Q" is the head's query count, "D" the
# embedding width (EMBEDDING_DIM), "M" the side of the map grid.
RawDim = int | Literal["Q", "D", "M"]
FlipRule = Literal["none", "points", "classes"]


@dataclass(frozen=True, kw_only=True)
class HeadType:
    """What one type of head predicts, and how its raw output is laid out, scored and flipped.

    Attributes:
        name: The task type.
        kind: How its heads read the decoder (`TaskSpec.kind`).
        raw_dims: Per-sample raw output dimensions (see `RawDim`).
        layout_text: The batched raw output, for artifact metadata; `{m}` stands for the map side.
        metric: Primary fidelity metric, a key of `metrics.head_metrics`.
        higher_is_better: Direction of `metric`.
        int8_threshold: Bound on `metric` for an int8 artifact against its fp32 student; its
            distance from perfect also bounds an artifact's drop in fidelity to the teacher.
        is_classifier: The outputs are decisions (attribute signs, argmax classes, parsing
            pixels), so int8 parity is agreement on the decisive ones (`targets.parity`).
        is_multilabel: Each logit is its own yes/no (sigmoid); otherwise a classifier's
            logits compete in a softmax over the last axis.
        is_points: The raw output is B×N×2 normalised (x, y) points, soft-argmaxed from
            B×N×M×M heatmap logits that come out beside it under `heatmap_key`.
    """

    name: TaskType
    kind: HeadKind
    raw_dims: tuple[RawDim, ...]
    layout_text: str
    metric: str
    higher_is_better: bool
    int8_threshold: float
    is_classifier: bool = False
    is_multilabel: bool = False
    is_points: bool = False

    @property
    def is_channels_last(self) -> bool:
        """A map head with B×M×M×C class logits (channels last) rather than points: parsing."""
        return self.kind == "map" and not self.is_points

    @property
    def flip(self) -> FlipRule:
        """How a horizontal flip of the crop maps the raw output: landmarks reorder their points
        by `TaskSpec.flip_perm` and mirror x, parsing reorders its class channels by it, and
        value and embedding outputs stay as they are."""
        if self.is_points:
            return "points"
        return "classes" if self.is_channels_last else "none"

    def layout(self, map_size: int) -> str:
        """The raw output's description for artifact metadata, for an M×M map grid."""
        return self.layout_text.format(m=map_size)


RECOGNITION = HeadType(
    name="recognition", kind="embedding", raw_dims=("D",), layout_text="B×512 embedding (L2-normalise to compare)",
    metric="mean_cosine", higher_is_better=True, int8_threshold=0.98,
)  # fmt: skip
AGE = HeadType(
    name="age", kind="value", raw_dims=("Q",), layout_text="B×101 logits (sigmoid, L1-normalise, expected bin = years)",
    metric="mae_years", higher_is_better=False, int8_threshold=1.0,
)  # fmt: skip
ATTRIBUTES = HeadType(
    name="attributes", kind="value", raw_dims=("Q",), layout_text="B×40 logits (sigmoid > 0.5)",
    metric="mean_agreement", higher_is_better=True, int8_threshold=0.98, is_classifier=True, is_multilabel=True,
)  # fmt: skip
EXPRESSION = HeadType(
    name="expression", kind="value", raw_dims=("Q",), layout_text="B×7 logits, AffectNet order",
    metric="top1_agreement", higher_is_better=True, int8_threshold=0.98, is_classifier=True,
)  # fmt: skip
PARSING = HeadType(
    name="parsing", kind="map", raw_dims=("M", "M", "Q"), layout_text="B×{m}×{m}×C logits over the crop, channels last",
    metric="pixel_agreement", higher_is_better=True, int8_threshold=0.97, is_classifier=True,
)  # fmt: skip
LANDMARKS = HeadType(
    name="landmarks", kind="map", raw_dims=("Q", 2), layout_text="B×N×2 (x, y) normalised to [0, 1] over the crop",
    metric="nme_crop_pct", higher_is_better=False, int8_threshold=1.0, is_points=True,
)  # fmt: skip

HEAD_TYPES: dict[TaskType, HeadType] = {
    "recognition": RECOGNITION,
    "age": AGE,
    "attributes": ATTRIBUTES,
    "expression": EXPRESSION,
    "parsing": PARSING,
    "landmarks": LANDMARKS,
}


@dataclass(frozen=True)
class TaskSpec:
    """One task head.

    Attributes:
        name: Official task name, the key of the head's raw output.
        task_type: What the head predicts, a key of `HEAD_TYPES`; selects decoding, losses and metrics.
        num_queries: Decoder queries (the official count, also for recognition, which ignores them).
        input_group: Which teacher crop feeds it: the 112-px aligned face or the 512-px dense crop.
        labels: Output names (attributes, expressions, parsing classes); empty for other heads.
        flip_perm: For heads whose outputs swap sides under a horizontal flip (`HeadType.flip`):
            the permutation of points or classes, flipped[i] = original[flip_perm[i]]; empty
            for the others.
    """

    name: str
    task_type: TaskType
    num_queries: int
    input_group: InputGroup
    labels: tuple[str, ...] = ()
    flip_perm: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.task_type not in HEAD_TYPES:
            raise ValueError(f"task {self.name!r} has unknown task type {self.task_type!r}")
        if self.head.flip == "none" and self.flip_perm:
            raise ValueError(f"task {self.name!r}: a flip leaves {self.task_type} outputs as they are; no flip_perm")
        if self.head.flip != "none" and sorted(self.flip_perm) != list(range(self.num_queries)):
            raise ValueError(f"task {self.name!r}: flip_perm must be a permutation of its {self.num_queries} outputs")

    @property
    def head(self) -> HeadType:
        """The head type's entry in `HEAD_TYPES`."""
        return HEAD_TYPES[self.task_type]

    @property
    def kind(self) -> HeadKind:
        """How the head reads the decoder: `embedding` bypasses it, `value` maps each query to
        one logit, `map` turns each query into a 4S×4S heatmap."""
        return self.head.kind

    @property
    def raw_shape(self) -> tuple[int, ...]:
        """Per-sample shape of the raw output for a 512-px dense group (SPEC §4)."""
        sizes = {"Q": self.num_queries, "D": EMBEDDING_DIM, "M": 512}
        return tuple(sizes[d] if isinstance(d, str) else d for d in self.head.raw_dims)

    @property
    def raw_pattern(self) -> tuple[int | None, ...]:
        """Per-sample raw shape that every backend keeps: None where it may vary (embedding
        width, map side), the query count and fixed sizes elsewhere."""
        return tuple(self.num_queries if d == "Q" else d if isinstance(d, int) else None for d in self.head.raw_dims)


# Mirror pairs of each landmark scheme, 0-based; the points left out lie on the midline. The
# standard pairs of HRNet-Facial-Landmark-Detection (lib/utils/transforms.py, MATCHED_PARTS,
# 1-based there except WFLW's).
MIRROR_300W = (
    (0, 16), (1, 15), (2, 14), (3, 13), (4, 12), (5, 11), (6, 10), (7, 9),  # jaw
    (17, 26), (18, 25), (19, 24), (20, 23), (21, 22),  # brows
    (31, 35), (32, 34),  # nostrils
    (36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46),  # eyes
    (48, 54), (49, 53), (50, 52), (59, 55), (58, 56),  # outer lips
    (60, 64), (61, 63), (67, 65),  # inner lips
)  # fmt: skip
MIRROR_COFW = ((0, 1), (2, 3), (4, 6), (5, 7), (8, 9), (10, 11), (12, 14), (13, 15), (16, 17), (18, 19), (22, 23))
MIRROR_WFLW = (
    (0, 32), (1, 31), (2, 30), (3, 29), (4, 28), (5, 27), (6, 26), (7, 25), (8, 24), (9, 23), (10, 22),
    (11, 21), (12, 20), (13, 19), (14, 18), (15, 17),  # jaw
    (33, 46), (34, 45), (35, 44), (36, 43), (37, 42), (38, 50), (39, 49), (40, 48), (41, 47),  # brows
    (55, 59), (56, 58),  # nostrils
    (60, 72), (61, 71), (62, 70), (63, 69), (64, 68), (65, 75), (66, 74), (67, 73),  # eyes
    (76, 82), (77, 81), (78, 80), (87, 83), (86, 84),  # outer lips
    (88, 92), (89, 91), (95, 93),  # inner lips
    (96, 97),  # pupils
)  # fmt: skip
MIRROR_AFLW = ((0, 5), (1, 4), (2, 3), (6, 11), (7, 10), (8, 9), (12, 14), (15, 17))
# Left/right parsing classes (ears, brows, eyes); LaPa's face_lr_rr is one class.
MIRROR_CELEBAMASK_HQ = (("rr", "lr"), ("rb", "lb"), ("re", "le"))
MIRROR_LAPA = (("lb", "rb"), ("le", "re"))


def _swapping(count: int, pairs: tuple[tuple[int, int], ...]) -> tuple[int, ...]:
    """The permutation of `count` outputs that swaps each pair and keeps the others."""
    perm = list(range(count))
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return tuple(perm)


def _recognition(name: str) -> TaskSpec:
    return TaskSpec(name, "recognition", 2, "face112")


def _age(name: str) -> TaskSpec:
    return TaskSpec(name, "age", AGE_BINS, "face112")


def _expression(name: str) -> TaskSpec:
    return TaskSpec(name, "expression", 7, "face112", AFFECTNET_EXPRESSIONS)


def _parsing(name: str, labels: tuple[str, ...], mirror: tuple[tuple[str, str], ...]) -> TaskSpec:
    flip_perm = _swapping(len(labels), tuple((labels.index(a), labels.index(b)) for a, b in mirror))
    return TaskSpec(name, "parsing", len(labels), "face512", labels, flip_perm=flip_perm)


def _landmarks(name: str, points: int, mirror: tuple[tuple[int, int], ...]) -> TaskSpec:
    # Every head reads the one dense crop of the input recipe (scale 0.8). The official
    # per-benchmark crops (SPEC §6.2: scale_mu 1.0 for AFLW-19) are an evaluation protocol.
    return TaskSpec(name, "landmarks", points, "face512", flip_perm=_swapping(points, mirror))


RECOG_MS1MV3 = _recognition("recog_ms1mv3")
AGE_MORPH2 = _age("age_morph2")
AGE_UTKFACE = _age("age_utkface")
BIATTR_CELEBA = TaskSpec("biattr_celeba", "attributes", 40, "face112", CELEBA_ATTRIBUTES)
AFFECT_AFFECTNET = _expression("affect_affectnet")
AFFECT_RAFDB = _expression("affect_rafdb")
AFFECT_FERPLUS = _expression("affect_ferplus")
PARSING_CELEBAM = _parsing("parsing_celebam", CELEBAMASK_HQ_CLASSES, MIRROR_CELEBAMASK_HQ)
PARSING_LAPA = _parsing("parsing_lapa", LAPA_CLASSES, MIRROR_LAPA)
ALIGN_300W = _landmarks("align_300w", 68, MIRROR_300W)
ALIGN_COFW = _landmarks("align_cofw", 29, MIRROR_COFW)
ALIGN_WFLW = _landmarks("align_wflw", 98, MIRROR_WFLW)
ALIGN_AFLW = _landmarks("align_aflw", 19, MIRROR_AFLW)

# Official order (SPEC §1.1, §1.2); the stage-2 Layer-Attention variant uses FULL_TASKS.
BASE_TASKS: tuple[TaskSpec, ...] = (
    RECOG_MS1MV3, AGE_MORPH2, BIATTR_CELEBA, AFFECT_AFFECTNET, AFFECT_RAFDB,
    PARSING_CELEBAM, ALIGN_300W,
)  # fmt: skip
FULL_TASKS: tuple[TaskSpec, ...] = (
    RECOG_MS1MV3, AGE_MORPH2, AGE_UTKFACE, BIATTR_CELEBA, AFFECT_AFFECTNET, AFFECT_RAFDB,
    AFFECT_FERPLUS, PARSING_CELEBAM, PARSING_LAPA, ALIGN_300W, ALIGN_COFW, ALIGN_WFLW, ALIGN_AFLW,
)  # fmt: skip

TASKS_BY_NAME: dict[str, TaskSpec] = {task.name: task for task in FULL_TASKS}


def heatmap_key(task_name: str) -> str:
    """Raw-output key of a landmark head's B×N×H×W heatmap logits."""
    return f"{task_name}/heatmap"
