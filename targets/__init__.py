"""Export targets: one module per format behind the `targets.base.Target` interface.

The formats themselves (names, suffixes, toolkits, runtimes, exporters) are one table,
`faceptor_edge.backends.formats.FORMATS`; `get_target(name)` builds a format's exporter
(importing its toolkit only then) and `target_for_path(path)` the exporter of an existing
artifact.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from faceptor_edge.backends.formats import FORMAT_NAMES, FORMATS, artifact_size, format_for_path
from faceptor_edge.targets.base import Target

__all__ = ["FORMAT_NAMES", "artifact_size", "get_target", "target_for_path"]


def get_target(name: str, **options: Any) -> Target:
    """The export target called `name`, with target-specific options."""
    if name not in FORMATS:
        raise ValueError(f"unknown target {name!r}; choose from {', '.join(FORMAT_NAMES)}")
    module, _, cls = FORMATS[name].exporter.partition(":")
    return getattr(importlib.import_module(module), cls)(**options)


def target_for_path(path: str | Path) -> Target:
    """The target that wrote an existing artifact, judged by its suffix (.pte, .mlpackage, .xml)."""
    return get_target(format_for_path(path).name)
