"""A Dense layer whose params carry logical axis names (for sharding rules), zero bias, LeCun-normal kernel."""

from __future__ import annotations

import flax.linen as nn


def dense(features: int, axes: tuple, *, use_bias: bool = True, dtype, param_dtype, name: str) -> nn.Dense:
    """``axes``: logical names of the kernel's (in, out) axes; the bias takes the output axis's name."""
    return nn.Dense(
        features, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, name=name,
        kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), axes),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (axes[-1],)),
    )
