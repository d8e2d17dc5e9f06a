"""Task heads of Faceptor: one `TaskSpec` per head, and the official task lists.

Every backend (teacher, student, exported artifacts) produces raw outputs keyed by
the official task name with the layouts described on each spec, so decoding and
metrics are written once (SPEC §1, §4, §5).
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


@dataclass(frozen=True)
class TaskSpec:
    """One task head.

    Attributes:
        name: Official task name, the key of the head's raw output.
        task_type: What the head predicts; selects decoding, losses and metrics.
        kind: How the head reads the decoder: `embedding` bypasses it, `value` maps each
            query to one logit, `map` turns each query into a 4S×4S heatmap.
        num_queries: Decoder queries (the official count, also for recognition, which ignores them).
        input_group: Which teacher crop feeds it: the 112-px aligned face or the 512-px dense crop.
        labels: Output names (attributes, expressions, parsing classes); empty for other heads.
        crop_scale: Face-box scale of the dense crop for landmark heads (SPEC §6.2).
    """

    name: str
    task_type: TaskType
    kind: HeadKind
    num_queries: int
    input_group: InputGroup
    labels: tuple[str, ...] = ()
    crop_scale: float = 0.8

    @property
    def raw_shape(self) -> tuple[int, ...]:
        """Per-sample shape of the raw output for a 512-px dense group (SPEC §4)."""
        if self.task_type == "recognition":
            return (EMBEDDING_DIM,)
        if self.task_type == "parsing":
            return (512, 512, self.num_queries)
        if self.task_type == "landmarks":
            return (self.num_queries, 2)
        return (self.num_queries,)


def _recognition(name: str) -> TaskSpec:
    return TaskSpec(name, "recognition", "embedding", 2, "face112")


def _age(name: str) -> TaskSpec:
    return TaskSpec(name, "age", "value", AGE_BINS, "face112")


def _expression(name: str) -> TaskSpec:
    return TaskSpec(name, "expression", "value", 7, "face112", AFFECTNET_EXPRESSIONS)


def _parsing(name: str, labels: tuple[str, ...]) -> TaskSpec:
    return TaskSpec(name, "parsing", "map", len(labels), "face512", labels)


def _landmarks(name: str, points: int, crop_scale: float = 0.8) -> TaskSpec:
    return TaskSpec(name, "landmarks", "map", points, "face512", crop_scale=crop_scale)


RECOG_MS1MV3 = _recognition("recog_ms1mv3")
AGE_MORPH2 = _age("age_morph2")
AGE_UTKFACE = _age("age_utkface")
BIATTR_CELEBA = TaskSpec("biattr_celeba", "attributes", "value", 40, "face112", CELEBA_ATTRIBUTES)
AFFECT_AFFECTNET = _expression("affect_affectnet")
AFFECT_RAFDB = _expression("affect_rafdb")
AFFECT_FERPLUS = _expression("affect_ferplus")
PARSING_CELEBAM = _parsing("parsing_celebam", CELEBAMASK_HQ_CLASSES)
PARSING_LAPA = _parsing("parsing_lapa", LAPA_CLASSES)
ALIGN_300W = _landmarks("align_300w", 68)
ALIGN_COFW = _landmarks("align_cofw", 29)
ALIGN_WFLW = _landmarks("align_wflw", 98)
ALIGN_AFLW = _landmarks("align_aflw", 19, crop_scale=1.0)

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
