"""The published SANA-Video training recipe as config blocks; experiment files in configs/ start from these and
override what differs (reference: NVlabs configs, ``Sana_2000M_480px_AdamW_fsdp.yaml``)."""

from __future__ import annotations

import ml_collections


def adamw(**overrides) -> ml_collections.ConfigDict:
    """AdamW lr 5e-5, betas (0.9, 0.999), eps 1e-10, no weight decay, 500 linear warm-up steps then constant,
    gradient clip at global norm 0.1 (0 = off), no EMA (``ema_decay`` > 0 keeps one)."""
    c = ml_collections.ConfigDict(dict(lr=5e-5, b1=0.9, b2=0.999, eps=1e-10, weight_decay=0.0, warmup_steps=500,
                                       grad_clip=0.1, ema_decay=0.0))
    c.update(overrides)
    return c


def flow_matching(**overrides) -> ml_collections.ConfigDict:
    """Flow shift 3, logit-normal timesteps (mean 0, std 1), caption dropout 0.1, no image-to-video samples,
    bidirectional attention (``block_frames`` > 0: block-causal diffusion forcing with ``block_modes``)."""
    c = ml_collections.ConfigDict(dict(flow_shift=3.0, logit_mean=0.0, logit_std=1.0, caption_dropout=0.1,
                                       i2v_prob=0.0, block_frames=0, block_modes=dict(incremental=1.0)))
    c.update(overrides)
    return c
