"""A tiny training setup shared by the training tests and benchmarks: the tiny_smoke config and fixed random batches.

`REPO` is the source checkout this package was imported from: ``configs/`` and ``train.py`` are not package data, so
`load_config` needs a checkout (or an editable install of one); `random_batch` and `null_text` need nothing.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_config(name: str = "tiny_smoke", **overrides):
    """configs/NAME.py's get_config() with dotted ``overrides`` ({"objective.block_frames": 2, ...})."""
    path = os.path.join(REPO, "configs", f"{name}.py")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such config; configs/ lives in the source checkout, not the package")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    for key, value in overrides.items():
        node = config
        *path, last = key.split(".")
        for part in path:
            node = node[part]
        node[last] = value
    return config


def random_batch(batch: int, latent_shape, text_length: int, text_dim: int, seed: int = 0) -> dict:
    """{"latents" (B, *latent_shape), "text_embeds" (B, L, D) float32, "text_mask" (B, L) int32 with 1..L valid}."""
    rng = np.random.default_rng(seed)
    valid = rng.integers(1, text_length + 1, (batch, 1))
    return {"latents": rng.normal(size=(batch, *latent_shape)).astype(np.float32),
            "text_embeds": rng.normal(size=(batch, text_length, text_dim)).astype(np.float32),
            "text_mask": (np.arange(text_length)[None] < valid).astype(np.int32)}


def null_text(text_length: int, text_dim: int, seed: int = 1):
    """The negative (empty) caption of a training config: embeds (L, D) float32 and mask (L,) with one valid token."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(text_length, text_dim)).astype(np.float32), np.eye(1, text_length, dtype=np.int32)[0]
