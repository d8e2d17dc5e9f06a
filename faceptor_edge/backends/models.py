"""Student backends: a trained student folder (PyTorch) and its exported artifacts (the
runtimes in `backends.executorch`, `backends.openvino`, `backends.coreml`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from faceptor_edge.backends.base import Backend, Inputs, RawOutputs, card_facts
from faceptor_edge.backends.formats import artifact_size, format_for_path
from faceptor_edge.errors import UserError
from faceptor_edge.recipe import InputRecipe
from faceptor_edge.tasks import TASKS_BY_NAME


def load_student_backend(source: str, **_: Any) -> Backend:
    """A student folder (`model.safetensors` + `student.json`), run in PyTorch fp32."""
    import torch

    from faceptor_edge.student.io import WEIGHTS, card_recipe, load_student

    student, card = load_student(source)
    student.requires_grad_(False)  # also keeps the FLOP counter's module hooks off autograd

    def run(inputs: Inputs) -> RawOutputs:
        with torch.inference_mode():
            return {key: value.numpy() for key, value in student(torch.from_numpy(inputs["image"])).items()}

    facts = {"params": sum(p.numel() for p in student.parameters()),
             "size_bytes": (Path(source) / WEIGHTS).stat().st_size, "notes": ["model.safetensors size"]}  # fmt: skip
    return Backend(f"student {source}", student.config.tasks, run, card_recipe(card, source), kind="student",
                   facts=facts, model=student,
                   **card_facts(card.get("teacher", {}), card.get("teacher_notice", "")))  # fmt: skip


def artifact_recipe(metadata: dict[str, Any], path: Path) -> InputRecipe:
    """The input recipe an artifact's metadata carries."""
    preprocessing = metadata.get("preprocessing")
    recipe = preprocessing.get("recipe") if isinstance(preprocessing, dict) else None
    if recipe is None:
        raise UserError(
            f"{path}: its metadata has no input recipe (exported by an older faceptor-edge); export it again"
        )
    return InputRecipe.from_json(recipe, f"{path} metadata")


def load_artifact(source: str, *, threads: int | None = None, **_: Any) -> Backend:
    """An exported artifact in its own runtime; the runner's `run` reuses one loaded method
    (ExecuTorch) or infer request (OpenVINO), as an app would."""
    path = Path(source)
    fmt = format_for_path(path)
    runner = fmt.load_runtime().load(path, threads=threads)
    metadata = runner.metadata
    recipe = artifact_recipe(metadata, path)
    if tuple(runner.input_shape[1:]) != (3, recipe.size, recipe.size):
        raise UserError(f"{path}: input {list(runner.input_shape)} disagrees with its recipe's size {recipe.size}")
    unknown = [spec.name for spec in runner.outputs if spec.name not in TASKS_BY_NAME]
    if unknown:
        raise UserError(f"{path}: unknown heads {unknown} in its metadata")
    runnable = fmt.runs_on(sys.platform)

    def run(inputs: Inputs) -> RawOutputs:
        return runner.run(inputs["image"])

    notes = [] if runnable else [f"{fmt.name} predicts only on {', '.join(fmt.platforms)}: size and load only"]
    facts = {"size_bytes": artifact_size(path), "threads": getattr(runner, "threads", {}),
             "quantization": metadata.get("quantization"), "notes": notes}  # fmt: skip
    if getattr(runner, "delegation", None) is not None:
        facts["delegation"] = runner.delegation.to_json()
    tasks = tuple(TASKS_BY_NAME[spec.name] for spec in runner.outputs)
    return Backend(f"{path.suffix[1:]} {path.name}", tasks, run, recipe, kind=fmt.name, facts=facts,
                   static_batch=runner.batch_size, runnable=runnable, model=runner,
                   **card_facts(metadata.get("teacher", {}), metadata.get("teacher_notice", "")))  # fmt: skip
