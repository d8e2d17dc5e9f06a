"""Faceptor's own test sets (the paper's sets), read from the user's copies and scored with the paper's protocols.

- `registry`: `PAPER_SETS`, the one table of the paper's 13 test sets (plus the other verification
  sets): layout, head, protocol, headline metric, the paper's number.
- `samples`: the `Sample`/`SampleSet` index a reader returns, image loading, label-file helpers.
- `landmark_sets`, `matfile`, `parsing_sets`, `face_sets`, `verification_sets`: the readers.
- `protocols`: the metrics as plain functions; `scoring`: their streaming accumulators.
- `runner`: one model on one set; `suite`: every model on every set;
  `report`: the run's one table (JSON and Markdown).

This `__init__` imports none of them, so `faceptor-edge`'s parser reads `registry` without
loading the runner, the predictor and the detector.
"""
