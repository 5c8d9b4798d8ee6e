"""Component configs: frozen dataclasses whose fields are the keys of a diffusers ``config.json``.

One source of truth per fact: a config mirrors the reference library's ``config.json`` exactly. A key the class
does not know is an error naming the key; a missing key takes the diffusers default. Keys starting with ``_``
(``_class_name``, ``_diffusers_version``, ...) are metadata, not architecture, and are not fields.
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from typing import Any, ClassVar

from sana_jax import _io

DIFFUSERS_VERSION = "0.42.1"


class ConfigError(ValueError):
    """A config.json that does not describe a valid component."""


@dataclasses.dataclass(frozen=True)
class ComponentConfig:
    """Base class: JSON round trip with strict keys. Subclasses set ``class_name``."""

    class_name: ClassVar[str] = ""
    # Which library's folder format the config belongs to; written as `_diffusers_version` or `transformers_version`.
    library: ClassVar[str] = "diffusers"

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> "ComponentConfig":
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in data if not k.startswith("_") and k not in fields)
        if unknown:
            raise ConfigError(
                f"{source}: unknown key(s) {unknown} for {cls.class_name or cls.__name__}; "
                f"expected a subset of {sorted(fields)}"
            )
        name = data.get("_class_name")
        if name is not None and cls.class_name and name != cls.class_name:
            raise ConfigError(f"{source}: _class_name is {name!r}, expected {cls.class_name!r}")
        hints = typing.get_type_hints(cls)
        values = {}
        for key, value in data.items():
            if key.startswith("_"):
                continue
            values[key] = _coerce(hints[key], value, f"{source}: key {key!r}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"_class_name": self.class_name}
        if self.library == "diffusers":
            out["_diffusers_version"] = DIFFUSERS_VERSION
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = _to_json(value)
        return out

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> "ComponentConfig":
        return cls.from_dict(read_json(path), source=str(path))

    def to_json_file(self, path: str | os.PathLike) -> None:
        _io.atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")


def _to_json(value):
    return [_to_json(v) for v in value] if isinstance(value, tuple) else value


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    """Reads a JSON object; Python's parser accepts the `-Infinity` diffusers writes into scheduler configs."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such config file") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _coerce(hint: Any, value: Any, where: str) -> Any:
    """Checks a JSON value against a field's type; lists become tuples, ints are accepted for floats."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        errors = []
        for arg in args:
            try:
                return _coerce(arg, value, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: {value!r} is not a {hint}")
    if hint is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected null, got {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, where) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected a list of {len(args)}, got {value!r}")
        return tuple(_coerce(a, v, where) for a, v in zip(args, value))
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    elif hint is Any:
        return value
    raise ConfigError(f"{where}: expected {getattr(hint, '__name__', hint)}, got {value!r}")


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


# The published SANA-Video 2B transformer configs (diffusers folders).
SANA_VIDEO_2B_480P = SanaVideoTransformerConfig(
    in_channels=16, out_channels=16, num_attention_heads=20, attention_head_dim=112, num_layers=20,
    num_cross_attention_heads=20, cross_attention_head_dim=112, cross_attention_dim=2240, caption_channels=2304,
    mlp_ratio=3.0, sample_size=30, patch_size=(1, 2, 2), rope_max_seq_len=1024,
)
SANA_VIDEO_2B_720P = dataclasses.replace(
    SANA_VIDEO_2B_480P, in_channels=128, out_channels=128, patch_size=(1, 1, 1), sample_size=22
)


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
    def temporal_factor(self) -> int:
        """Video frames per latent frame after the first: 2 ** (number of temporal downsamples)."""
        return 2 ** sum(bool(t) for t in self.temperal_downsample)

    @property
    def spatial_factor(self) -> int:
        """Video pixels per latent pixel along H and W: 2 ** (number of downsampling stages)."""
        return 2 ** (len(self.dim_mult) - 1)


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
