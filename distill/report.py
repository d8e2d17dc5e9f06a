"""End-of-run reporting: held-out fidelity against the teacher, and the loss curve."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from faceptor_edge.distill.labels import STUDENT_IMAGE_KEY
from faceptor_edge.distill.trainer import parsing_channels_last, predict
from faceptor_edge.metrics import fidelity_table, format_table, mean_output
from faceptor_edge.student.model import FaceptorStudent, count_flops


def fidelity_report(student: FaceptorStudent, train_cache: dict, holdout_cache: dict) -> dict:
    """Held-out fidelity per head, beside the teacher's-mean-output baseline fitted on training faces."""
    tasks = student.config.tasks
    reference = parsing_channels_last(holdout_cache, tasks)
    baseline = mean_output(parsing_channels_last(train_cache, tasks))
    candidate = predict(student, holdout_cache[STUDENT_IMAGE_KEY])
    heads = fidelity_table(tasks, candidate, reference, baseline)
    return {
        "heads": heads,
        "student": {
            "size": student.config.size,
            "params": sum(p.numel() for p in student.parameters()),
            "flops": count_flops(student),
        },
        "held_out_faces": int(len(holdout_cache[STUDENT_IMAGE_KEY])),
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
    heads = [k for k in records[0] if k not in ("step", "lr", "loss", "grad_norm")]
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
