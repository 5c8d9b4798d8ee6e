"""Post-training quantization of a component's linear layers with qwix: ``quantize_component(model, mode)``.

Modes (``MODES``):

- ``"int8"``: int8 weights with one scale per output channel (absmax), activations in the compute dtype;
- ``"w8a8"``: int8 weights as above and int8 activations with dynamic per-token scales;
- ``"fp8"``: float8 e4m3 weights (per output channel) and activations (per token), with scales; Gemma2's
  activations stay in the compute dtype (`WEIGHT_ONLY`).

What is quantized (``TARGETS``, ``OP_TARGETS``), by module path: the DiT's self- and cross-attention q/k/v/out
projections, the FFN's 1x1 convs (``conv_inverted``, ``conv_point``: dense layers here), its temporal conv (a full
D x D kernel over 3 frames: one contraction over the stacked frames, 15% of the 2B DiT's weights) and the caption
projection; Gemma2's q/k/v/o and MLP projections. What stays in the compute dtype, and why: the linear-attention
sums and denominator (fp32 always: they sum over every token), the norms and the depthwise 3x3 conv (few weights;
shifted adds, no matmul), the timestep embedding and the adaLN modulation (one vector per sample: nothing to gain in
time, and every layer's scale and shift hang on it), the final projection (it writes the velocity).

Saved quantized (``save_component(model, path, format="jax")``): the JAX format's one safetensors file, each quantized
kernel as ``<key>.qvalue`` and ``<key>.scale`` (per layer, as the float format stores layers), and
``quantization.json`` naming the mode; `load_component` reads it back with no quantization work and without ever
holding float kernels.

Scanned layers: qwix's ``quantize_params`` takes a stacked (layers, in, out) kernel for an unstacked one and gets
the scales' axes wrong, so stacked kernels are quantized one layer at a time (``jax.vmap``) here.
"""

from __future__ import annotations

# JAX, flax and qwix are imported where used: the CLIs read MODES before anything heavy loads.
MODES = ("int8", "w8a8", "fp8")
# the pipeline components `quantize=` applies to (`SanaVideoPipeline.from_pretrained(quantize_components=...)`)
PIPELINE_COMPONENTS = ("text_encoder", "transformer")
QUANTIZATION_FILE = "quantization.json"     # in a component folder saved quantized: {"quantize": mode}

# class name -> regex over the module path of the linear layers quantized (see the module docstring)
TARGETS = {
    "SanaVideoTransformer3DModel":
        r"transformer_blocks[^/]*/((attn1|attn2)/to_(q|k|v|out)|ff/conv_(inverted|point))|caption_linear_\d",
    "Gemma2Model": r"layers.*/(self_attn/(q|k|v|o)_proj|mlp/(gate|up|down)_proj)",
}
# class name -> (module path, the only ops quantized there): the FFN module's own products besides its dense
# layers' -- its temporal conv, an einsum; the identity product that keeps the depthwise kernel in memory on CPU
# (`sana_jax.nn.convs`) is a dot there and must stay exact
OP_TARGETS = {"SanaVideoTransformer3DModel": (r"transformer_blocks[^/]*/ff", ("einsum",))}
TARGETS["SanaVideoCausalTransformer3DModel"] = TARGETS["SanaVideoTransformer3DModel"]
OP_TARGETS["SanaVideoCausalTransformer3DModel"] = OP_TARGETS["SanaVideoTransformer3DModel"]
# (mode, class name) whose activations stay in the compute dtype, the weights quantized as the mode says. Gemma2 in
# fp8: e4m3 activations in its attention projections cost the demo 9.8 points of held-out shape (weights alone in
# e4m3: 0.7), and the text encoder runs once per prompt, so fp8 products would buy no time worth having.
WEIGHT_ONLY = {("fp8", "Gemma2Model")}


def check_mode(mode) -> str:
    """``mode`` if it is one of `MODES`, else a ValueError naming it."""
    if mode not in MODES:
        raise ValueError(f"quantize={mode!r}: expected one of {MODES} (or None for no quantization)")
    return mode


def check_components(components) -> tuple[str, ...]:
    """``components`` as a tuple if it is a non-empty collection of `PIPELINE_COMPONENTS` (None: all of them),
    else a ValueError naming what was given."""
    if components is None:
        return PIPELINE_COMPONENTS
    if isinstance(components, str):
        components = (components,)
    components = tuple(components)
    unknown = [c for c in components if c not in PIPELINE_COMPONENTS]
    if unknown or not components:
        raise ValueError(f"quantize_components={components!r}: expected one or more of {PIPELINE_COMPONENTS}")
    return components


def rules(mode: str, class_name: str) -> list:
    """The qwix rules of ``mode`` for a component class."""
    import jax.numpy as jnp
    import qwix

    check_mode(mode)
    if class_name not in TARGETS:
        raise ValueError(f"quantize={mode!r}: {class_name} has no quantized layers; quantization applies to "
                         f"{sorted(TARGETS)}")
    qtype = {"int8": jnp.int8, "w8a8": jnp.int8, "fp8": jnp.float8_e4m3fn}[mode]
    act = None if mode == "int8" or (mode, class_name) in WEIGHT_ONLY else qtype
    out = [qwix.QuantizationRule(module_path=TARGETS[class_name], weight_qtype=qtype, act_qtype=act)]
    if class_name in OP_TARGETS:
        path, ops = OP_TARGETS[class_name]
        out.append(qwix.QuantizationRule(module_path=path, op_names=ops, weight_qtype=qtype, act_qtype=act))
    return out


def quantize_module(module, mode: str, class_name: str):
    """The module with its targeted dense layers computing through qwix's PTQ provider."""
    import qwix

    return qwix.quantize_model(module, qwix.PtqProvider(rules(mode, class_name)))


def quantize_params(params: dict, abstract: dict, stacked: str | None, dtype) -> dict:
    """Float params -> the quantized module's params: each kernel qwix marks (in ``abstract``, the quantized
    module's abstract init) becomes its QArray, its scales in ``dtype`` (the module's compute dtype: a quantized
    product comes out in its scales' dtype, and the activations must stay in the compute dtype); under ``stacked``
    (the scanned layers' collection, or None) one layer at a time."""
    import jax
    from qwix._src.core import qarray
    from qwix._src.providers.ptq import WithAux

    from sana_jax.weights import rulebook

    flat_abstract = rulebook.flatten(abstract)
    out = {}
    for key, value in rulebook.flatten(params).items():
        target = flat_abstract.get(key)
        if isinstance(target, WithAux):
            def quantize(w, how=target.how):
                return qarray.quantize(w.astype(dtype), how)
            if stacked is not None and key.split("/")[0] == stacked:
                quantize = jax.vmap(quantize)
            value = target.replace(array=jax.jit(quantize)(value))
        out[key] = value
    return rulebook.unflatten(out)


def quantize_component(model, mode: str):
    """A new `Component` computing ``model``'s targeted linear layers in ``mode`` (one of `MODES`), its float
    weights quantized (the float ones are not kept)."""
    from sana_jax.components import REGISTRY, Component, abstract_params

    check_mode(mode)
    if model.quantize is not None:
        raise ValueError(f"quantize={mode!r}: {model.class_name} is already quantized ({model.quantize!r})")
    spec = REGISTRY[model.class_name]
    module = quantize_module(model.module, mode, model.class_name)
    stacked = spec.layer_prefix if getattr(model.module, "scan_layers", False) else None
    params = quantize_params(model.params, abstract_params(spec, model.config, module), stacked, model.module.dtype)
    return Component(model.class_name, model.config, module, params, spec.methods, spec.static_argnames,
                     quantize=mode)


def split_quantized(flat: dict) -> dict:
    """A flat {key: leaf} of a quantized model's params with each quantized kernel split into ``<key>.qvalue`` and
    ``<key>.scale`` (how a folder stores it)."""
    from qwix._src.providers.ptq import WithAux

    out = {}
    for key, leaf in flat.items():
        if isinstance(leaf, WithAux):
            if leaf.array.zero_point is not None:
                raise ValueError(f"{key}: an asymmetric quantized kernel (a zero point) cannot be saved")
            out[f"{key}.qvalue"], out[f"{key}.scale"] = leaf.array.qvalue, leaf.array.scale
        else:
            out[key] = leaf
    return out


def load_quantized(path: str, flat: dict, config, mode: str, options: dict):
    """The `Component` of a folder saved quantized: ``flat`` (its weight file, per layer) checked key by key and
    shape by shape against the quantized module's abstract params, quantized values taken as stored (scales cast
    to the compute dtype), nothing quantized here."""
    import dataclasses

    from qwix._src.providers.ptq import WithAux

    from sana_jax.components import REGISTRY, Component, abstract_params, to_device
    from sana_jax.config import ConfigError
    from sana_jax.weights import rulebook

    spec = REGISTRY[config.class_name]
    plain = spec.build(config, **options)
    module = quantize_module(plain, mode, config.class_name)
    abstract = rulebook.flatten(abstract_params(spec, config, module))
    if getattr(plain, "scan_layers", False):
        flat = rulebook.stack_layers(flat, spec.layer_prefix, config.num_layers)
    flat = dict(flat)
    cast = options.get("param_dtype")
    params, problems = {}, []

    def take(key, want):
        if key not in flat:
            problems.append(f"missing {key!r}")
            return None
        value = flat.pop(key)
        if tuple(value.shape) != tuple(want.shape):
            problems.append(f"{key!r} has shape {tuple(value.shape)}, expected {tuple(want.shape)}")
        return value

    for key, want in abstract.items():
        if isinstance(want, WithAux):
            qvalue = take(f"{key}.qvalue", want.array.qvalue)
            scale = take(f"{key}.scale", want.array.scale)
            if qvalue is not None and qvalue.dtype != want.array.qvalue.dtype:
                problems.append(f"{key + '.qvalue'!r} is {qvalue.dtype}, expected {want.array.qvalue.dtype} "
                                f"(quantize={mode!r})")
            if qvalue is not None and scale is not None:
                array = dataclasses.replace(want.array, qvalue=to_device(qvalue),
                                            scale=to_device(scale, plain.dtype))
                params[key] = want.replace(array=array)
        else:
            value = take(key, want)
            if value is not None:
                params[key] = to_device(value, cast)
    problems += [f"unexpected {key!r}" for key in sorted(flat)]
    if problems:
        raise ConfigError(f"{path}: a folder saved with quantize={mode!r} does not match its config: "
                          + "; ".join(problems[:8]) + (f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""))
    return Component(config.class_name, config, module, rulebook.unflatten(params), spec.methods,
                     spec.static_argnames, quantize=mode)
