"""The ``data`` section of a training config, read once and checked, so a bad key fails at start-up by name.

``data_cfg`` is an ``ml_collections.ConfigDict`` (or any mapping). Keys of every source may be present at once (an
experiment file can switch ``source`` on the command line); a key that no source knows is an error.
"""

from __future__ import annotations

import dataclasses
import difflib
import numbers
from typing import Any, Mapping

SOURCES = ("synthetic", "manifest", "latent_cache", "shapes")


class DataConfigError(ValueError):
    """A ``data`` config key that is missing, unknown or holds a bad value."""


@dataclasses.dataclass(frozen=True)
class DataConfig:
    source: str                  # "synthetic" | "manifest" | "latent_cache" | "shapes"
    seed: int                    # the order's seed (and the synthetic examples'); in [0, 2**32)
    shuffle: bool = True         # False: records 0..N-1 in every epoch
    num_workers: int = 0         # 0: decode in this process; > 0: that many grain worker processes
    prefetch: int = 2            # batches decoded ahead of the consumer
    read_threads: int = 1        # decoding threads per process (PyAV and ArrayRecord reads release the GIL)
    # synthetic and shapes (the demo world of sana_jax.shapes.world: clips of its training combinations)
    num_examples: int = 0
    latent_shape: tuple[int, ...] = ()   # (F', H', W', C)
    text_length: int = 0         # L
    text_dim: int = 0            # D
    # manifest and latent_cache
    path: str = ""               # manifest: a JSONL file; latent_cache: a folder written by precompute_latent_cache
    # manifest and shapes
    height: int = 0
    width: int = 0
    frames: int = 0
    fps: float = 0.0


_REQUIRED = {
    "synthetic": ("num_examples", "latent_shape", "text_length", "text_dim"),
    "manifest": ("path", "height", "width", "frames", "fps"),
    "latent_cache": ("path",),
    "shapes": ("num_examples", "height", "width", "frames"),
}
_KNOWN = {f.name for f in dataclasses.fields(DataConfig)}


def read_data_config(data_cfg: Any) -> DataConfig:
    """Checks ``data_cfg`` and returns it as a frozen ``DataConfig`` (one given is returned as is); errors name the
    key (``data.KEY``), an unknown key also the nearest valid one."""
    if isinstance(data_cfg, DataConfig):
        return data_cfg
    raw = _as_dict(data_cfg)
    unknown = sorted(set(raw) - _KNOWN)
    if unknown:
        nearest = difflib.get_close_matches(unknown[0], sorted(_KNOWN), n=1)
        hint = f"the nearest valid key is data.{nearest[0]}" if nearest else f"valid keys: {sorted(_KNOWN)}"
        raise DataConfigError(f"data.{unknown[0]}: unknown key in section 'data'; {hint}")
    if "source" not in raw:
        raise DataConfigError(f"data.source: missing; expected one of {SOURCES}")
    source = raw["source"]
    if source not in SOURCES:
        raise DataConfigError(f"data.source={source!r}: unknown source; expected one of {SOURCES}")
    for key in ("seed",) + _REQUIRED[source]:
        if key not in raw or raw[key] is None:
            raise DataConfigError(f"data.{key}: missing (required by source {source!r})")

    values: dict[str, Any] = {"source": source}
    values["seed"] = _int(raw, "seed", low=0, high=2**32 - 1)
    if "shuffle" in raw:
        if not isinstance(raw["shuffle"], bool):
            raise DataConfigError(f"data.shuffle={raw['shuffle']!r}: expected True or False")
        values["shuffle"] = raw["shuffle"]
    for key in ("num_workers", "prefetch"):
        if key in raw:
            values[key] = _int(raw, key, low=0)
    if "read_threads" in raw:
        values["read_threads"] = _int(raw, "read_threads", low=1)
    if source == "synthetic":
        for key in ("num_examples", "text_length", "text_dim"):
            values[key] = _int(raw, key, low=1)
        shape = raw["latent_shape"]
        if (not isinstance(shape, (tuple, list)) or len(shape) != 4
                or not all(_is_int(s) and s > 0 for s in shape)):
            raise DataConfigError(f"data.latent_shape={shape!r}: expected 4 positive ints (F', H', W', C)")
        values["latent_shape"] = tuple(int(s) for s in shape)
    elif source == "shapes":
        for key in ("num_examples", "height", "width", "frames"):
            values[key] = _int(raw, key, low=1)
    else:
        if not isinstance(raw["path"], str) or not raw["path"]:
            raise DataConfigError(f"data.path={raw['path']!r}: expected a non-empty path")
        values["path"] = raw["path"]
    if source == "manifest":
        for key in ("height", "width", "frames"):
            values[key] = _int(raw, key, low=1)
        fps = raw["fps"]
        if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not fps > 0:
            raise DataConfigError(f"data.fps={fps!r}: expected a positive number")
        values["fps"] = float(fps)
    return DataConfig(**values)


def _as_dict(data_cfg: Any) -> dict[str, Any]:
    if hasattr(data_cfg, "to_dict"):
        return data_cfg.to_dict()
    if isinstance(data_cfg, Mapping):
        return dict(data_cfg)
    raise DataConfigError(f"data config: expected an ml_collections.ConfigDict or a mapping; "
                          f"got {type(data_cfg).__name__}")


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _int(raw: Mapping[str, Any], key: str, *, low: int, high: int | None = None) -> int:
    v = raw[key]
    if not _is_int(v) or v < low or (high is not None and v > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise DataConfigError(f"data.{key}={v!r}: expected an int {bound}")
    return int(v)
