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
    return _overridden(module.get_config(), overrides)


def _overridden(config, overrides: dict):
    """``config`` with dotted ``overrides`` set in place."""
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


def tiny_dit_folder(path, seed: int = 0) -> str:
    """A component folder (diffusers format) of the tiny_smoke transformer with random weights: a teacher for the
    distillation tests."""
    import flax.linen as nn
    import jax

    from sana_jax.components import Component, save_component
    from sana_jax.training.tasks import make_task

    task = make_task(load_config("tiny_smoke", **{"model.scan_layers": False}), null_text(8, 16))
    params = nn.meta.unbox(task.init(jax.random.PRNGKey(seed), task.minimal_batch()))
    save_component(Component(task.config.class_name, task.config, task.module, jax.device_get(params)), str(path))
    return str(path)


def tiny_prompt_cache(path, count: int = 8, latent_shape=(5, 4, 4, 4), text=(8, 16), seed: int = 0) -> str:
    """A latent cache of ``count`` random clips with captions and text embeddings (and a null text)."""
    from sana_jax.training.data.latent_cache import LatentCacheWriter

    os.makedirs(path, exist_ok=True)
    writer = LatentCacheWriter(str(path), records_per_shard=4)
    for i in range(count):
        b = random_batch(1, latent_shape, *text, seed=seed + i)
        writer.write(latents=b["latents"][0], text_embeds=b["text_embeds"][0], text_mask=b["text_mask"][0],
                     caption=f"caption {i}")
    writer.close(null_embeds=null_text(*text)[0], null_mask=null_text(*text)[1])
    return str(path)


def distill_config(task: str, teacher: str, **overrides):
    """The tiny_smoke run turned into a LongSANA stage: ``task`` "self_forcing" (synthetic clips of 5 latent
    frames, blocks 3 + 2) or "ode_init" (``data.path``: a trajectory cache, to be given)."""
    from sana_jax.training import recipes

    config = load_config("tiny_smoke", **{"model.scan_layers": False})
    config.task = task
    config.model.init_from = teacher
    config.optim = recipes.adamw(lr=1e-3, b1=0.0, warmup_steps=0, grad_clip=10.0, ema_decay=0.9)
    if task == "self_forcing":
        config.objective = recipes.self_forcing(teacher=teacher, block_frames=2, generator_every=2)
        config.critic_optim = recipes.adamw(lr=1e-3, b1=0.0, warmup_steps=0, grad_clip=10.0)
        config.data.latent_shape = (5, 4, 4, 4)
    else:
        config.objective = recipes.ode_init(block_frames=2, max_frame_offset=4)
        config.data = recipes.data(source="latent_cache", path="", seed=0, shuffle=True, num_workers=0)
    return _overridden(config, overrides)
