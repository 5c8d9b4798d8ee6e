"""Gemma's layers: RMSNorm with a zero-centred weight, x * rsqrt(mean x^2 + eps) * (1 + w), and rotate-half RoPE.

Both differ from the DiT's: diffusers' RMSNorm multiplies by w, and the DiT's RoPE rotates interleaved channel
pairs (2i, 2i+1) where Gemma rotates channel i with channel i + d/2.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def gemma_rms_norm(x: jnp.ndarray, weight: jnp.ndarray, eps: float) -> jnp.ndarray:
    """x * rsqrt(mean(x^2) + eps) * (1 + weight) over the last axis, all in fp32, result in x.dtype.

    The product with (1 + w) happens before the cast back (transformers' Gemma2RMSNorm), not after as in Llama.
    """
    xf = x.astype(jnp.float32)
    y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
    return (y * (1.0 + weight.astype(jnp.float32))).astype(x.dtype)


class GemmaRMSNorm(nn.Module):
    """Gemma RMSNorm with a learnable zero-initialised offset ``scale`` (the checkpoint's ``weight``). x: (..., D)."""

    eps: float = 1e-6
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        init = nn.with_logical_partitioning(nn.initializers.zeros, ("embed",))
        return gemma_rms_norm(x, self.param("scale", init, (x.shape[-1],), self.param_dtype), self.eps)


def rotate_half_rope_table(length: int, head_dim: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin tables (length, head_dim) for positions 0..length-1, each frequency on channels i and i + d/2.

    fp32 throughout, as transformers computes them: inv_freq = 1 / theta^(2i/d), phase = position * inv_freq.
    """
    inv_freq = (1.0 / (np.float32(theta) ** (np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim))))
    phase = np.arange(length, dtype=np.float32)[:, None] * inv_freq.astype(np.float32)[None, :]
    phase = np.concatenate([phase, phase], axis=-1)
    return np.cos(phase).astype(np.float32), np.sin(phase).astype(np.float32)


def apply_rotate_half_rope(x: jnp.ndarray, cos: jnp.ndarray, sin: jnp.ndarray) -> jnp.ndarray:
    """x * cos + rotate_half(x) * sin, rotate_half(x) = [-x2, x1]. x: (B, L, ..., d); cos, sin: (L, d)."""
    shape = (cos.shape[0],) + (1,) * (x.ndim - 3) + (cos.shape[-1],)
    c = jnp.asarray(cos).reshape(shape).astype(x.dtype)
    s = jnp.asarray(sin).reshape(shape).astype(x.dtype)
    x1, x2 = jnp.split(x, 2, axis=-1)
    return x * c + jnp.concatenate([-x2, x1], axis=-1) * s
