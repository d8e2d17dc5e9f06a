"""The names of what the teacher-output cache stores besides each head's raw output (keyed by
task name, with landmark heatmaps under `tasks.heatmap_key`)."""

from __future__ import annotations

STUDENT_IMAGE_KEY = "student/image"  # B×S×S×3 uint8: the student's input crop of each face
# The teacher's layer-11 tokens of each input group, for feature distillation.
FEATURE_KEYS = ("encoder/face512/layer11", "encoder/face112/layer11")
# B float32: 1 where the feature targets hold (0: geometric augmentation, which ViT tokens do
# not follow, or an unreadable image).
FEATURE_MASK_KEY = "features/mask"


def mask_key(task_name: str) -> str:
    """Label key of a head's validity mask: B (one flag per face) or B×K (per output, e.g. the
    one attribute a specialist covers). 1 = the teacher labelled it; absent = all valid.
    `specialists.teacher.SpecialistTeacher.label` writes its masks under these names."""
    return f"{task_name}/mask"


def coverage_key(task_name: str) -> str:
    """Label key of a parsing head's B×M×M coverage: 1 where the teacher's own framing of the
    face saw that cell of the student's crop, 0 where it did not (no label there); absent:
    everywhere covered."""
    return f"{task_name}/coverage"
