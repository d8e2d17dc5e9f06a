"""`Backend`: one model behind one call, whatever runs it (PyTorch, ExecuTorch, OpenVINO, Core ML,
or the specialist models)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from faceptor_edge.preprocess import Box, Crop
from faceptor_edge.recipe import InputRecipe
from faceptor_edge.tasks import TaskSpec

Inputs = dict[str, np.ndarray]  # keyed as `InputRecipe.prepare` makes them, batch first
RawOutputs = dict[str, np.ndarray]  # keyed by task name, SPEC §4 layouts


def _nothing() -> None:
    return None


@dataclass
class Backend:
    """A loaded model: the inputs its recipe makes in, raw outputs (numpy) out.

    Attributes:
        name: What was loaded, for reports.
        tasks: Heads the model has.
        run: `run(inputs) -> raw outputs`: `inputs` as `recipe.prepare` makes them (any
            batch), the outputs in the shared SPEC §4 layout (parsing channels last).
        recipe: How a face becomes this model's input.
        kind: Its source's `source_kind`, the `faceptor_edge.backends.SOURCE_KINDS` key that
            loaded it (one of `TEACHER_KINDS` for a teacher).
        untrained: Heads its teacher did not cover (a specialist-distilled student).
        covered_labels: Heads whose teacher covered only some outputs (name -> those labels).
        notice: The teacher notice the model carries ("" if none).
        teacher: The teacher record of its student card or metadata (`describe_teacher`'s
            identity: which teacher, its checkpoint hash); empty for teachers and peers.
        facts: Parameters, size on disk, threads and notes, for `bench`.
        static_batch: The artifact's fixed batch (None: any batch).
        runnable: False where this platform cannot run it (Core ML off macOS).
        model: The underlying model (torch module, runtime runner, specialist models).
        detector: The face detector that ships with the model (a bundle's); None: the caller's.
        close: Releases native resources (MediaPipe's graph); idempotent.
    """

    name: str
    tasks: tuple[TaskSpec, ...]
    run: Callable[[Inputs], RawOutputs] | None
    recipe: InputRecipe
    kind: str = ""
    untrained: frozenset[str] = frozenset()
    covered_labels: dict[str, tuple[str, ...]] = field(default_factory=dict)
    notice: str = ""
    teacher: dict[str, Any] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    static_batch: int | None = None
    runnable: bool = True
    model: Any = None
    detector: Any = None
    close: Callable[[], None] = _nothing

    def prepare(
        self, image: np.ndarray, *, box: Box | None = None, points5: np.ndarray | None = None
    ) -> tuple[Inputs, Crop]:
        """One face's inputs (batch 1) and dense crop, by this backend's recipe."""
        return self.recipe.prepare(image, box=box, points5=points5)

    def example(self, batch: int = 1) -> Inputs:
        """Random inputs of this backend's shapes (for timing; only shapes matter)."""
        rng = np.random.default_rng(0)
        batch = self.static_batch or batch
        side = self.recipe.size
        if self.recipe.pixels == "uint8":
            return {"image": rng.integers(0, 256, (batch, side, side, 3), dtype=np.uint8),
                    "box": np.tile(np.float32(self.recipe.central_box()), (batch, 1))}  # fmt: skip
        inputs = {"image": rng.standard_normal((batch, 3, side, side), dtype=np.float32)}
        if self.recipe.face112:
            inputs["face112"] = rng.standard_normal((batch, 3, 112, 112), dtype=np.float32)
        return inputs


def card_facts(teacher: dict[str, Any], notice: str) -> dict[str, Any]:
    """`Backend` fields from the teacher record a student card or artifact carries."""
    covered = {name: tuple(labels) for name, labels in teacher.get("covered_labels", {}).items()}
    return {
        "untrained": frozenset(teacher.get("untrained_heads", ())),
        "covered_labels": covered,
        "notice": notice,
        "teacher": dict(teacher),
    }
