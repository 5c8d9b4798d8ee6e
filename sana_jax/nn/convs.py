"""Convolutions expressed the way XLA runs them well.

XLA's grouped convolution is ~10x slower on CPU than shifted multiply-adds for depthwise kernels
(measured in the reference notes), so the depthwise 3x3 is written as k*k shifted products.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax.linen.dtypes import promote_dtype


def depthwise_conv2d(x: jnp.ndarray, kernel: jnp.ndarray, bias: jnp.ndarray | None = None) -> jnp.ndarray:
    """Depthwise 'same' conv with zero padding over the H, W axes. x: (..., H, W, C); kernel: (kh, kw, C) with odd
    kh, kw. Leading axes (batch, frames) stay separate, so a sharding along them is kept as it is."""
    kh, kw, _ = kernel.shape
    ph, pw = kh // 2, kw // 2
    h, w = x.shape[-3:-1]
    lead = ((0, 0),) * (x.ndim - 3)
    xp = jnp.pad(x, (*lead, (ph, ph), (pw, pw), (0, 0)))
    out = None
    for i in range(kh):
        for j in range(kw):
            term = xp[..., i:i + h, j:j + w, :] * kernel[i, j]
            out = term if out is None else out + term
    if bias is not None:
        out = out + bias
    return out


def temporal_conv(x: jnp.ndarray, kernel: jnp.ndarray, left: jnp.ndarray | None = None,
                  block_sizes: tuple[int, ...] | None = None) -> jnp.ndarray:
    """Full (not depthwise) conv over frames with kernel 3, zero padding 1 on each side, no bias.

    x: (B, F, ..., C_in); kernel: (3, C_in, C_out). The three taps are one contraction over the stacked
    [previous, current, next] frames. Block-causal use: ``left`` (B, 1, ..., C_in) replaces the zero frame before
    frame 0, and with ``block_sizes`` (frames per block, summing to F) the last frame of each block sees a zero
    next frame instead of the next block's first.
    """
    # Shifts as slice + pad (not concatenate, nor pad + slice): frames sharded across devices then exchange one
    # frame with each neighbour (measured in benchmarks/train_step.py) instead of being re-laid out.
    rest = [(0, 0)] * (x.ndim - 2)
    if left is None:
        prev = jnp.pad(x[:, :-1], [(0, 0), (1, 0), *rest])
    else:
        prev = jnp.concatenate([left.astype(x.dtype), x[:, :-1]], axis=1)
    nxt = jnp.pad(x[:, 1:], [(0, 0), (0, 1), *rest])
    if block_sizes is not None and len(block_sizes) > 1:
        if sum(block_sizes) != x.shape[1]:
            raise ValueError(f"block_sizes {block_sizes} must sum to the {x.shape[1]} frames")
        keep = np.ones(x.shape[1], np.float32)
        keep[np.cumsum(block_sizes) - 1] = 0.0
        nxt = nxt * jnp.asarray(keep, x.dtype).reshape((1, -1) + (1,) * (x.ndim - 2))
    stacked = jnp.stack([prev, x, nxt], axis=-2)                     # (..., 3, C_in)
    # One einsum with the kernel as it is stored, so a quantized kernel (`sana_jax.quantize`) is recognised.
    stacked, kernel = promote_dtype(stacked, kernel, dtype=x.dtype)
    return jnp.einsum("...tc,tcd->...d", stacked, kernel)
