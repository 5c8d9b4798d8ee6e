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
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
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


TRANSFORMERS_VERSION = "5.23.0"
GEMMA2_LAYER_TYPES = ("sliding_attention", "full_attention")


@dataclasses.dataclass(frozen=True)
class Gemma2Config(ComponentConfig):
    """transformers ``Gemma2Config`` for the text encoder ``Gemma2Model``; keys and defaults are transformers 5.23's.

    A transformers ``config.json`` has no ``_class_name``: ``model_type`` ("gemma2") names the class. Its
    bookkeeping keys ``architectures``, ``model_type`` and ``transformers_version`` are checked on reading and
    written anew (``["Gemma2Model"]``, since the folder this project writes holds a bare ``Gemma2Model``).
    transformers 4.x spellings are read and written in the 5.x form: top-level ``rope_theta`` (and a null or
    default ``rope_scaling``) -> ``rope_parameters``, ``torch_dtype`` -> ``dtype``; ``hidden_act``,
    ``cache_implementation`` and ``sliding_window_size`` (equal to ``sliding_window``), which ``Gemma2Model``
    ignores, are dropped. ``rope_theta`` is a field here and
    ``rope_parameters: {rope_theta, rope_type: "default"}`` in the file; other RoPE types are an error.
    Fields the model does not use (``use_cache``, ``initializer_range``, token ids, ``final_logit_softcapping``
    of the LM head, ``tie_word_embeddings``, ``dtype`` = the stored weights' dtype) are kept for the round trip.
    """

    class_name: ClassVar[str] = "Gemma2Model"
    library: ClassVar[str] = "transformers"
    model_type: ClassVar[str] = "gemma2"

    vocab_size: int = 256000
    hidden_size: int = 2304
    intermediate_size: int = 9216
    num_hidden_layers: int = 26
    num_attention_heads: int = 8
    num_key_value_heads: int = 4
    head_dim: int = 256
    hidden_activation: str = "gelu_pytorch_tanh"
    max_position_embeddings: int = 8192
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-6
    use_cache: bool = True
    pad_token_id: int | None = 0
    eos_token_id: int | tuple[int, ...] | None = 1
    bos_token_id: int | None = 2
    tie_word_embeddings: bool = True
    rope_theta: float = 10000.0
    attention_bias: bool = False
    attention_dropout: float | None = 0.0
    query_pre_attn_scalar: int = 256
    sliding_window: int | None = 4096
    layer_types: tuple[str, ...] | None = None
    final_logit_softcapping: float | None = 30.0
    attn_logit_softcapping: float | None = 50.0
    use_bidirectional_attention: bool | None = None
    dtype: str | None = None

    def __post_init__(self):
        if self.hidden_activation != "gelu_pytorch_tanh":
            raise ConfigError(f"hidden_activation {self.hidden_activation!r} is not supported; "
                              "expected 'gelu_pytorch_tanh'")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(f"num_attention_heads {self.num_attention_heads} must be a multiple of "
                              f"num_key_value_heads {self.num_key_value_heads}")
        if self.layer_types is not None:
            bad = sorted(set(self.layer_types) - set(GEMMA2_LAYER_TYPES))
            if bad or len(self.layer_types) != self.num_hidden_layers:
                raise ConfigError(f"layer_types must list {self.num_hidden_layers} (num_hidden_layers) entries of "
                                  f"{GEMMA2_LAYER_TYPES}; got {list(self.layer_types)}")
        if "sliding_attention" in self.layer_type_list and (self.sliding_window is None or self.sliding_window < 1):
            raise ConfigError(f"sliding_window is {self.sliding_window!r} but there are sliding_attention layers")
        if self.use_bidirectional_attention:
            raise ConfigError("use_bidirectional_attention=true is not supported; Gemma2Model here is causal")
        if self.attention_dropout not in (0.0, None):
            raise ConfigError(f"attention_dropout {self.attention_dropout} is not supported; expected 0.0")

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> "Gemma2Config":
        data = dict(data)
        model_type = data.pop("model_type", cls.model_type)
        if model_type != cls.model_type:
            raise ConfigError(f"{source}: model_type is {model_type!r}, expected {cls.model_type!r}")
        architectures = data.pop("architectures", None)
        if architectures is not None and not (isinstance(architectures, list)
                                              and all(isinstance(a, str) for a in architectures)):
            raise ConfigError(f"{source}: key 'architectures': expected a list of class names, got {architectures!r}")
        if not isinstance(data.pop("transformers_version", ""), str):
            raise ConfigError(f"{source}: key 'transformers_version': expected a string")
        data.pop("hidden_act", None)             # transformers 4.x duplicate; Gemma2 reads hidden_activation
        data.pop("cache_implementation", None)   # a generation setting ("hybrid"), not architecture
        window = data.pop("sliding_window_size", None)  # transformers 4.42's duplicate of sliding_window
        if window is not None and window != data.get("sliding_window", cls.sliding_window):
            raise ConfigError(f"{source}: sliding_window_size {window} disagrees with sliding_window "
                              f"{data.get('sliding_window', cls.sliding_window)} (transformers reads sliding_window)")
        if "torch_dtype" in data:
            legacy = data.pop("torch_dtype")
            if data.setdefault("dtype", legacy) != legacy:
                raise ConfigError(f"{source}: torch_dtype {legacy!r} and dtype {data['dtype']!r} disagree")
        data.update(cls._rope_theta_from(data, source))
        return super().from_dict(data, source=source)

    @staticmethod
    def _rope_theta_from(data: dict[str, Any], source: str) -> dict[str, Any]:
        """Pops ``rope_parameters`` / ``rope_scaling`` / ``rope_theta`` from ``data``; returns {rope_theta: ...}."""
        params = data.pop("rope_parameters", None)
        scaling = data.pop("rope_scaling", None)
        thetas = {}
        if "rope_theta" in data:
            thetas["rope_theta"] = data.pop("rope_theta")
        for key, value in (("rope_parameters", params), ("rope_scaling", scaling)):
            if value is None:
                continue
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: key {key!r}: expected an object, got {value!r}")
            rope_type = value.get("rope_type", value.get("type", "default"))
            unknown = sorted(set(value) - {"rope_theta", "rope_type", "type"})
            if rope_type != "default" or unknown:
                raise ConfigError(f"{source}: key {key!r}: only the 'default' RoPE (keys rope_theta, rope_type) is "
                                  f"supported; got {value!r}")
            if "rope_theta" in value:
                thetas[f"{key}.rope_theta"] = value["rope_theta"]
        if len(set(thetas.values())) > 1:
            raise ConfigError(f"{source}: the RoPE theta is given differently in {thetas}")
        return {"rope_theta": next(iter(thetas.values()))} if thetas else {}

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {f.name: _to_json(getattr(self, f.name)) for f in dataclasses.fields(self)}
        out["rope_parameters"] = {"rope_theta": out.pop("rope_theta"), "rope_type": "default"}
        out.update(architectures=[self.class_name], model_type=self.model_type,
                   transformers_version=TRANSFORMERS_VERSION)
        return dict(sorted(out.items()))

    # Derived quantities (not config keys).
    @property
    def layer_type_list(self) -> tuple[str, ...]:
        """Per layer: 'sliding_attention' or 'full_attention'; by default even layers slide (transformers' rule)."""
        if self.layer_types is not None:
            return tuple(self.layer_types)
        return tuple(GEMMA2_LAYER_TYPES[i % 2] for i in range(self.num_hidden_layers))

    @property
    def num_layers(self) -> int:
        return self.num_hidden_layers


# The published Gemma-2-2B (the SANA-Video text encoder is its instruction-tuned decoder): 2,614,341,888 params.
GEMMA2_2B = Gemma2Config(
    vocab_size=256000, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26, num_attention_heads=8,
    num_key_value_heads=4, head_dim=256, query_pre_attn_scalar=256, attn_logit_softcapping=50.0,
    final_logit_softcapping=30.0, sliding_window=4096, rms_norm_eps=1e-6, rope_theta=10000.0,
    max_position_embeddings=8192, hidden_activation="gelu_pytorch_tanh", pad_token_id=0, eos_token_id=1,
    bos_token_id=2,
)
