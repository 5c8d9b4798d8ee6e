"""Convolutions expressed the way XLA runs them well.

XLA's grouped convolution is ~10x slower on CPU than shifted multiply-adds for depthwise kernels
(measured in the reference notes), so the depthwise 3x3 is written as k*k shifted products.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax.linen.dtypes import promote_dtype


def _pad_same(x: jnp.ndarray, kh: int, kw: int) -> jnp.ndarray:
    """x (..., H, W, C) zero-padded for a 'same' conv with an odd kh x kw kernel."""
    lead = ((0, 0),) * (x.ndim - 3)
    return jnp.pad(x, (*lead, (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))


def depthwise_conv2d(x: jnp.ndarray, kernel: jnp.ndarray, bias: jnp.ndarray | None = None) -> jnp.ndarray:
    """Depthwise 'same' conv with zero padding over the H, W axes. x: (..., H, W, C); kernel: (kh, kw, C) with odd
    kh, kw. Leading axes (batch, frames) stay separate, so a sharding along them is kept as it is."""
    kh, kw, _ = kernel.shape
    h, w = x.shape[-3:-1]
    xp = _pad_same(x, kh, kw)
    out = None
    for i in range(kh):
        for j in range(kw):
            term = xp[..., i:i + h, j:j + w, :] * kernel[i, j]
            out = term if out is None else out + term
    if bias is not None:
        out = out + bias
    return out


# On CPU, conv3d picks its form by the input channels per output pixel of a frame (whole decodes and encodes on the
# 2-core CPU, XLA's own Eigen kernels as `sana_jax._compile` compiles them, against XLA's 3-D convolution):
# per-frame 2-D convolutions summed over the time taps where frames are large for their channels (2x at the LTX-2
# VAE's 128-256 channels on 16x24 and 8x12 pixels; the Wan2.1 VAE's 96-384 channels keep this form, im2col at 384
# channels measured 4-7% slower in its decode), one matmul over the concatenated shifted views (im2col) where they
# are small (the kernel is then read once: 2.4x at 2048 channels on 2x3 pixels, 1.2-1.5x at 512-1024 channels on
# 4x6 and 8x12). The published LTX-2 decode (benchmarks/ltx2_vae.py's size) then took 0.49x the time of XLA's 3-D
# convolutions, the encode 0.62x (both with `_compile`'s options against XLA's defaults before; with XLA's defaults on
# both sides 0.76x / 0.93x). Unmeasured: frames of hundreds of pixels at 512-2048 channels (720p latents), where
# the rule picks the per-tap form.
_IM2COL_CHANNELS_PER_PIXEL = 4


def conv3d(x: jnp.ndarray, kernel: jnp.ndarray, strides: tuple[int, int, int] = (1, 1, 1),
           spatial_padding: tuple = ((0, 0), (0, 0)), zero_frames: int = 0) -> jnp.ndarray:
    """Conv over (T, H, W) with zero ``spatial_padding`` ((top, bottom), (left, right)) and, in time, ``zero_frames``
    zero frames in front of x (causal zero padding; the caller pads time any other way itself). x: (B, T, H, W, C_in);
    kernel (kt, kh, kw, C_in, C_out); ``strides`` (t, h, w).

    The form is chosen by measurement: on CPU, one matmul over the concatenated shifted views when C_in exceeds
    ``_IM2COL_CHANNELS_PER_PIXEL`` times the output pixels of a frame, otherwise per-frame 2-D convs summed over the
    kt time taps, each tap convolving only the real frames it reads (a causal Wan2.1 conv over a clip's first 3-9
    frames reads a zero frame in 1/3-1/9 of its taps); elsewhere XLA's own 3-D convolution (the others not measured
    there).
    """
    kh, kw, c_in = kernel.shape[1:4]
    if x.shape[-1] != c_in:
        raise ValueError(f"conv3d: x has {x.shape[-1]} channels, the kernel expects {c_in}")
    kernel = kernel.astype(x.dtype)
    (top, bottom), (left, right) = spatial_padding
    pixels = ((x.shape[2] + top + bottom - kh) // strides[1] + 1) * ((x.shape[3] + left + right - kw) // strides[2] + 1)
    cpu, im2col = jax.default_backend() == "cpu", c_in > _IM2COL_CHANNELS_PER_PIXEL * pixels
    if cpu and not im2col and strides[0] == 1:
        return _conv3d_per_tap(x, kernel, strides, spatial_padding, zero_frames)
    if zero_frames:
        x = jnp.concatenate([jnp.zeros(x.shape[:1] + (zero_frames,) + x.shape[2:], x.dtype), x], axis=1)
    if not cpu:
        return _conv3d_xla(x, kernel, strides, spatial_padding)
    return (_conv3d_im2col if im2col else _conv3d_per_tap)(x, kernel, strides, spatial_padding)


def _conv3d_xla(x, kernel, strides, spatial_padding):
    return jax.lax.conv_general_dilated(x, kernel, strides, ((0, 0), *spatial_padding),
                                        dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))


def _conv3d_per_tap(x, kernel, strides, spatial_padding, zero_frames: int = 0):
    """``conv3d`` as a sum over the time taps of per-frame 2-D convs (matmuls for 1x1 taps without padding); with
    ``zero_frames`` (time stride 1), each tap convolves only x's frames and the sum is assembled per output range."""
    kt, kh, kw = kernel.shape[:3]
    st, sh, sw = strides
    if zero_frames and st != 1:
        raise ValueError(f"conv3d: zero_frames={zero_frames} needs a time stride of 1, got {st}")
    b, t = x.shape[:2]
    n = (t + zero_frames - kt) // st + 1
    flat = kh == kw == sh == sw == 1 and not any(np.ravel(spatial_padding))
    terms = []                       # (first output frame, the tap's outputs from there on)
    for i in range(kt):
        first = max(zero_frames - i, 0)
        if first >= n:
            continue
        frames = x[:, i + st * first - zero_frames:i + st * (n - 1) + 1 - zero_frames:st]
        if flat:
            term = frames @ kernel[i, 0, 0]
        else:
            term = jax.lax.conv_general_dilated(frames.reshape((-1,) + frames.shape[2:]), kernel[i], (sh, sw),
                                                spatial_padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
            term = term.reshape((b, n - first) + term.shape[1:])
        terms.append((first, term))
    # each range of output frames sums the taps that reach it, in tap order
    segments, starts = [], sorted({first for first, _ in terms} | {0})
    for start, end in zip(starts, starts[1:] + [n]):
        parts = [term[:, start - first:end - first] for first, term in terms if first <= start]
        # no part: more zero frames than taps, nothing reaches these outputs
        segments.append(functools.reduce(jnp.add, parts) if parts
                        else jnp.zeros((b, end - start) + terms[-1][1].shape[2:], x.dtype))
    return segments[0] if len(segments) == 1 else jnp.concatenate(segments, axis=1)


def _conv3d_im2col(x, kernel, strides, spatial_padding):
    """``conv3d`` as one matmul: the kt * kh * kw shifted (strided) views concatenated along channels."""
    kt, kh, kw, c_in, c_out = kernel.shape
    st, sh, sw = strides
    x = jnp.pad(x, ((0, 0), (0, 0), *spatial_padding, (0, 0)))
    t, h, w = x.shape[1:4]
    n, oh, ow = (t - kt) // st + 1, (h - kh) // sh + 1, (w - kw) // sw + 1
    views = [x[:, i:i + st * (n - 1) + 1:st, j:j + sh * (oh - 1) + 1:sh, k:k + sw * (ow - 1) + 1:sw]
             for i in range(kt) for j in range(kh) for k in range(kw)]
    return jnp.concatenate(views, axis=-1) @ kernel.reshape(kt * kh * kw * c_in, c_out)


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


def _depthwise_kernel_grad(x, g, kh: int, kw: int) -> jnp.ndarray:
    """d(depthwise_conv2d(x, kernel))/d(kernel) contracted with g: (kh, kw, C), one tap at a time.

    On one CPU device a loop, not kh*kw independent reductions: XLA:CPU would first materialise every shifted copy
    of x and only then reduce them (9 copies of an activation: 20 ms instead of 3.5 ms at (2, 8, 8, 8, 1280), the
    copies no longer in cache); in a loop each copy is reduced while it is hot.
    """
    h, w = x.shape[-3:-1]
    xp = _pad_same(x, kh, kw)
    axes = tuple(range(g.ndim - 1))
    if jax.default_backend() != "cpu" or not jax.sharding.get_abstract_mesh().empty:
        # under a mesh, independent sums: a loop would all-reduce each tap's partial sums apart, once per tap
        return jnp.stack([jnp.sum(xp[..., i:i + h, j:j + w, :] * g, axis=axes)
                          for i in range(kh) for j in range(kw)]).reshape(kh, kw, -1)

    def tap(k):
        view = jax.lax.dynamic_slice_in_dim(jax.lax.dynamic_slice_in_dim(xp, k // kw, h, axis=-3), k % kw, w, axis=-2)
        return jnp.sum(view * g, axis=axes)

    return jax.lax.map(tap, jnp.arange(kh * kw)).reshape(kh, kw, -1)


def _silu_grad(x, sig):
    return sig * (1 + x * (1 - sig))


@jax.custom_vjp
def glu_depthwise(u: jnp.ndarray, kernel: jnp.ndarray, bias: jnp.ndarray) -> jnp.ndarray:
    """SANA's GLUMBConv middle: ``value * silu(gate)`` with ``value, gate = split(depthwise(silu(u)) + bias)``.

    u: (..., H, W, 2C); kernel (kh, kw, 2C); bias (2C,) -> (..., H, W, C). Same values as the composition; its
    gradient is written out so that each stage is computed once: left to autodiff, XLA:CPU fuses the 3x3 stencil
    into every consumer (the stencil of the stencil in the input gradient) and keeps several (..., 2C) activations
    per layer for the backward. Saved for the backward: u only (and the kernel, bias). The small DiT's training
    step on 2 CPU cores (benchmarks/train_step.py), old and new taking turns: scanned 0.511 -> 0.405 s, unrolled
    0.361 -> 0.329 s, XLA temp memory 559 -> 245 MB.
    """
    return _glu_depthwise_fwd(u, kernel, bias)[0]


def _in_memory(kernel, bias):
    """(kernel, bias) as values XLA:CPU reads from memory: an identity product, which XLA does not fuse into the
    stencil's loop. Inside a scan over layers they are slices of the stacked params, and fused into the stencil
    the slice is recomputed for every element: 6.9 vs 2.0 ms for a 3x3 stencil + SiLU at (2, 8, 8, 8, 1280)."""
    if jax.default_backend() != "cpu":
        return kernel, bias
    kh, kw, c = kernel.shape
    both = jnp.concatenate([kernel.reshape(kh * kw, c), bias[None]])
    both = jnp.dot(jnp.eye(kh * kw + 1, dtype=both.dtype), both, precision=jax.lax.Precision.HIGHEST)
    return both[:-1].reshape(kernel.shape), both[-1]


def _glu_depthwise_fwd(u, kernel, bias):
    y = depthwise_conv2d(jax.nn.silu(u), *_in_memory(kernel, bias))
    value, gate = jnp.split(y, 2, axis=-1)
    return value * jax.nn.silu(gate), (u, kernel, bias)


def _glu_depthwise_bwd(res, g):
    u, kernel, bias = res
    kh, kw, _ = kernel.shape
    kernel, bias = _in_memory(kernel, bias)
    sig_u = jax.nn.sigmoid(u)
    y1 = u * sig_u
    y2 = depthwise_conv2d(y1, kernel, bias)
    value, gate = jnp.split(y2, 2, axis=-1)
    sig_g = jax.nn.sigmoid(gate)
    dy2 = jnp.concatenate([g * gate * sig_g, g * value * _silu_grad(gate, sig_g)], axis=-1)
    dkernel = _depthwise_kernel_grad(y1, dy2, kh, kw)
    dbias = jnp.sum(dy2, axis=tuple(range(dy2.ndim - 1)))
    # the input gradient: the same stencil with the kernel flipped, read from dy2
    dy1 = depthwise_conv2d(dy2, kernel[::-1, ::-1])
    return dy1 * _silu_grad(u, sig_u), dkernel.astype(kernel.dtype), dbias.astype(bias.dtype)


glu_depthwise.defvjp(_glu_depthwise_fwd, _glu_depthwise_bwd)
