"""Normalisations. The diffusers RMSNorm multiplies by w (not 1 + w, which is Gemma's); both are computed in fp32."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp


def rms_norm(x: jnp.ndarray, weight: jnp.ndarray | None, eps: float, bias: jnp.ndarray | None = None):
    """x * rsqrt(mean(x^2) + eps) * weight (+ bias) over the last axis; statistics in fp32, result in x.dtype."""
    xf = x.astype(jnp.float32)
    y = xf * jnp.reciprocal(jnp.sqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps))
    if weight is not None:
        y = y * weight.astype(jnp.float32)
    if bias is not None:
        y = y + bias.astype(jnp.float32)
    return y.astype(x.dtype)


def layer_norm(x: jnp.ndarray, eps: float) -> jnp.ndarray:
    """LayerNorm without affine parameters over the last axis, statistics in fp32."""
    xf = x.astype(jnp.float32)
    mean = jnp.mean(xf, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(xf - mean), axis=-1, keepdims=True)
    return ((xf - mean) * jnp.reciprocal(jnp.sqrt(var + eps))).astype(x.dtype)


class RMSNorm(nn.Module):
    """diffusers ``RMSNorm`` with a learnable weight (``scale``) and optional bias. x: (..., D)."""

    eps: float = 1e-5
    use_bias: bool = False
    axis_name: str | None = "embed"
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        dim = x.shape[-1]
        init = nn.with_logical_partitioning(nn.initializers.ones, (self.axis_name,))
        weight = self.param("scale", init, (dim,), self.param_dtype)
        bias = None
        if self.use_bias:
            bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, (self.axis_name,)),
                              (dim,), self.param_dtype)
        return rms_norm(x, weight, self.eps, bias)
