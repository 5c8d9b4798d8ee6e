"""``make_iterator``: this process's batches of the training data, resumable, the same for any process count.

The grain pipeline, per process:

    ProcessStream (stream position -> record index, see sampler.py)
      -> .map(loader)               record index -> example dict, or ``Unreadable`` (never raises for a bad file)
      -> .to_iter_dataset(ReadOptions(read_threads, prefetch))      decode threads, order kept
      -> .mp_prefetch(num_workers)  when num_workers > 0: decode in worker processes, order kept
    DataIterator (main process): counts, logs and drops ``Unreadable``, stacks ``batch_size // process_count`` rows.

State is the number of stream records consumed (read or skipped) and the skip count; ``set_state`` rebuilds the
grain pipeline at that stream position. It does not depend on ``num_workers`` or on how far the prefetch ran.
"""

from __future__ import annotations

import logging
from typing import Any

import grain
import numpy as np

from sana_jax.training.data.config import DataConfig, DataConfigError, read_data_config
from sana_jax.training.data.sampler import ProcessStream, global_order
from sana_jax.training.data.unreadable import Unreadable

_log = logging.getLogger(__name__)
STATE_FORMAT = "sana_jax.data_iterator/1"


def make_iterator(data_cfg: Any, *, batch_size: int, process_index: int = 0,
                  process_count: int = 1) -> "DataIterator":
    """This process's rows of each global batch: dicts of numpy arrays with leading dim batch_size // process_count.

    Keys: synthetic and latent_cache -> "latents" (b, F', H', W', C) float32, "text_embeds" (b, L, D) float32,
    "text_mask" (b, L) int32; manifest and shapes -> "video" (b, frames, height, width, 3) float32 in [-1, 1],
    "caption" (b,) object array of str.
    """
    cfg = read_data_config(data_cfg)
    if not (isinstance(batch_size, int) and batch_size > 0):
        raise ValueError(f"batch_size={batch_size!r}: expected a positive int")
    if not (isinstance(process_count, int) and process_count > 0 and 0 <= process_index < process_count):
        raise ValueError(f"process_index={process_index!r}, process_count={process_count!r}: expected "
                         f"0 <= process_index < process_count")
    if batch_size % process_count:
        raise ValueError(f"batch_size={batch_size} is not divisible by process_count={process_count}: every "
                         f"process reads the same number of rows of each global batch")
    return DataIterator(cfg, _loader(cfg), batch_size=batch_size, process_index=process_index,
                        process_count=process_count)


def null_text(data_cfg: Any) -> tuple[np.ndarray, np.ndarray]:
    """The empty-caption conditioning used for caption dropout: embeds (L, D) float32, mask (L,) int32."""
    cfg = read_data_config(data_cfg)
    if cfg.source == "synthetic":
        from sana_jax.training.data.synthetic import synthetic_null_text

        return synthetic_null_text(seed=cfg.seed, text_length=cfg.text_length, text_dim=cfg.text_dim)
    if cfg.source == "latent_cache":
        from sana_jax.training.data.latent_cache import read_null_text

        return read_null_text(cfg.path)
    raise DataConfigError(f"data.source={cfg.source!r} yields videos and captions, not text embeddings, so it has no "
                          "null text conditioning; precompute a latent cache (python -m "
                          "sana_jax.training.precompute) and train from source 'latent_cache'")


def _loader(cfg: DataConfig):
    """Record index -> example (or ``Unreadable``); ``len(loader)`` is records per epoch and
    ``loader.collate(examples)`` makes the batch."""
    if cfg.source == "synthetic":
        from sana_jax.training.data.synthetic import SyntheticExamples

        return SyntheticExamples(seed=cfg.seed, num_examples=cfg.num_examples, latent_shape=cfg.latent_shape,
                                 text_length=cfg.text_length, text_dim=cfg.text_dim)
    if cfg.source == "manifest":
        from sana_jax.training.data.manifest import ClipDecoder, ManifestExamples, read_manifest

        decoder = ClipDecoder(height=cfg.height, width=cfg.width, frames=cfg.frames, fps=cfg.fps)
        return ManifestExamples(read_manifest(cfg.path), decoder)
    if cfg.source == "shapes":
        from sana_jax.shapes.world import ShapesExamples

        return ShapesExamples(seed=cfg.seed, num_examples=cfg.num_examples, frames=cfg.frames, height=cfg.height,
                              width=cfg.width)
    from sana_jax.training.data.latent_cache import LatentCacheExamples

    return LatentCacheExamples(cfg.path)


class DataIterator:
    """Infinite iterator of this process's batches; ``get_state``/``set_state`` resume exactly; ``skipped``."""

    def __init__(self, cfg: DataConfig, loader, *, batch_size: int, process_index: int, process_count: int):
        self._cfg, self._loader = cfg, loader
        self._batch_size, self._process_index, self._process_count = batch_size, process_index, process_count
        self._rows = batch_size // process_count
        self._num_records = len(loader)
        # Past this many unreadable records in a row, the data set is taken to be broken rather than patchy.
        self._max_consecutive_skips = max(64, 8 * self._num_records)
        self._position = 0       # stream records consumed (returned in a batch or skipped)
        self._skipped = 0
        self._consecutive_skips = 0
        self._iter = None

    @property
    def skipped(self) -> int:
        """Unreadable records this process has skipped so far (counted across resumes)."""
        return self._skipped

    @property
    def rows(self) -> int:
        """Rows of each batch on this process: batch_size // process_count."""
        return self._rows

    def __iter__(self) -> "DataIterator":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._iter is None:
            self._iter = iter(self._grain_dataset(self._position))
        rows = []
        while len(rows) < self._rows:
            example = next(self._iter)
            self._position += 1
            if isinstance(example, Unreadable):
                self._skip(example)
                continue
            self._consecutive_skips = 0
            rows.append(example)
        return self._loader.collate(rows)

    def _skip(self, example: Unreadable) -> None:
        self._skipped += 1
        self._consecutive_skips += 1
        _log.warning("data: skipping %s: %s (%d skipped so far by process %d)", example.what, example.reason,
                     self._skipped, self._process_index)
        if self._consecutive_skips > self._max_consecutive_skips:
            raise RuntimeError(f"data: {self._consecutive_skips} unreadable records in a row from source "
                               f"{self._cfg.source!r} ({self._cfg.path or 'generated'}); the last: {example.what}: "
                               f"{example.reason}")

    def _grain_dataset(self, start: int) -> grain.IterDataset:
        cfg = self._cfg
        order = global_order(self._num_records, seed=cfg.seed, shuffle=cfg.shuffle)
        stream = ProcessStream(order, batch_size=self._batch_size, process_index=self._process_index,
                               process_count=self._process_count, start=start)
        ds = stream.map(self._loader).to_iter_dataset(
            grain.ReadOptions(num_threads=cfg.read_threads, prefetch_buffer_size=cfg.prefetch * self._rows))
        if cfg.num_workers > 0:
            _absl_flags_ready()
            ds = ds.mp_prefetch(grain.MultiprocessingOptions(
                num_workers=cfg.num_workers, per_worker_buffer_size=max(1, cfg.prefetch * self._rows)))
        return ds

    # ------------------------------------------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        """JSON-serialisable: the stream position, the skip count and what they are positions of."""
        return {"format": STATE_FORMAT, "position": self._position, "skipped": self._skipped,
                "consecutive_skips": self._consecutive_skips, **self._identity()}

    def set_state(self, state: dict[str, Any]) -> None:
        """Continues exactly where the iterator that produced ``state`` was (same data config and process layout)."""
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"data state: format {state.get('format')!r}; expected {STATE_FORMAT!r}")
        differ = [f"{key}={state.get(key)!r} saved, {value!r} now" for key, value in self._identity().items()
                  if state.get(key) != value]
        if differ:
            raise ValueError(f"data state: {'; '.join(differ)}. A data state only resumes the same data order and "
                             f"process layout")
        self.close()
        self._position, self._skipped = int(state["position"]), int(state["skipped"])
        self._consecutive_skips = int(state.get("consecutive_skips", 0))

    def _identity(self) -> dict[str, Any]:
        cfg = self._cfg
        return {"source": cfg.source, "seed": cfg.seed, "shuffle": cfg.shuffle,
                "num_records": self._num_records, "batch_size": self._batch_size,
                "process_index": self._process_index, "process_count": self._process_count}

    def close(self) -> None:
        """Stops the grain pipeline (its threads and worker processes); iteration restarts it where it was."""
        if self._iter is not None:
            close = getattr(self._iter, "close", None)
            if close is not None:
                close()
            self._iter = None

    def __enter__(self) -> "DataIterator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 -- interpreter shutdown
            pass


def _absl_flags_ready() -> None:
    """grain's worker processes read absl flags (their defaults will do); without ``absl.app.run`` nobody has
    parsed them, and reading an unparsed flag raises, so mark them parsed, leaving every value at its default."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
