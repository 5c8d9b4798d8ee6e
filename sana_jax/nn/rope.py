"""3-D rotary position embedding on interleaved channel pairs (Wan / SANA-Video layout).

The head dim splits into time, height and width parts: h = w = 2*(d//6), t = d - h - w (40/36/36 for d = 112).
Each part is a 1-D RoPE of its own width with theta 10000; frequencies are computed in float64 and stored in
float32, each repeated for its channel pair (2i, 2i+1), as diffusers lays them out.
"""

from __future__ import annotations

import dataclasses
import functools

import jax.numpy as jnp
import numpy as np


@functools.lru_cache(maxsize=None)
def _axis_table(dim: int, max_len: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin tables (max_len, dim) for one axis, pair-repeated, float64 math rounded to float32."""
    inv_freq = 1.0 / (theta ** (np.arange(0, dim, 2, dtype=np.float64)[: dim // 2] / dim))
    phase = np.outer(np.arange(max_len, dtype=np.float64), inv_freq)
    cos = np.repeat(np.cos(phase), 2, axis=1).astype(np.float32)
    sin = np.repeat(np.sin(phase), 2, axis=1).astype(np.float32)
    cos.flags.writeable = sin.flags.writeable = False
    return cos, sin


@dataclasses.dataclass(frozen=True)
class VideoRope:
    """Builds (cos, sin) tables (N, head_dim) for a (frames, height, width) token grid, row-major (f, h, w)."""

    head_dim: int
    max_len: int = 1024
    theta: float = 10000.0

    @property
    def split(self) -> tuple[int, int, int]:
        hw = 2 * (self.head_dim // 6)
        return (self.head_dim - 2 * hw, hw, hw)

    def __call__(self, grid: tuple[int, int, int], frame_offset=0) -> tuple[jnp.ndarray, jnp.ndarray]:
        """grid: (F, H, W) token grid; frame_offset (int or traced scalar) shifts the time positions. A traced
        offset cannot be checked here: past the table its positions read NaN, so callers check the whole video's
        length first (``pipeline.sana_video.latent_shape``)."""
        f, h, w = grid
        for name, n in zip("FHW", grid):
            if n > self.max_len:
                raise ValueError(f"token grid {grid}: {name} = {n} exceeds rope_max_seq_len {self.max_len}")
        tables = [_axis_table(dim, self.max_len, self.theta) for dim in self.split]
        if isinstance(frame_offset, int):
            if frame_offset + f > self.max_len:
                raise ValueError(f"frames {frame_offset}..{frame_offset + f - 1}: past rope_max_seq_len "
                                 f"{self.max_len}")
            t_pos = np.arange(frame_offset, frame_offset + f)
        else:
            t_pos = frame_offset + jnp.arange(f)
        out = []
        for which in (0, 1):  # cos, sin
            t = jnp.take(jnp.asarray(tables[0][which]), t_pos, axis=0)  # (F, dt)
            hh = tables[1][which][:h]
            ww = tables[2][which][:w]
            full = jnp.concatenate([
                jnp.broadcast_to(t[:, None, None, :], (f, h, w, t.shape[-1])),
                jnp.broadcast_to(jnp.asarray(hh)[None, :, None, :], (f, h, w, hh.shape[-1])),
                jnp.broadcast_to(jnp.asarray(ww)[None, None, :, :], (f, h, w, ww.shape[-1])),
            ], axis=-1)
            out.append(full.reshape(f * h * w, self.head_dim))
        return out[0], out[1]


def apply_interleaved_rope(x: jnp.ndarray, cos: jnp.ndarray, sin: jnp.ndarray) -> jnp.ndarray:
    """Rotates pairs (x[2i], x[2i+1]) by the table's phase. x: (B, N, H, d); cos, sin: (N, d) pair-repeated."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    c = cos[:, None, 0::2].astype(x.dtype)
    s = sin[:, None, 1::2].astype(x.dtype)
    return jnp.stack([x1 * c - x2 * s, x1 * s + x2 * c], axis=-1).reshape(x.shape)
