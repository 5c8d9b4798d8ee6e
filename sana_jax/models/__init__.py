"""Flax models: the Linear DiT, the autoencoders and the Gemma2 text encoder."""

from sana_jax.models.dc_ae import DCAutoencoder
from sana_jax.models.gemma2 import Gemma2Model
from sana_jax.models.ltx2_vae import AutoencoderKLLTX2Video
from sana_jax.models.transformer import SanaVideoTransformer
from sana_jax.models.wan_vae import AutoencoderKLWan, decode_tiled

__all__ = ["AutoencoderKLLTX2Video", "AutoencoderKLWan", "DCAutoencoder", "Gemma2Model", "SanaVideoTransformer",
           "decode_tiled"]
