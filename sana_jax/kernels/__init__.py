"""Fused ops: each a pure-XLA reference (`reference.py`) plus one file per Pallas backend (`pallas_mosaic_tpu.py`,
`pallas_triton.py`), with its own VJP, an `implementation=` selector and a shard_map wrapper."""

from sana_jax.kernels.linear_attention import linear_attention

__all__ = ["linear_attention"]
