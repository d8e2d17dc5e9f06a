"""`RowSpec`: what one benchmark row measures, handed from the driver to the row process."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RowSpec:
    """What one row measures; JSON-serialisable, handed to the row process.

    Attributes:
        name, kind, target, precision: The row's labels.
        source: Teacher checkpoint or "demo", student directory, artifact path, or peer name.
        runs, warmup: Timed and untimed batch-1 calls.
        batch: Batch for the throughput measurement (ignored by static-batch artifacts).
        threads: Cores and threads the row may use.
        image: PNG of one face for the end-to-end path ("" to skip it).
        photo: Photo of several faces for the detector end-to-end path ("" to skip it).
        teacher_dense_size: Side of the teacher's dense input group.
    """

    name: str
    kind: str
    target: str
    precision: str
    source: str
    runs: int
    warmup: int
    batch: int
    threads: int
    image: str = ""
    photo: str = ""
    teacher_dense_size: int = 512
