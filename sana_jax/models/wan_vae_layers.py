"""Layers of the Wan2.1 causal video VAE (diffusers ``AutoencoderKLWan``), channels-last, whole-clip or chunked.

Every layer that mixes frames is causal: a kernel-3 conv over time sees its input with two frames in front of it.
For a whole clip these two frames are zeros; for a chunk of a longer clip they are the last two input frames of
the previous chunk. So each such layer takes a ``cache`` (B, 2, H, W, C) (``None`` = zeros, the start of a clip)
and returns the cache for the next chunk next to its output; decoding chunk by chunk and decoding the whole clip
then compute the same thing. Blocks pass caches as nested dicts keyed by child name.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sana_jax.nn.convs import conv3d

CACHE_FRAMES = 2  # kernel-3 causal convs look two frames back


def wan_rms_norm(x: jnp.ndarray, gamma: jnp.ndarray) -> jnp.ndarray:
    """x / max(||x||_2, 1e-12) * sqrt(C) * gamma over the channel (last) axis: diffusers ``WanRMS_norm``.

    There is no eps inside the root, only F.normalize's clamp of the L2 norm. Statistics in fp32.
    """
    xf = x.astype(jnp.float32)
    norm = jnp.sqrt(jnp.sum(xf * xf, axis=-1, keepdims=True))
    y = xf / jnp.maximum(norm, 1e-12) * jnp.float32(x.shape[-1] ** 0.5)
    return (y * gamma.astype(jnp.float32)).astype(x.dtype)


class WanRMSNorm(nn.Module):
    """``WanRMS_norm`` with its ``gamma`` (C,); no bias. x: (..., C)."""

    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        gamma = self.param("gamma", nn.initializers.ones, (x.shape[-1],), self.param_dtype)
        return wan_rms_norm(x, gamma)


def _conv2d(x, kernel, stride, padding):
    """Channels-last 2-D conv. x: (N, H, W, C_in); kernel (kh, kw, C_in, C_out); padding ((t, b), (l, r))."""
    return jax.lax.conv_general_dilated(x, kernel.astype(x.dtype), (stride, stride), padding,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


class CausalConv3d(nn.Module):
    """diffusers ``WanCausalConv3d``: zero-padded in space, causal in time. kernel (kt, kh, kw, C_in, C_out).

    ``causal`` kt-1 frames come from ``cache`` (zeros when None) in front of x; stride_t > 1 (the encoder's
    temporal downsample) uses no time padding at all (``causal=False``). x: (B, T, H, W, C_in).
    Returns (y, new cache (B, 2, H, W, C_in)); the cache is None for kernels without a time extent.
    """

    features: int
    kernel_size: tuple[int, int, int] = (3, 3, 3)
    stride_t: int = 1
    causal: bool = True
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, cache=None):
        kt, kh, kw = self.kernel_size
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (kt, kh, kw, x.shape[-1], self.features),
                            self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
        x = x.astype(self.dtype)
        new_cache = None
        if kt == kh == kw == 1:
            y = x @ kernel[0, 0, 0].astype(self.dtype)
        else:
            zero_frames = 0   # a clip's start: kt - 1 zero frames in front, which conv3d skips rather than convolves
            if self.causal and kt > 1:
                if cache is None:
                    zero_frames = kt - 1
                    held = jnp.zeros(x.shape[:1] + (max(CACHE_FRAMES - x.shape[1], 0),) + x.shape[2:], x.dtype)
                    new_cache = jnp.concatenate([held, x[:, -CACHE_FRAMES:]], axis=1)
                else:
                    x = jnp.concatenate([cache.astype(x.dtype), x], axis=1)
                    new_cache = x[:, -CACHE_FRAMES:]
            if x.shape[1] + zero_frames < kt:  # nothing to convolve (a chunk with no frame for this conv)
                return jnp.zeros(x.shape[:1] + (0,) + x.shape[2:4] + (self.features,), self.dtype), new_cache
            y = conv3d(x, kernel, (self.stride_t, 1, 1), ((kh // 2, kh // 2), (kw // 2, kw // 2)), zero_frames)
        return y + bias.astype(self.dtype), new_cache


class FrameConv2d(nn.Module):
    """A Conv2d applied to every frame. kernel (kh, kw, C_in, C_out); x: (B, T, H, W, C_in).

    ``padding`` is jax's ((top, bottom), (left, right)); ``stride`` the spatial stride.
    """

    features: int
    stride: int = 1
    padding: tuple = ((1, 1), (1, 1))
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (3, 3, x.shape[-1], self.features),
                            self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
        b, t = x.shape[:2]
        y = _conv2d(x.reshape((b * t,) + x.shape[2:]).astype(self.dtype), kernel, self.stride, self.padding)
        return (y + bias.astype(self.dtype)).reshape((b, t) + y.shape[1:])


class ResidualBlock(nn.Module):
    """norm -> SiLU -> causal conv -> norm -> SiLU -> causal conv, plus a 1x1x1 shortcut when C changes.

    x: (B, T, H, W, C_in) -> (B, T, H, W, out_dim). cache: {"conv1", "conv2"} or None.
    """

    out_dim: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, cache=None):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        cache = cache or {}
        shortcut = x
        if x.shape[-1] != self.out_dim:
            shortcut, _ = CausalConv3d(self.out_dim, (1, 1, 1), name="conv_shortcut", **kw)(x)
        h = nn.silu(WanRMSNorm(self.param_dtype, name="norm1")(x))
        h, c1 = CausalConv3d(self.out_dim, name="conv1", **kw)(h, cache.get("conv1"))
        h = nn.silu(WanRMSNorm(self.param_dtype, name="norm2")(h))
        h, c2 = CausalConv3d(self.out_dim, name="conv2", **kw)(h, cache.get("conv2"))
        return h + shortcut, {"conv1": c1, "conv2": c2}


class AttentionBlock(nn.Module):
    """Single-head softmax self-attention inside each frame over its H*W positions, scale 1/sqrt(C), residual.

    x: (B, T, H, W, C). Frames never see each other, so it needs no cache.
    """

    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        b, t, h, w, c = x.shape
        def dense(n, name):
            return nn.Dense(n, dtype=self.dtype, param_dtype=self.param_dtype, name=name)

        y = WanRMSNorm(self.param_dtype, name="norm")(x).reshape(b * t, h * w, c)
        q, k, v = jnp.split(dense(3 * c, "to_qkv")(y), 3, axis=-1)
        logits = jnp.einsum("nqc,nkc->nqk", q, k).astype(jnp.float32) / jnp.float32(c ** 0.5)
        attn = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        y = dense(c, "proj")(jnp.einsum("nqk,nkc->nqc", attn, v))
        return x + y.reshape(b, t, h, w, c).astype(x.dtype)


class Downsample(nn.Module):
    """Encoder resample (whole clip): zero-pad right/bottom by 1, 3x3 stride-2 conv per frame; for "3d" also a
    stride-2 temporal conv (kernel 3, no padding) over all frames, frame 0 kept apart in front.

    x: (B, 1 + 2k, H, W, C) -> (B, 1 + k (3d) or 1 + 2k (2d), H/2, W/2, C).
    """

    temporal: bool
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        c = x.shape[-1]
        x = FrameConv2d(c, stride=2, padding=((0, 1), (0, 1)), name="resample", **kw)(x)
        if not self.temporal:
            return x
        y, _ = CausalConv3d(c, (3, 1, 1), stride_t=2, causal=False, name="time_conv", **kw)(x)
        return jnp.concatenate([x[:, :1], y], axis=1)


def nearest_upsample2x(x: jnp.ndarray) -> jnp.ndarray:
    """Nearest(-exact) x2 in H and W: each pixel repeated 2x2. x: (B, T, H, W, C) -> (B, T, 2H, 2W, C)."""
    b, t, h, w, c = x.shape
    x = jnp.broadcast_to(x[:, :, :, None, :, None, :], (b, t, h, 2, w, 2, c))
    return x.reshape(b, t, 2 * h, 2 * w, c)


class Upsample(nn.Module):
    """Decoder resample: for "3d", a causal temporal conv to 2C channels whose halves become frames 2t and 2t+1
    (frame 0 of the clip is neither doubled nor seen by it); then nearest x2 + 3x3 conv to C // 2 per frame.

    x: (B, T, H, W, C); ``first``: the chunk starts the clip (its frame 0 is the clip's frame 0).
    Returns (B, T', 2H, 2W, C // 2) with T' = 2T (3d), 2T - 1 (3d, first) or T (2d), and {"time_conv": cache}.
    """

    temporal: bool
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, cache=None, first=True):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        b, t, h, w, c = x.shape
        new_cache = None
        if self.temporal:
            head, rest = (x[:, :1], x[:, 1:]) if first else (x[:, :0], x)
            time_conv = CausalConv3d(2 * c, (3, 1, 1), name="time_conv", **kw)
            y, new_cache = time_conv(rest, (cache or {}).get("time_conv"))
            n = y.shape[1]
            y = y.reshape(b, n, h, w, 2, c).transpose(0, 1, 4, 2, 3, 5).reshape(b, 2 * n, h, w, c)
            x = jnp.concatenate([head.astype(y.dtype), y], axis=1)
        x = FrameConv2d(c // 2, name="resample", **kw)(nearest_upsample2x(x))
        return x, {"time_conv": new_cache} if self.temporal else {}


class MidBlock(nn.Module):
    """resnet -> attention -> resnet at the lowest resolution. x: (B, T, H, W, C)."""

    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, cache=None):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        cache = cache or {}
        c = x.shape[-1]
        x, c0 = ResidualBlock(c, name="resnets_0", **kw)(x, cache.get("resnets_0"))
        x = AttentionBlock(name="attentions_0", **kw)(x)
        x, c1 = ResidualBlock(c, name="resnets_1", **kw)(x, cache.get("resnets_1"))
        return x, {"resnets_0": c0, "resnets_1": c1}
