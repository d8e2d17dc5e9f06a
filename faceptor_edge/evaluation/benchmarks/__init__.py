"""Faceptor's own benchmarks, read from the user's copies and scored with the paper's protocols.

- `registry`: `BENCHMARKS`, the one table of the 13 benchmarks (plus the other verification
  sets): layout, head, protocol, headline metric, the paper's number.
- `samples`: the `Sample`/`SampleSet` index a reader returns, image loading, label-file helpers.
- `landmark_sets`, `matfile`, `parsing_sets`, `face_sets`, `verification_sets`: the readers.
- `protocols`: the metrics as plain functions; `scoring`: their streaming accumulators.
- `runner`: one model on one benchmark; `suite`: every model on every benchmark;
  `report`: the run's one table (JSON and Markdown).

This `__init__` imports none of them, so `faceptor-edge`'s parser reads `registry` without
loading the runner, the predictor and the detector.
"""
