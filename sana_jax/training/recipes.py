"""Config sections as ``ml_collections.ConfigDict``s with every key of their typed section (``training.config``),
at its default unless overridden; experiment files in configs/ start from these and override what differs, so any
key can be set by ``--config.KEY=VALUE``. The defaults are the published SANA-Video training recipe (reference:
NVlabs configs, ``Sana_2000M_480px_AdamW_fsdp.yaml``); a misspelt override stops here, naming the nearest key.
"""

from __future__ import annotations

import dataclasses

import ml_collections

from sana_jax.training.config import (AutoencoderModelConfig, AutoencoderObjectiveConfig, DataConfig,
                                      DiTModelConfig, FlowMatchingConfig, MeshConfig, OdeInitConfig, OptimConfig,
                                      SelfForcingConfig, TrainingConfigError, unknown_key_message)


def adamw(**overrides) -> ml_collections.ConfigDict:
    """AdamW lr 5e-5, betas (0.9, 0.999), eps 1e-10, no weight decay, 500 linear warm-up steps then constant,
    gradient clip at global norm 0.1 (0 = off), no EMA (``ema_decay`` > 0 keeps one)."""
    return _section(OptimConfig, "optim", overrides)


def flow_matching(**overrides) -> ml_collections.ConfigDict:
    """Flow shift 3, logit-normal timesteps (mean 0, std 1), caption dropout 0.1, no image-to-video samples,
    bidirectional attention (``block_frames`` > 0: block-causal diffusion forcing with ``block_modes``), no RoPE
    time offsets."""
    return _section(FlowMatchingConfig, "objective", overrides)


def ode_init(**overrides) -> ml_collections.ConfigDict:
    """LongSANA stage 1: regress the block-causal student onto teacher ODE trajectories (``block_frames`` required;
    the few-step timesteps [1000, 960, 889, 727]). Reference recipe: AdamW lr 2e-5, betas (0.9, 0.999), wd 0.01,
    clip 10, no EMA."""
    return _section(OdeInitConfig, "objective", overrides)


def self_forcing(**overrides) -> ml_collections.ConfigDict:
    """LongSANA stages 2-3: Self-Forcing with DMD (``teacher`` and ``block_frames`` required): real-score CFG weight
    4 (NVlabs' guidance 3 in the c + g (c - u) form), DMD timesteps shift 5 clipped to [20, 980], one generator
    update per 5 critic updates. Reference recipe: generator lr 1e-5, critic lr 2e-6, betas (0, 0.999) both,
    wd 0.01, clip 10, EMA 0.99 of the generator."""
    return _section(SelfForcingConfig, "objective", overrides)


def reconstruction(**overrides) -> ml_collections.ConfigDict:
    """The autoencoder objective: ``l1_weight`` (required), no latent L2, no foreground weighting."""
    return _section(AutoencoderObjectiveConfig, "objective", overrides)


def dit_model(**overrides) -> ml_collections.ConfigDict:
    """The Linear DiT: ``architecture`` (diffusers config.json keys) or ``init_from``; fp32, scanned, remat
    dots_no_batch."""
    return _section(DiTModelConfig, "model", overrides)


def autoencoder_model(**overrides) -> ml_collections.ConfigDict:
    """An autoencoder (``class_name``: "AutoencoderDC" or "AutoencoderKLWan"): ``architecture`` or ``init_from``."""
    return _section(AutoencoderModelConfig, "model", overrides)


def mesh(**overrides) -> ml_collections.ConfigDict:
    """Mesh axis sizes (``data``, ``fsdp``, ``tensor``, ``sequence``; one may be -1), 1 unless given."""
    return _section(MeshConfig, "mesh", overrides)


def _section(cls, name: str, overrides: dict) -> ml_collections.ConfigDict:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in overrides:
        if key not in fields:
            raise TrainingConfigError(unknown_key_message(name, key, fields))
    values = {}
    for key, f in fields.items():
        if key in overrides:
            values[key] = overrides[key]
        elif f.default is not dataclasses.MISSING:
            values[key] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            values[key] = f.default_factory()
        # a required field without an override stays out: the reader names it as missing
    return ml_collections.ConfigDict(values)


def data(**overrides) -> ml_collections.ConfigDict:
    """The data section with every key (``source`` and ``seed`` are required: set them); the keys a source does
    not read are ignored by it (sana_jax.training.data.config)."""
    return _section(DataConfig, "data", overrides)
