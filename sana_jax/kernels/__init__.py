"""Fused ops with a pure-XLA reference and (later) Pallas backends."""

from sana_jax.kernels.linear_attention import linear_attention

__all__ = ["linear_attention"]
