"""Component configs: frozen dataclasses whose fields are the keys of a diffusers / transformers ``config.json``,
one file per component on a shared JSON base (``base.py``). Each validates itself once, at construction."""

from sana_jax.config.base import DIFFUSERS_VERSION, ComponentConfig, ConfigError, read_json
from sana_jax.config.dc_ae import SANA_DC_AE_F32C32, AutoencoderDCConfig
from sana_jax.config.gemma2 import GEMMA2_2B, GEMMA2_LAYER_TYPES, TRANSFORMERS_VERSION, Gemma2Config
from sana_jax.config.ltx2_vae import LTX2_VIDEO_VAE, AutoencoderKLLTX2VideoConfig
from sana_jax.config.transformer import (
                                         SANA_VIDEO_2B_480P,
                                         SANA_VIDEO_2B_720P,
                                         SanaVideoCausalTransformerConfig,
                                         SanaVideoTransformerConfig,
)
from sana_jax.config.wan_vae import AutoencoderKLWanConfig

__all__ = ["DIFFUSERS_VERSION", "GEMMA2_2B", "GEMMA2_LAYER_TYPES", "LTX2_VIDEO_VAE", "SANA_DC_AE_F32C32",
           "SANA_VIDEO_2B_480P", "SANA_VIDEO_2B_720P", "TRANSFORMERS_VERSION", "AutoencoderDCConfig",
           "AutoencoderKLLTX2VideoConfig", "AutoencoderKLWanConfig", "ComponentConfig", "ConfigError", "Gemma2Config",
           "SanaVideoCausalTransformerConfig", "SanaVideoTransformerConfig", "read_json"]
