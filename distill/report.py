"""End-of-run reporting: held-out fidelity against the teacher, and the loss curve."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from faceptor_edge.distill.keys import STUDENT_IMAGE_KEY, mask_key
from faceptor_edge.distill.trainer import parsing_channels_last, predict
from faceptor_edge.metrics import fidelity_table, format_table, mean_output
from faceptor_edge.student.model import FaceptorStudent, count_flops


def _valid(cache: dict, task) -> tuple[np.ndarray, np.ndarray | None]:
    """Faces (B bool) and outputs (K bool, or None for all) the teacher labelled for a head."""
    mask = cache.get(mask_key(task.name))
    if mask is None:
        return np.ones(len(cache[task.name]), bool), None
    mask = np.asarray(mask) > 0
    return (mask.any(axis=1), mask.any(axis=0)) if mask.ndim == 2 else (mask, None)


def _columns(values: np.ndarray, outputs: np.ndarray | None) -> np.ndarray:
    return values if outputs is None else values[:, outputs]


def fidelity_report(student: FaceptorStudent, train_cache: dict, holdout_cache: dict) -> dict:
    """Held-out fidelity per head the teacher covers, on the faces (and outputs) it labelled,
    beside the teacher's-mean-output baseline fitted on the training faces it labelled
    (`train_cache`: teacher outputs of a sample of them)."""
    tasks = tuple(t for t in student.config.tasks if t.name in holdout_cache)
    reference = parsing_channels_last(holdout_cache, tasks)
    train = parsing_channels_last(train_cache, tasks)
    candidate = predict(student, holdout_cache[STUDENT_IMAGE_KEY])
    heads = {}
    for task in tasks:
        faces, outputs = _valid(holdout_cache, task)
        train_faces, _ = _valid(train_cache, task)
        baseline = mean_output({task.name: _columns(train[task.name][train_faces], outputs)})
        heads.update(fidelity_table((task,), {task.name: _columns(candidate[task.name][faces], outputs)},
                                    {task.name: _columns(reference[task.name][faces], outputs)}, baseline))  # fmt: skip
        heads[task.name]["faces"] = int(faces.sum())
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
