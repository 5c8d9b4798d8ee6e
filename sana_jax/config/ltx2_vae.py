"""diffusers ``AutoencoderKLLTX2Video`` config (the 720p VAE) and the published one."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from sana_jax.config.base import ComponentConfig

_LTX2_DOWN_BLOCKS = ("LTX2VideoDownBlock3D",) * 4


@dataclasses.dataclass(frozen=True)
class AutoencoderKLLTX2VideoConfig(ComponentConfig):
    """diffusers ``AutoencoderKLLTX2Video`` (the LTX-2 video VAE) config; keys and defaults are diffusers' class
    defaults. The published LTX-2 VAE (`LTX2_VIDEO_VAE`) differs in decoder_causal and the explicit ratios."""

    class_name: ClassVar[str] = "AutoencoderKLLTX2Video"

    in_channels: int = 3
    out_channels: int = 3
    latent_channels: int = 128
    block_out_channels: tuple[int, ...] = (256, 512, 1024, 2048)
    down_block_types: tuple[str, ...] = _LTX2_DOWN_BLOCKS
    decoder_block_out_channels: tuple[int, ...] = (256, 512, 1024)
    layers_per_block: tuple[int, ...] = (4, 6, 6, 2, 2)
    decoder_layers_per_block: tuple[int, ...] = (5, 5, 5, 5)
    spatio_temporal_scaling: bool | tuple[bool, ...] = (True, True, True, True)
    decoder_spatio_temporal_scaling: bool | tuple[bool, ...] = (True, True, True)
    decoder_inject_noise: bool | tuple[bool, ...] = (False, False, False, False)
    downsample_type: tuple[str, ...] = ("spatial", "temporal", "spatiotemporal", "spatiotemporal")
    upsample_type: tuple[str, ...] = ("spatiotemporal", "spatiotemporal", "spatiotemporal")
    upsample_residual: bool | tuple[bool, ...] = (True, True, True)
    upsample_factor: tuple[int, ...] = (2, 2, 2)
    timestep_conditioning: bool = False
    patch_size: int = 4
    patch_size_t: int = 1
    resnet_norm_eps: float = 1e-6
    scaling_factor: float = 1.0
    encoder_causal: bool = True
    decoder_causal: bool = True
    encoder_spatial_padding_mode: str = "zeros"
    decoder_spatial_padding_mode: str = "reflect"
    spatial_compression_ratio: int | None = None
    temporal_compression_ratio: int | None = None

    # Derived per-block tuples (a single bool means "every block", as in diffusers).
    @property
    def encoder_scaling(self) -> tuple[bool, ...]:
        v = self.spatio_temporal_scaling
        return (v,) * (len(self.layers_per_block) - 1) if isinstance(v, bool) else tuple(v)

    @property
    def decoder_scaling(self) -> tuple[bool, ...]:
        v = self.decoder_spatio_temporal_scaling
        return (v,) * (len(self.decoder_layers_per_block) - 1) if isinstance(v, bool) else tuple(v)

    @property
    def decoder_residual(self) -> tuple[bool, ...]:
        v = self.upsample_residual
        return (v,) * (len(self.decoder_layers_per_block) - 1) if isinstance(v, bool) else tuple(v)

    @property
    def decoder_noise(self) -> tuple[bool, ...]:
        v = self.decoder_inject_noise
        return (v,) * len(self.decoder_layers_per_block) if isinstance(v, bool) else tuple(v)

    @property
    def encoder_strides(self) -> tuple[tuple[int, int], ...]:
        """(time, space) downsampling factor of each encoder block."""
        factor = {"conv": (2, 2), "spatial": (1, 2), "temporal": (2, 1), "spatiotemporal": (2, 2)}
        return tuple(factor[t] if on else (1, 1) for on, t in zip(self.encoder_scaling, self.downsample_type))

    @property
    def decoder_strides(self) -> tuple[tuple[int, int], ...]:
        """(time, space) upsampling factor of each decoder block, in decoding order."""
        factor = {"spatial": (1, 2), "temporal": (2, 1), "spatiotemporal": (2, 2)}
        return tuple(factor[t] if on else (1, 1)
                     for on, t in zip(self.decoder_scaling[::-1], self.upsample_type))

    @property
    def spatial_ratio(self) -> int:
        """Video pixels per latent pixel: the config's ``spatial_compression_ratio`` (what diffusers' pipeline
        reads), else the encoder's actual factor."""
        if self.spatial_compression_ratio is not None:
            return self.spatial_compression_ratio
        out = self.patch_size
        for _, s in self.encoder_strides:
            out *= s
        return out

    @property
    def temporal_ratio(self) -> int:
        if self.temporal_compression_ratio is not None:
            return self.temporal_compression_ratio
        out = self.patch_size_t
        for t, _ in self.encoder_strides:
            out *= t
        return out


# The LTX-2 video VAE as diffusers' converter writes it (`scripts/convert_ltx2_to_diffusers.py`, version "2.0"): the
# vae of Lightricks/LTX-2 and of SANA-Video_2B_720p_diffusers (32x spatial, 8x temporal, 128 channels).
LTX2_VIDEO_VAE = AutoencoderKLLTX2VideoConfig(decoder_causal=False, spatial_compression_ratio=32,
                                              temporal_compression_ratio=8)

