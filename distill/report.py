"""End-of-run reporting: held-out fidelity against the teacher, and the loss curve."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from faceptor_edge.distill.keys import STUDENT_IMAGE_KEY, mask_key
from faceptor_edge.metrics import fidelity_table, format_table, mean_output
from faceptor_edge.student.inputs import normalise, student_recipe
from faceptor_edge.student.model import FaceptorStudent, count_flops
from faceptor_edge.tasks import TaskSpec


@torch.inference_mode()
def predict(student: FaceptorStudent, images: np.ndarray, batch_size: int = 64) -> dict[str, np.ndarray]:
    """Student raw outputs (numpy) for B×S×S×3 uint8 crops, in eval mode."""
    student.eval()
    recipe = student_recipe(student.config)
    parts = [student(normalise(images[i : i + batch_size], recipe)) for i in range(0, len(images), batch_size)]
    return {k: torch.cat([p[k] for p in parts]).numpy() for k in parts[0]}


def _valid(cache: dict, task) -> tuple[np.ndarray, np.ndarray | None]:
    """Faces (B bool) and outputs (K bool, or None for all) the teacher labelled for a head."""
    mask = cache.get(mask_key(task.name))
    if mask is None:
        return np.ones(len(cache[task.name]), bool), None
    mask = np.asarray(mask) > 0
    return (mask.any(axis=1), mask.any(axis=0)) if mask.ndim == 2 else (mask, None)


def _columns(values: np.ndarray, outputs: np.ndarray | None) -> np.ndarray:
    return values if outputs is None else values[:, outputs]


def teacher_fidelity(
    tasks: tuple[TaskSpec, ...], candidate: dict[str, np.ndarray], reference: dict, baseline_from: dict
) -> dict[str, dict]:
    """Per head the teacher covers: the candidate's fidelity to the teacher on the faces (and
    outputs) it labelled, beside the teacher's-mean-output baseline.

    Args:
        tasks: Heads to score (those in `reference`).
        candidate: The model's raw outputs (shared layout) on the faces of `reference`.
        reference: Teacher outputs as the cache stores them, with `<task>/mask` arrays.
        baseline_from: Teacher outputs (cache layout) whose labelled faces' mean is the baseline.

    Returns:
        `metrics.fidelity_table` rows, each with the number of `faces` scored.
    """
    tasks = tuple(task for task in tasks if task.name in reference)
    teacher = {task.name: np.asarray(reference[task.name], np.float32) for task in tasks}
    base = {task.name: np.asarray(baseline_from[task.name], np.float32) for task in tasks}
    heads = {}
    for task in tasks:
        faces, outputs = _valid(reference, task)
        base_faces, _ = _valid(baseline_from, task)
        if not faces.any() or not base_faces.any():
            continue
        baseline = mean_output({task.name: _columns(base[task.name][base_faces], outputs)})
        heads.update(fidelity_table((task,), {task.name: _columns(candidate[task.name][faces], outputs)},
                                    {task.name: _columns(teacher[task.name][faces], outputs)}, baseline))  # fmt: skip
        heads[task.name]["faces"] = int(faces.sum())
    return heads


def fidelity_report(student: FaceptorStudent, train_cache: dict, holdout_cache: dict) -> dict:
    """Held-out fidelity per head the teacher covers, on the faces (and outputs) it labelled,
    beside the teacher's-mean-output baseline fitted on the training faces it labelled
    (`train_cache`: teacher outputs of a sample of them)."""
    candidate = predict(student, holdout_cache[STUDENT_IMAGE_KEY])
    heads = teacher_fidelity(student.config.tasks, candidate, holdout_cache, train_cache)
    return {
        "heads": heads,
        "student": {
            "size": student.config.size,
            "params": sum(p.numel() for p in student.parameters()),
            "flops": count_flops(student),
        },
        "held_out_faces": len(holdout_cache[STUDENT_IMAGE_KEY]),
        "table": format_table(heads),
    }


def plot_loss_curve(records: list[dict], path: Path) -> None:
    """Total and per-head-type loss against step, log scale, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not records:
        return
    steps = np.array([r["step"] for r in records])
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    ax.plot(steps, [r["loss"] for r in records], color="black", linewidth=1.5, label="total")
    heads = [k for k in records[0] if k not in ("step", "lr", "loss", "grad_norm", "seconds")]
    for head in heads:
        ax.plot(steps, [r[head] for r in records], linewidth=0.8, alpha=0.8, label=head)
    ax.set(xlabel="step", ylabel="loss", yscale="log", title="Distillation loss")
    ax.legend(fontsize=7, ncol=3)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
