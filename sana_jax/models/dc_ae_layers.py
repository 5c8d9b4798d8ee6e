"""DC-AE building blocks (channels-last): convs, pixel (un)shuffle, ResBlock, the EfficientViT block with its
multi-scale ReLU linear attention, and the 2x down/up blocks with their parameter-free shortcuts."""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from sana_jax.nn import RMSNorm, dense, depthwise_conv2d

# diffusers `get_activation` names (torch's GELU is the exact erf form).
ACTIVATIONS: dict[str, Callable] = {
    "silu": nn.silu,
    "swish": nn.silu,
    "relu": nn.relu,
    "gelu": lambda x: nn.gelu(x, approximate=False),
    "mish": lambda x: x * jnp.tanh(nn.softplus(x)),
}

# ---------------------------------------------------------------------------------------------------------------
# Layers.


def _conv(features, *, kernel_size=3, stride=1, use_bias=True, dtype, param_dtype, name):
    """A PyTorch-style Conv2d with symmetric zero padding k // 2. Kernel (kh, kw, in, out)."""
    pad = kernel_size // 2
    return nn.Conv(features, (kernel_size, kernel_size), strides=(stride, stride), padding=((pad, pad), (pad, pad)),
                   use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, name=name,
                   kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                                            (None, None, None, "embed")),
                   bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)))


def pixel_unshuffle(x: jnp.ndarray) -> jnp.ndarray:
    """(B, H, W, C) -> (B, H/2, W/2, 4C), channel c*4 + 2*i + j for offset (i, j): torch's order."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 5, 2, 4)
    return x.reshape(b, h // 2, w // 2, 4 * c)


def pixel_shuffle(x: jnp.ndarray) -> jnp.ndarray:
    """Inverse of ``pixel_unshuffle``: (B, H, W, 4C) -> (B, 2H, 2W, C)."""
    b, h, w, c4 = x.shape
    x = x.reshape(b, h, w, c4 // 4, 2, 2).transpose(0, 1, 4, 2, 5, 3)
    return x.reshape(b, 2 * h, 2 * w, c4 // 4)


class DepthwiseConv(nn.Module):
    """'Same' depthwise conv as shifted multiply-adds. x: (B, H, W, C); kernel (k, k, C)."""

    kernel_size: int
    use_bias: bool
    dtype: Any
    param_dtype: Any

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        kernel = self.param("kernel", nn.with_logical_partitioning(
            nn.initializers.lecun_normal(in_axis=(0, 1), out_axis=()), (None, None, "embed")),
            (self.kernel_size, self.kernel_size, c), self.param_dtype)
        bias = None
        if self.use_bias:
            bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)), (c,),
                              self.param_dtype).astype(self.dtype)
        return depthwise_conv2d(x.astype(self.dtype), kernel.astype(self.dtype), bias)


class GroupedPointwise(nn.Module):
    """1x1 conv with ``groups`` equal groups of ``C / groups`` channels in and out, as one batched matmul.

    x: (B, H, W, C). The kernel keeps Flax's grouped-conv layout (1, 1, C / groups, C).
    """

    groups: int
    dtype: Any
    param_dtype: Any

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        size = c // self.groups
        kernel = self.param("kernel", nn.with_logical_partitioning(
            nn.initializers.lecun_normal(in_axis=2, out_axis=3), (None, None, None, "embed")),
            (1, 1, size, c), self.param_dtype)
        k = kernel[0, 0].reshape(size, self.groups, size).astype(self.dtype)  # (in, group, out)
        y = jnp.einsum("bhwgi,igo->bhwgo", x.reshape(*x.shape[:-1], self.groups, size).astype(self.dtype), k)
        return y.reshape(x.shape)


# ---------------------------------------------------------------------------------------------------------------
# Blocks.


class ResBlock(nn.Module):
    """x + RMSNorm(conv2(act(conv1(x)))), 3x3 convs, conv2 without bias. x: (B, H, W, C)."""

    act_fn: str
    dtype: Any
    param_dtype: Any

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        y = _conv(c, name="conv1", **kw)(x)
        y = _conv(c, use_bias=False, name="conv2", **kw)(ACTIVATIONS[self.act_fn](y))
        return x + RMSNorm(1e-5, use_bias=True, param_dtype=self.param_dtype, name="norm")(y)


class MultiscaleProjection(nn.Module):
    """One aggregation scale: depthwise k x k over q|k|v, then a 1x1 mixing inside each group of head_dim."""

    kernel_size: int
    groups: int
    dtype: Any
    param_dtype: Any

    @nn.compact
    def __call__(self, qkv):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        y = DepthwiseConv(self.kernel_size, use_bias=False, name="proj_in", **kw)(qkv)
        return GroupedPointwise(self.groups, name="proj_out", **kw)(y)


def relu_linear_attention(q, k, v, eps: float):
    """Non-causal ReLU linear attention per group. q, k, v: (B, N, G, d) after ReLU -> (B, N, G, d), fp32 sums.

    out_m = sum_n v_n (k_n . q_m) / (sum_n k_n . q_m + eps), computed as (V K^T) Q: the d x d state, not N x N.
    """
    hp = jax.lax.Precision.HIGHEST
    q, k, v = (a.astype(jnp.float32) for a in (q, k, v))
    kv = jnp.einsum("bngk,bngv->bgkv", k, v, precision=hp)
    num = jnp.einsum("bngk,bgkv->bngv", q, kv, precision=hp)
    den = jnp.einsum("bngk,bgk->bng", q, jnp.sum(k, axis=1), precision=hp)
    return num / (den[..., None] + eps)


def relu_quadratic_attention(q, k, v, eps: float):
    """The same attention through the N x N score matrix, normalised over keys in fp32 (for tiny maps)."""
    hp = jax.lax.Precision.HIGHEST
    scores = jnp.einsum("bngk,bmgk->bgnm", k, q, precision=hp).astype(jnp.float32)
    scores = scores / (jnp.sum(scores, axis=2, keepdims=True) + eps)
    return jnp.einsum("bngv,bgnm->bmgv", v, scores.astype(v.dtype), precision=hp)


class MultiscaleLinearAttention(nn.Module):
    """EfficientViT's multi-scale ReLU linear attention with residual. x: (B, H, W, C).

    q|k|v and each scale's aggregate are concatenated on channels and cut into consecutive groups of 3*head_dim,
    each group split into its own (q, k, v): this grouping (not "heads" of to_q/to_k/to_v) is diffusers' layout.
    Maps with H*W <= head_dim use the quadratic form, as diffusers does; the two are the same function.
    """

    heads: int
    head_dim: int
    kernel_sizes: tuple[int, ...]
    dtype: Any
    param_dtype: Any
    eps: float = 1e-15

    @nn.compact
    def __call__(self, x):
        b, h, w, c = x.shape
        inner = self.heads * self.head_dim
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        qkv = jnp.concatenate([dense(inner, ("embed", "heads"), use_bias=False, name=f"to_{n}", **kw)(x)
                               for n in "qkv"], axis=-1)
        scales = [qkv] + [MultiscaleProjection(ks, 3 * self.heads, name=f"to_qkv_multiscale_{i}", **kw)(qkv)
                          for i, ks in enumerate(self.kernel_sizes)]
        groups = jnp.concatenate(scales, axis=-1).reshape(b, h * w, -1, 3 * self.head_dim)
        q, k, v = jnp.split(groups, 3, axis=-1)
        q, k = nn.relu(q), nn.relu(k)
        if h * w > self.head_dim:
            out = relu_linear_attention(q, k, v, self.eps)
        else:
            out = relu_quadratic_attention(q, k, v, self.eps)
        out = out.astype(self.dtype).reshape(b, h, w, -1)
        out = dense(c, ("heads", "embed"), use_bias=False, name="to_out", **kw)(out)
        return x + RMSNorm(1e-5, use_bias=True, param_dtype=self.param_dtype, name="norm_out")(out)


class GLUMBConv(nn.Module):
    """x + RMSNorm(point(value * silu(gate))), (value, gate) = depthwise3x3(silu(inverted(x))). x: (B, H, W, C)."""

    expand_ratio: float
    dtype: Any
    param_dtype: Any

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        hidden = int(self.expand_ratio * c)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        y = nn.silu(dense(2 * hidden, ("embed", "mlp"), name="conv_inverted", **kw)(x))
        y = DepthwiseConv(3, use_bias=True, name="conv_depth", **kw)(y)
        value, gate = jnp.split(y, 2, axis=-1)
        y = dense(c, ("mlp", "embed"), use_bias=False, name="conv_point", **kw)(value * nn.silu(gate))
        return x + RMSNorm(1e-5, use_bias=True, param_dtype=self.param_dtype, name="norm")(y)


class EfficientViTBlock(nn.Module):
    """Multi-scale linear attention (context), then GLUMBConv (local), each with its residual."""

    head_dim: int
    kernel_sizes: tuple[int, ...]
    dtype: Any
    param_dtype: Any

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = MultiscaleLinearAttention(x.shape[-1] // self.head_dim, self.head_dim, self.kernel_sizes, name="attn",
                                      **kw)(x)
        return GLUMBConv(4.0, name="conv_out", **kw)(x)


class DownBlock(nn.Module):
    """2x down: strided conv, or conv to out/4 + pixel-unshuffle; shortcut = pixel-unshuffle + group mean."""

    out_channels: int
    pixel_unshuffle: bool
    shortcut: bool
    dtype: Any
    param_dtype: Any

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        if self.pixel_unshuffle:
            y = pixel_unshuffle(_conv(self.out_channels // 4, name="conv", **kw)(x))
        else:
            y = _conv(self.out_channels, stride=2, name="conv", **kw)(x)
        if not self.shortcut:
            return y
        s = pixel_unshuffle(x)
        return y + s.reshape(*s.shape[:-1], self.out_channels, -1).mean(axis=-1)


class UpBlock(nn.Module):
    """2x up: nearest interpolation + conv, or conv to 4*out + pixel-shuffle; shortcut = channel repeat + shuffle."""

    out_channels: int
    interpolate: bool
    shortcut: bool
    dtype: Any
    param_dtype: Any

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        if self.interpolate:
            y = _conv(self.out_channels, name="conv", **kw)(jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2))
        else:
            y = pixel_shuffle(_conv(4 * self.out_channels, name="conv", **kw)(x))
        if not self.shortcut:
            return y
        return y + pixel_shuffle(jnp.repeat(x, 4 * self.out_channels // x.shape[-1], axis=-1))


def _block(kind, *, head_dim, kernel_sizes, act_fn, name, **kw):
    if kind == "ResBlock":
        return ResBlock(act_fn, name=name, **kw)
    return EfficientViTBlock(head_dim, tuple(kernel_sizes), name=name, **kw)
