"""``load_component`` / ``save_component``: one model folder (config.json + weights) <-> a callable JAX model.

The class is read from config.json ``_class_name``. A folder is in diffusers format (PyTorch keys in
``diffusion_pytorch_model.safetensors``, single or sharded) or in JAX format (the same config.json, Flax params
with ``/``-joined per-layer keys in ``flax_params.safetensors``). Writing is atomic: a temp folder, then a rename.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sana_jax import _compile, _io
from sana_jax.config import (AutoencoderDCConfig, AutoencoderKLLTX2VideoConfig, AutoencoderKLWanConfig, ComponentConfig,
                             ConfigError, Gemma2Config, SanaVideoCausalTransformerConfig, SanaVideoTransformerConfig,
                             read_json)
from sana_jax.models.dc_ae import DCAutoencoder
from sana_jax.models.dc_ae import check_config as check_dc_ae_config
from sana_jax.models.gemma2 import Gemma2Model
from sana_jax.models.ltx2_vae import AutoencoderKLLTX2Video
from sana_jax.models.ltx2_vae import check_supported as check_ltx2_vae_config
from sana_jax.models.transformer import SanaVideoTransformer
from sana_jax.models.wan_vae import AutoencoderKLWan, check_supported
from sana_jax.weights import dc_ae as dc_ae_weights
from sana_jax.weights import gemma2 as gemma2_weights
from sana_jax.weights import ltx2_vae as ltx2_vae_weights
from sana_jax.weights import rulebook
from sana_jax.weights import transformer as transformer_weights
from sana_jax.weights import wan_vae as wan_vae_weights
from sana_jax.weights.io import DEFAULT_MAX_SHARD_BYTES, read_checkpoint_file, read_state_dict, write_state_dict

JAX_WEIGHTS = "flax_params.safetensors"
FORMATS = ("diffusers", "jax")


@dataclasses.dataclass(frozen=True)
class ComponentSpec:
    """How one component class is built, initialised abstractly, and mapped to PyTorch."""

    config_cls: type[ComponentConfig]
    build: Callable[..., nn.Module]            # (config, **options) -> module
    example_inputs: Callable[[Any], tuple]     # config -> smallest valid inputs, for abstract init
    rules: Callable[[Any], list]               # config -> rulebook
    weights_name: str                          # diffusers file stem
    layer_prefix: str | None = None            # per-layer key prefix stacked under nn.scan
    from_original: Callable | None = None      # original-layout state dict -> diffusers keys
    methods: tuple[str, ...] = ()              # module methods exposed on the Component (e.g. encode, decode)
    static_argnames: tuple[str, ...] = ()      # call keywords that are compile-time constants (shapes, layouts)
    canonical_state: Callable | None = None    # folder state dict -> the keys the rulebook reads (strip a prefix)


def _transformer_inputs(cfg: SanaVideoTransformerConfig):
    pt, ph, pw = cfg.patch
    latents = jnp.zeros((1, pt, ph, pw, cfg.in_channels), jnp.float32)
    ctx = jnp.zeros((1, 1, cfg.caption_channels), jnp.float32)
    guidance = jnp.zeros((1,), jnp.float32) if cfg.guidance_embeds else None
    return (latents, jnp.zeros((1,), jnp.float32), ctx, None, guidance)


def _build_transformer(cfg, *, dtype="float32", param_dtype="float32", scan_layers=False, remat_policy="none",
                       original_numerics=False, attention_implementation="auto"):
    return SanaVideoTransformer(cfg, dtype=jnp.dtype(dtype), param_dtype=jnp.dtype(param_dtype),
                                scan_layers=scan_layers, remat_policy=remat_policy,
                                original_numerics=original_numerics,
                                attention_implementation=attention_implementation)


def _wan_vae_inputs(cfg: AutoencoderKLWanConfig):
    size = cfg.spatial_compression_ratio
    return (jnp.zeros((1, 1, size, size, cfg.in_channels), jnp.float32),)


def _build_wan_vae(cfg, *, dtype="float32", param_dtype="float32"):
    check_supported(cfg)
    return AutoencoderKLWan(cfg, dtype=jnp.dtype(dtype), param_dtype=jnp.dtype(param_dtype))


def _ltx2_vae_inputs(cfg: AutoencoderKLLTX2VideoConfig):
    size = cfg.spatial_ratio
    return (jnp.zeros((1, 1, size, size, cfg.in_channels), jnp.float32),)


def _build_ltx2_vae(cfg, *, dtype="float32", param_dtype="float32"):
    check_ltx2_vae_config(cfg)
    return AutoencoderKLLTX2Video(cfg, dtype=jnp.dtype(dtype), param_dtype=jnp.dtype(param_dtype))


def _dc_ae_inputs(cfg: AutoencoderDCConfig):
    f = cfg.spatial_compression_ratio
    return (jnp.zeros((1, f, f, cfg.in_channels), jnp.float32),)


def _build_dc_ae(cfg: AutoencoderDCConfig, *, dtype="float32", param_dtype="float32"):
    check_dc_ae_config(cfg)
    return DCAutoencoder(cfg, dtype=jnp.dtype(dtype), param_dtype=jnp.dtype(param_dtype))


def _gemma2_inputs(cfg: Gemma2Config):
    return (jnp.zeros((1, 1), jnp.int32), None)


def _build_gemma2(cfg: Gemma2Config, *, dtype="float32", param_dtype="float32", scan_layers=False):
    return Gemma2Model(cfg, dtype=jnp.dtype(dtype), param_dtype=jnp.dtype(param_dtype), scan_layers=scan_layers)


REGISTRY: dict[str, ComponentSpec] = {
    "SanaVideoTransformer3DModel": ComponentSpec(
        SanaVideoTransformerConfig, _build_transformer, _transformer_inputs, transformer_weights.diffusers_rules,
        "diffusion_pytorch_model", transformer_weights.BLOCKS, transformer_weights.original_to_diffusers,
        static_argnames=("block_sizes",)),
    "SanaVideoCausalTransformer3DModel": ComponentSpec(
        SanaVideoCausalTransformerConfig, _build_transformer, _transformer_inputs, transformer_weights.diffusers_rules,
        "diffusion_pytorch_model", transformer_weights.BLOCKS, static_argnames=("block_sizes",)),
    "AutoencoderKLWan": ComponentSpec(
        AutoencoderKLWanConfig, _build_wan_vae, _wan_vae_inputs, wan_vae_weights.diffusers_rules,
        "diffusion_pytorch_model", methods=("encode", "decode")),
    "AutoencoderKLLTX2Video": ComponentSpec(
        AutoencoderKLLTX2VideoConfig, _build_ltx2_vae, _ltx2_vae_inputs, ltx2_vae_weights.diffusers_rules,
        "diffusion_pytorch_model", methods=("encode", "decode")),
    "AutoencoderDC": ComponentSpec(
        AutoencoderDCConfig, _build_dc_ae, _dc_ae_inputs, dc_ae_weights.diffusers_rules, "diffusion_pytorch_model",
        methods=("encode", "decode")),
    "Gemma2Model": ComponentSpec(
        Gemma2Config, _build_gemma2, _gemma2_inputs, gemma2_weights.transformers_rules, "model",
        gemma2_weights.LAYERS, canonical_state=gemma2_weights.from_causal_lm),
}
# transformers' config.json has no `_class_name`; its `model_type` names the class (`architectures` may name a
# wrapper such as Gemma2ForCausalLM, whose decoder is what is loaded).
TRANSFORMERS_MODEL_TYPES = {"gemma2": "Gemma2Model"}


class Component:
    """A model with its params: ``model(*inputs)`` runs the jitted forward; ``.config``, ``.params``, ``.module``.

    Module methods named by the spec (``encode``, ``decode`` for autoencoders) are jitted attributes too.
    """

    def __init__(self, class_name: str, config: ComponentConfig, module: nn.Module, params: dict,
                 methods: tuple[str, ...] = (), static_argnames: tuple[str, ...] = (), quantize: str | None = None):
        self.class_name = class_name
        self.config = config
        self.module = module
        self.params = params
        self.quantize = quantize      # None, or the `sana_jax.quantize` mode its linear layers compute in
        def apply(variables, *args, **kwargs):
            return module.apply(variables, *args, **kwargs)

        # at top level compiled with the project's options (`sana_jax._compile`); inside a caller's jit, part of it
        self._apply = _compile.jit_anywhere(apply, static_argnames=static_argnames)
        for name in methods:
            setattr(self, name, self._bind(name))

    def to_host(self) -> "Component":
        """Keeps the params in host memory (numpy) from now on: each call puts them on the device for its own
        duration only, so a component used once per generation (the text encoder) holds no device memory between
        its calls. Returns self."""
        self.params = jax.device_get(self.params)
        return self

    def _bind(self, name: str):
        # the named methods are an autoencoder's encode / decode: the options of the pipeline's VAE programs
        fn = _compile.jit_anywhere(functools.partial(self.module.apply, method=name), vae=True)
        return lambda *args, **kwargs: fn({"params": self.params}, *args, **kwargs)

    def __call__(self, *args, **kwargs):
        return self._apply({"params": self.params}, *args, **kwargs)

    def __repr__(self):
        n = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(self.params))
        q = f", quantize={self.quantize!r}" if self.quantize else ""
        return f"{self.class_name}({n:,} params, dtype={self.module.dtype}{q})"


def _class_name_of(data: dict, where: str) -> str:
    """config.json `_class_name` (diffusers, this project), else the class of a transformers `model_type`."""
    if "_class_name" in data or "model_type" not in data:
        return data.get("_class_name", "")
    if data["model_type"] not in TRANSFORMERS_MODEL_TYPES:
        raise ConfigError(f"{where}: model_type {data['model_type']!r} is not supported; expected one of "
                          f"{sorted(TRANSFORMERS_MODEL_TYPES)}")
    return TRANSFORMERS_MODEL_TYPES[data["model_type"]]


def _spec(class_name: str, where: str) -> ComponentSpec:
    if class_name not in REGISTRY:
        raise ConfigError(f"{where}: _class_name {class_name!r} is not supported; expected one of {sorted(REGISTRY)}")
    return REGISTRY[class_name]


def abstract_params(spec: ComponentSpec, config, module: nn.Module) -> dict:
    """The module's params as ShapeDtypeStructs (no allocation)."""
    boxed = jax.eval_shape(lambda: module.init(jax.random.key(0), *spec.example_inputs(config)))
    return nn.meta.unbox(boxed)["params"]


def load_config(path: str | os.PathLike) -> ComponentConfig:
    """A component folder's config from its config.json alone (no weights read), validated."""
    config_path = os.path.join(os.fspath(path), "config.json")
    data = read_json(config_path)
    return _spec(_class_name_of(data, config_path), config_path).config_cls.from_dict(data, source=config_path)


def load_component(path: str | os.PathLike, *, config: ComponentConfig | str | os.PathLike | None = None,
                   quantize: str | None = None, **options) -> Component:
    """Loads a component folder (diffusers or JAX format), or an original-layout checkpoint file with ``config``.

    ``options`` go to the module (for the transformer: dtype, param_dtype, scan_layers, remat_policy,
    original_numerics, attention_implementation). Params keep the stored dtype unless ``param_dtype`` is given.
    ``quantize``: "int8", "w8a8" or "fp8" computes the linear layers quantized (`sana_jax.quantize`).
    """
    from sana_jax import quantize as quantization

    path = os.fspath(path)
    if quantize is not None:
        quantization.check_mode(quantize)
    if os.path.isfile(path):
        if config is None:
            raise ConfigError(f"{path}: an original checkpoint file needs config= (a config or a config.json path)")
        if not isinstance(config, ComponentConfig):
            data = read_json(config)
            where = os.fspath(config)
            config = _spec(_class_name_of(data, where), where).config_cls.from_dict(data, source=where)
        spec = REGISTRY[config.class_name]
        if spec.from_original is None:
            raise ConfigError(f"{path}: no original checkpoint layout is known for {config.class_name}")
        state = spec.from_original(read_checkpoint_file(path), source=path)
        flat = rulebook.torch_to_flax(state, spec.rules(config), source=path)
        model = _assemble(spec, config, flat, source=path, options=options)
    else:
        if not os.path.isdir(path):
            raise FileNotFoundError(f"{path}: no such component folder or checkpoint file")
        if config is not None:
            raise ConfigError(f"{path}: config= is only for original checkpoint files; a folder has its config.json")
        config = load_config(path)
        spec = REGISTRY[config.class_name]
        saved = _saved_quantization(path)
        if saved is not None:       # written quantized: taken as stored, never quantized again
            if quantize not in (None, saved):
                raise ConfigError(f"{path}: saved with quantize={saved!r}; loading it with quantize={quantize!r} is "
                                  f"not possible (load it with quantize={saved!r} or None, or quantize the float "
                                  f"model)")
            flat = _io.read_safetensors(os.path.join(path, JAX_WEIGHTS), lazy=True)
            return quantization.load_quantized(path, flat, config, saved, options)
        if os.path.isfile(os.path.join(path, JAX_WEIGHTS)):
            flat = _io.read_safetensors(os.path.join(path, JAX_WEIGHTS), lazy=True)
            source = os.path.join(path, JAX_WEIGHTS)
        else:
            state = read_state_dict(path, spec.weights_name)
            if spec.canonical_state is not None:
                state = spec.canonical_state(state, source=path)
            flat = rulebook.torch_to_flax(state, spec.rules(config), source=path)
            source = path
        model = _assemble(spec, config, flat, source=source, options=options)
    return model if quantize is None else quantization.quantize_component(model, quantize)


def _saved_quantization(path: str) -> str | None:
    """The mode a component folder was saved quantized in (its quantization.json), or None."""
    from sana_jax import quantize as quantization

    marker = os.path.join(path, quantization.QUANTIZATION_FILE)
    if not os.path.isfile(marker):
        return None
    mode = read_json(marker).get("quantize")
    if mode not in quantization.MODES:
        raise ConfigError(f"{marker}: 'quantize' is {mode!r}; expected one of {quantization.MODES}")
    if not os.path.isfile(os.path.join(path, JAX_WEIGHTS)):
        raise ConfigError(f"{path}: {quantization.QUANTIZATION_FILE} says quantized, but there is no {JAX_WEIGHTS}")
    return mode


def _assemble(spec: ComponentSpec, config, flat: dict, *, source: str, options: dict) -> Component:
    module = spec.build(config, **options)
    scanned = getattr(module, "scan_layers", False)
    # Traced scanned, the module's init traces one layer, not num_layers (a second of a cold start).
    expected = {k: v.shape for k, v in rulebook.flatten(abstract_params(spec, config, module)).items()}
    if scanned:
        expected = rulebook.unstack_layers(expected, spec.layer_prefix, shapes=True)
    rulebook.check_against(flat, expected, spec.rules(config), source=source)
    if scanned:
        flat = rulebook.stack_layers(flat, spec.layer_prefix, config.num_layers)
    cast = options.get("param_dtype")
    params = {k: to_device(flat.pop(k), cast) for k in sorted(flat)}
    return Component(config.class_name, config, module, rulebook.unflatten(params), spec.methods,
                     spec.static_argnames)


def to_device(value, dtype=None) -> jax.Array:
    """One weight as a device array (``dtype``: cast to it). A `_io.LazyArray` is read here into an array that
    nothing else holds, which ``device_put`` takes over as the buffer on XLA:CPU (no copy) or copies to the
    accelerator and releases: loading weight by weight then holds at most one host copy beside the loaded
    weights. Any other array is copied (``jnp.asarray``), since it may view a read-only mapped file."""
    if isinstance(value, _io.LazyArray):
        value = value.read()
        if dtype is None or np.dtype(dtype) == value.dtype:
            return jax.device_put(value)
    return jnp.asarray(value, dtype=dtype)


def save_component(model: Component, path: str | os.PathLike, format: str = "diffusers", *,
                   max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> None:
    """Writes ``model`` as a component folder: ``format="diffusers"`` (loads in diffusers) or ``"jax"``. The folder
    appears whole (a temporary folder, then a rename), replacing one already at ``path``."""
    if format not in FORMATS:
        raise ValueError(f"format={format!r}; expected one of {FORMATS}")
    with _io.atomic_directory(path) as tmp:
        write_component(model, tmp, format, max_shard_bytes=max_shard_bytes)


def write_component(model: Component, folder: str, format: str, *,
                    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> None:
    """Writes config.json and the weights into the existing (empty) ``folder``; ``save_component`` without the
    atomic rename, for callers that assemble a larger folder atomically themselves."""
    spec = _spec(model.class_name, "model")
    if model.quantize is not None and format != "jax":
        raise ValueError(f"format={format!r}: {model.class_name} is quantized ({model.quantize!r}), which only the "
                         f"JAX format holds; save it with format='jax', or save the float model")
    flat = rulebook.flatten(jax.device_get(model.params))
    if model.quantize is not None:
        from sana_jax import quantize as quantization

        flat = quantization.split_quantized(flat)
    flat = {k: np.asarray(v) for k, v in flat.items()}
    if getattr(model.module, "scan_layers", False):
        flat = rulebook.unstack_layers(flat, spec.layer_prefix)
    model.config.to_json_file(os.path.join(folder, "config.json"))
    if format == "jax":
        _io.write_safetensors(os.path.join(folder, JAX_WEIGHTS), flat, {"format": "flax"})
        if model.quantize is not None:
            _io.atomic_write_text(os.path.join(folder, quantization.QUANTIZATION_FILE),
                                  json.dumps({"quantize": model.quantize, "library": "qwix"}) + "\n")
    else:
        state = rulebook.flax_to_torch(flat, spec.rules(model.config))
        write_state_dict(folder, spec.weights_name, state, max_shard_bytes=max_shard_bytes,
                         metadata={"format": "pt"})


def non_finite_params(model: Component) -> dict[str, int]:
    """``/``-joined param name -> number of NaN/inf values, for the params that hold any (empty when all finite)."""
    out = {}
    for key, value in rulebook.flatten(jax.device_get(model.params)).items():
        value = np.asarray(value)
        if jnp.issubdtype(value.dtype, jnp.inexact):  # bfloat16 included
            bad = int(value.size - np.count_nonzero(np.isfinite(value)))
            if bad:
                out[key] = bad
    return out
