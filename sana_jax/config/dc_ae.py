"""diffusers ``AutoencoderDC`` config and the published SANA f32c32 one."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from sana_jax.config.base import ComponentConfig


@dataclasses.dataclass(frozen=True)
class AutoencoderDCConfig(ComponentConfig):
    """diffusers ``AutoencoderDC`` (deep-compression autoencoder) config, diffusers' defaults."""

    class_name: ClassVar[str] = "AutoencoderDC"

    in_channels: int = 3
    latent_channels: int = 32
    attention_head_dim: int = 32
    encoder_block_types: str | tuple[str, ...] = "ResBlock"
    decoder_block_types: str | tuple[str, ...] = "ResBlock"
    encoder_block_out_channels: tuple[int, ...] = (128, 256, 512, 512, 1024, 1024)
    decoder_block_out_channels: tuple[int, ...] = (128, 256, 512, 512, 1024, 1024)
    encoder_layers_per_block: tuple[int, ...] = (2, 2, 2, 3, 3, 3)
    decoder_layers_per_block: tuple[int, ...] = (3, 3, 3, 3, 3, 3)
    encoder_qkv_multiscales: tuple[tuple[int, ...], ...] = ((), (), (), (5,), (5,), (5,))
    decoder_qkv_multiscales: tuple[tuple[int, ...], ...] = ((), (), (), (5,), (5,), (5,))
    upsample_block_type: str = "pixel_shuffle"
    downsample_block_type: str = "pixel_unshuffle"
    decoder_norm_types: str | tuple[str, ...] = "rms_norm"
    decoder_act_fns: str | tuple[str, ...] = "silu"
    encoder_out_shortcut: bool = True
    decoder_in_shortcut: bool = True
    decoder_conv_act_fn: str = "relu"
    scaling_factor: float = 1.0

    # Derived quantities (not config keys). A single string means "the same for every block", as in diffusers.
    @staticmethod
    def _per_block(value: str | tuple[str, ...], num_blocks: int) -> tuple[str, ...]:
        return (value,) * num_blocks if isinstance(value, str) else tuple(value)

    @property
    def num_blocks(self) -> int:
        return len(self.encoder_block_out_channels)

    @property
    def spatial_compression_ratio(self) -> int:
        return 2 ** (len(self.encoder_block_out_channels) - 1)

    @property
    def temporal_compression_ratio(self) -> int:
        return 1

    @property
    def encoder_block_type_list(self) -> tuple[str, ...]:
        return self._per_block(self.encoder_block_types, len(self.encoder_block_out_channels))

    @property
    def decoder_block_type_list(self) -> tuple[str, ...]:
        return self._per_block(self.decoder_block_types, len(self.decoder_block_out_channels))

    @property
    def decoder_norm_type_list(self) -> tuple[str, ...]:
        return self._per_block(self.decoder_norm_types, len(self.decoder_block_out_channels))

    @property
    def decoder_act_fn_list(self) -> tuple[str, ...]:
        return self._per_block(self.decoder_act_fns, len(self.decoder_block_out_channels))


# The SANA image DC-AE `mit-han-lab/dc-ae-f32c32-sana-1.0-diffusers` (the vae of
# Efficient-Large-Model/Sana_600M_1024px_diffusers): 312,250,275 params.
_SANA_DC_AE_BLOCKS = ("ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock", "EfficientViTBlock", "EfficientViTBlock")
SANA_DC_AE_F32C32 = AutoencoderDCConfig(
    in_channels=3, latent_channels=32, attention_head_dim=32,
    encoder_block_types=_SANA_DC_AE_BLOCKS, decoder_block_types=_SANA_DC_AE_BLOCKS,
    encoder_block_out_channels=(128, 256, 512, 512, 1024, 1024),
    decoder_block_out_channels=(128, 256, 512, 512, 1024, 1024),
    encoder_layers_per_block=(2, 2, 2, 3, 3, 3), decoder_layers_per_block=(3, 3, 3, 3, 3, 3),
    encoder_qkv_multiscales=((), (), (), (5,), (5,), (5,)), decoder_qkv_multiscales=((), (), (), (5,), (5,), (5,)),
    upsample_block_type="interpolate", downsample_block_type="Conv", decoder_norm_types="rms_norm",
    decoder_act_fns="silu", encoder_out_shortcut=True, decoder_in_shortcut=True, decoder_conv_act_fn="relu",
    scaling_factor=0.41407,
)

