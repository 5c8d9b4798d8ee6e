"""The flow-matching objective of SANA-Video training (NVlabs ``linear_flow`` with ``predict_flow_v``).

A 1000-step grid sigma_i = 0.001 i, shifted by the flow shift s: sigma'_i = s sigma_i / (1 + (s - 1) sigma_i).
x_t = (1 - sigma') x_0 + sigma' eps; the model sees the integer timestep int(1000 sigma'_i) and predicts the
velocity eps - x_0; the loss is the mean squared error over all non-batch axes, then the batch mean.

Timestep indices come from a logit-normal: i = floor(1000 sigmoid(N(mean, std))). Block-causal training
(diffusion forcing) draws one index per block of latent frames, non-decreasing with the block index, so earlier
blocks are cleaner — from a mixture of ways to draw them (``BLOCK_MODES``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

NUM_TRAIN_TIMESTEPS = 1000
# same_t: every block one index; incremental: sorted independent draws (non-decreasing with the block);
# teacher_forcing_clean: a random prefix of blocks clean (index 0), the rest one index; uniform: independent draws.
BLOCK_MODES = ("same_t", "incremental", "teacher_forcing_clean", "uniform")


def flow_sigmas(flow_shift: float, num: int = NUM_TRAIN_TIMESTEPS) -> tuple[np.ndarray, np.ndarray]:
    """The shifted sigma grid (num,) float32 and the integer timestep map (num,) the model is given."""
    base = 1.0 - np.linspace(1.0, 1.0 / num, num, dtype=np.float64)
    shifted = flow_shift * base / (1.0 + (flow_shift - 1.0) * base)
    return shifted.astype(np.float32), (shifted * num).astype(np.int64).astype(np.float32)


def logit_normal_indices(rng, shape, mean: float = 0.0, std: float = 1.0, num: int = NUM_TRAIN_TIMESTEPS):
    """Integer timestep indices in [0, num): floor(num * sigmoid(N(mean, std)))."""
    u = jax.nn.sigmoid(mean + std * jax.random.normal(rng, shape, jnp.float32))
    return jnp.clip(jnp.floor(u * num).astype(jnp.int32), 0, num - 1)


def block_indices(rng, batch: int, num_blocks: int, probs: dict, *, mean: float = 0.0, std: float = 1.0):
    """Per-block timestep indices (B, K), non-decreasing along K in every mode but ``uniform``.

    ``probs``: {mode: probability} over ``BLOCK_MODES`` (missing modes have probability 0)."""
    unknown = sorted(set(probs) - set(BLOCK_MODES))
    if unknown:
        raise ValueError(f"block timestep modes {unknown} are unknown; expected some of {BLOCK_MODES}")
    p = np.array([float(probs.get(m, 0.0)) for m in BLOCK_MODES])
    if p.min() < 0 or p.sum() <= 0:
        raise ValueError(f"block timestep mode probabilities {probs} must be >= 0 with a positive sum")
    k_mode, k_draw, k_prefix = jax.random.split(rng, 3)
    draws = logit_normal_indices(k_draw, (batch, num_blocks), mean, std)
    same = jnp.broadcast_to(draws[:, :1], (batch, num_blocks))
    prefix = jax.random.randint(k_prefix, (batch, 1), 0, num_blocks)  # clean blocks: 0 .. K - 1 of them
    clean = jnp.where(jnp.arange(num_blocks)[None] < prefix, 0, same)
    options = jnp.stack([same, jnp.sort(draws, axis=1), clean, draws])  # (modes, B, K), order of BLOCK_MODES
    mode = jax.random.choice(k_mode, len(BLOCK_MODES), (batch,), p=jnp.asarray(p / p.sum(), jnp.float32))
    return jnp.take_along_axis(options, mode[None, :, None], axis=0)[0]


def noised(x0, noise, sigma):
    """x_t = (1 - sigma) x_0 + sigma eps and the velocity target eps - x_0; sigma broadcasts against x0."""
    return (1.0 - sigma) * x0 + sigma * noise, noise - x0


def masked_mse(pred, target, weight):
    """Mean over non-batch axes of weight * (pred - target)^2, normalised by the weight's coverage; batch mean.

    pred, target: (B, ...); weight: broadcastable to them, 1 where the loss counts and 0 where it does not
    (an image-to-video first frame, a teacher-forced clean block)."""
    err = jnp.square(pred.astype(jnp.float32) - target.astype(jnp.float32))
    weight = jnp.broadcast_to(weight.astype(jnp.float32), err.shape)
    axes = tuple(range(1, err.ndim))
    per_sample = jnp.sum(err * weight, axes) / jnp.maximum(jnp.sum(weight, axes), 1.0)
    return jnp.mean(per_sample)
