"""Training metrics: one JSON line per logged step in ``WORKDIR/metrics.jsonl`` and the same scalars as TensorBoard
events in ``WORKDIR/tensorboard/``.

``metrics.jsonl`` lines read ``{"step": 120, "loss": 0.0831, "lr": 0.0001, ...}``. A non-finite value (NaN, ±inf)
is written as ``null`` — JSON has no NaN — and as the float itself in TensorBoard. Each line is flushed as it is
written, so a crash loses no logged step.

Resuming: ``resume_step`` (the restored checkpoint's step) drops the lines of steps after it, which a crashed run
logged but the resumed run will log again, and tells TensorBoard to discard its events after that step. Pass 0 for a
fresh start in a workdir that holds an earlier run's metrics; None appends without dropping anything.

Only process 0 writes: other processes construct the writer with ``enabled=False`` and it touches no file.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from typing import Any, Mapping

import numpy as np

from sana_jax._io import atomic_file


class MetricsWriter:
    """Appends ``{"step": step, **metrics}`` to ``WORKDIR/metrics.jsonl`` and to TensorBoard, per ``write``."""

    def __init__(self, workdir: str | os.PathLike, *, enabled: bool = True, resume_step: int | None = None):
        self.path = os.path.join(os.fspath(workdir), "metrics.jsonl")
        self.tensorboard_dir = os.path.join(os.fspath(workdir), "tensorboard")
        self.enabled = enabled
        self._file = self._tensorboard = None
        if not enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        if resume_step is not None and os.path.exists(self.path):
            drop_steps_after(self.path, resume_step)
        self._file = open(self.path, "a", encoding="utf-8")

        import tensorboardX  # imported here: processes other than 0 never need it

        # purge_step: TensorBoard hides the events of steps >= it written by the earlier, crashed run.
        self._tensorboard = tensorboardX.SummaryWriter(
            self.tensorboard_dir, purge_step=None if resume_step is None else resume_step + 1)

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        """``metrics``: name -> scalar (Python, NumPy or JAX; a JAX value is fetched from the device)."""
        if not self.enabled:
            return
        if "step" in metrics:
            raise ValueError("a metric may not be named 'step': that key holds the step number")
        values = {name: _to_python(name, v) for name, v in metrics.items()}
        record = {"step": int(step), **{k: (v if math.isfinite(v) else None) for k, v in values.items()}}
        self._file.write(json.dumps(record, allow_nan=False) + "\n")
        self._file.flush()
        for name, v in values.items():
            self._tensorboard.add_scalar(name, v, int(step))
        self._tensorboard.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._tensorboard.close()
            self._file = self._tensorboard = None

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def drop_steps_after(path: str | os.PathLike, step: int) -> None:
    """Rewrites the metrics file ``path`` (atomically) keeping only the lines of steps <= ``step``. A torn last line
    (a crash mid-write) is dropped; a malformed line elsewhere is an error naming the file and line."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    kept = []
    for number, line in enumerate(lines, 1):
        try:
            line_step = json.loads(line)["step"]
        except (ValueError, KeyError, TypeError):
            if number == len(lines):
                break
            raise ValueError(f"{path}: line {number} is not a metrics record: {line[:200]!r}") from None
        if line_step <= step:
            kept.append(line + "\n")
    with atomic_file(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(kept)
        shutil.copymode(path, tmp)  # the temporary file is created private (0600)


def _to_python(name: str, value: Any) -> float | int:
    array = np.asarray(value)
    if array.size != 1:
        raise ValueError(f"metric {name!r} must be a scalar, got shape {array.shape}")
    scalar = array.reshape(()).item()
    if isinstance(scalar, bool) or not isinstance(scalar, (int, float)):
        scalar = float(scalar)
    return scalar
