"""diffusers ``AutoencoderKLWan`` config (the 480p VAE)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from sana_jax.config.base import ComponentConfig

_WAN_LATENTS_MEAN = (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508, 0.4134, -0.0715, 0.5517,
                     -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
_WAN_LATENTS_STD = (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743, 3.2687, 2.1526, 2.8652, 1.5579,
                    1.6382, 1.1253, 2.8251, 1.9160)


@dataclasses.dataclass(frozen=True)
class AutoencoderKLWanConfig(ComponentConfig):
    """diffusers ``AutoencoderKLWan`` (Wan2.1 video VAE) config; the defaults are the published Wan2.1 VAE."""

    class_name: ClassVar[str] = "AutoencoderKLWan"

    base_dim: int = 96
    decoder_base_dim: int | None = None
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attn_scales: tuple[float, ...] = ()
    temperal_downsample: tuple[bool, ...] = (False, True, True)
    dropout: float = 0.0
    latents_mean: tuple[float, ...] = _WAN_LATENTS_MEAN
    latents_std: tuple[float, ...] = _WAN_LATENTS_STD
    is_residual: bool = False
    in_channels: int = 3
    out_channels: int = 3
    patch_size: int | None = None
    scale_factor_temporal: int | None = 4
    scale_factor_spatial: int | None = 8

    # Derived quantities (not config keys), from the architecture itself.
    @property
    def temporal_compression_ratio(self) -> int:
        """Video frames per latent frame after the first: 2 ** (number of temporal downsamples)."""
        return 2 ** sum(bool(t) for t in self.temperal_downsample)

    @property
    def spatial_compression_ratio(self) -> int:
        """Video pixels per latent pixel along H and W: 2 ** (number of downsampling stages)."""
        return 2 ** (len(self.dim_mult) - 1)

