"""Flax models."""

from sana_jax.models.transformer import SanaVideoTransformer

__all__ = ["SanaVideoTransformer"]
