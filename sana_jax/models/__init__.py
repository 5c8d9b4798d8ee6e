"""Flax models: the Linear DiT and the autoencoders."""

from sana_jax.models.dc_ae import DCAutoencoder
from sana_jax.models.transformer import SanaVideoTransformer
from sana_jax.models.wan_vae import AutoencoderKLWan, decode_tiled

__all__ = ["AutoencoderKLWan", "DCAutoencoder", "SanaVideoTransformer", "decode_tiled"]
