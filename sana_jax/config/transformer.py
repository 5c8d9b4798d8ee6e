"""The Linear DiT's config: diffusers ``SanaVideoTransformer3DModel`` (and its block-causal twin), and the published
2B layouts."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from sana_jax.config.base import ComponentConfig, ConfigError


@dataclasses.dataclass(frozen=True)
class SanaVideoTransformerConfig(ComponentConfig):
    """diffusers ``SanaVideoTransformer3DModel`` config (field names and defaults are diffusers' own)."""

    class_name: ClassVar[str] = "SanaVideoTransformer3DModel"

    in_channels: int = 16
    out_channels: int | None = 16
    num_attention_heads: int = 20
    attention_head_dim: int = 112
    num_layers: int = 20
    num_cross_attention_heads: int | None = 20
    cross_attention_head_dim: int | None = 112
    cross_attention_dim: int | None = 2240
    caption_channels: int = 2304
    mlp_ratio: float = 2.5
    dropout: float = 0.0
    attention_bias: bool = False
    sample_size: int = 30
    patch_size: int | tuple[int, int, int] = (1, 2, 2)
    norm_elementwise_affine: bool = False
    norm_eps: float = 1e-6
    interpolation_scale: int | None = None
    guidance_embeds: bool = False
    guidance_embeds_scale: float = 0.1
    qk_norm: str | None = "rms_norm_across_heads"
    rope_max_seq_len: int = 1024

    def __post_init__(self):
        if self.qk_norm not in (None, "rms_norm_across_heads"):
            raise ConfigError(f"qk_norm {self.qk_norm!r} is not supported; expected 'rms_norm_across_heads' or null")
        if self.cross_attention_dim is None:
            raise ConfigError("cross_attention_dim is null: SanaVideoTransformer3DModel needs cross-attention")
        if self.cross_attention_dim != self.inner_dim:
            raise ConfigError(
                f"cross_attention_dim {self.cross_attention_dim} must equal num_attention_heads*attention_head_dim "
                f"= {self.inner_dim} (the projected caption width)"
            )
        if self.dropout != 0.0:
            raise ConfigError(f"dropout {self.dropout} is not supported; expected 0.0")

    # Derived quantities (not config keys).
    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    @property
    def patch(self) -> tuple[int, int, int]:
        p = self.patch_size
        return (p, p, p) if isinstance(p, int) else tuple(p)

    @property
    def output_channels(self) -> int:
        return self.out_channels or self.in_channels

    @property
    def cross_heads(self) -> int:
        return self.num_cross_attention_heads or self.num_attention_heads

    @property
    def cross_head_dim(self) -> int:
        return self.cross_attention_head_dim or self.attention_head_dim

    @property
    def ffn_hidden(self) -> int:
        return int(self.mlp_ratio * self.inner_dim)


@dataclasses.dataclass(frozen=True)
class SanaVideoCausalTransformerConfig(SanaVideoTransformerConfig):
    """A block-causal (LongSANA) checkpoint: the same weights layout and keys under another ``_class_name``; run it
    with ``block_sizes`` / a carried cache (``SanaVideoPipeline.stream``). Keys it does not know are errors."""

    class_name: ClassVar[str] = "SanaVideoCausalTransformer3DModel"


# The published SANA-Video 2B transformer configs (diffusers folders).
SANA_VIDEO_2B_480P = SanaVideoTransformerConfig(
    in_channels=16, out_channels=16, num_attention_heads=20, attention_head_dim=112, num_layers=20,
    num_cross_attention_heads=20, cross_attention_head_dim=112, cross_attention_dim=2240, caption_channels=2304,
    mlp_ratio=3.0, sample_size=30, patch_size=(1, 2, 2), rope_max_seq_len=1024,
)
SANA_VIDEO_2B_720P = dataclasses.replace(
    SANA_VIDEO_2B_480P, in_channels=128, out_channels=128, patch_size=(1, 1, 1), sample_size=22
)

