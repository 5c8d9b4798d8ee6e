"""Peak device memory of one generation at full size: XLA's compiled memory analysis of each stage's program plus
the weights resident while it runs. Random weights are never made: every program is lowered from shape structures.

    python benchmarks/memory_plan.py                      # 480p (Wan2.1 VAE) and 720p (LTX-2 VAE); bf16 int8 fp8
    python benchmarks/memory_plan.py --tiny               # dry run at toy width (seconds)
    python benchmarks/memory_plan.py --resolutions 480p --modes bf16
    python benchmarks/memory_plan.py --cfg-sequential     # CFG's two branches as two DiT calls (cfg_batched=False)

The generation is the pipeline's own (`SanaVideoPipeline` built around components whose params are shape
structures, so the programs measured are the ones `pipe(...)` compiles): Gemma2-2B encodes the prompt and the
negative prompt (one call each, 512 tokens: the instruction and 300), the 2B DiT runs the 50-step CFG loop (one
program, its latents donated), the VAE decodes the 81 frames whole or `--decode-frames` latent frames at a time
through its carried state. Weights in bf16; with int8 / fp8 the DiT's and Gemma2's linear layers hold int8 / e4m3
values and bf16 scales (`sana_jax.quantize`), the VAE stays bf16.

A stage's peak = its program's arguments + outputs - donated aliases + temporaries, plus the weights of the other
components still on the device (Gemma2's too unless offloaded: `from_pretrained(offload_text_encoder=True)`), plus
what the generation holds across stages (embeddings, latents, the frames decoded so far). The numbers are from the
platform this runs on: XLA:CPU's buffer assignment here, a GPU's in the GPU script; they differ in temporaries
(fusion and kernel choices), not in weights.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import re
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sana_jax import quantize as quantization
from sana_jax.components import REGISTRY, Component, abstract_params
from sana_jax.config.gemma2 import GEMMA2_2B
from sana_jax.config.ltx2_vae import LTX2_VIDEO_VAE
from sana_jax.config.transformer import SANA_VIDEO_2B_480P, SANA_VIDEO_2B_720P
from sana_jax.config.wan_vae import AutoencoderKLWanConfig
from sana_jax.pipeline.sana_video import SanaVideoPipeline, latent_shape
from sana_jax.schedulers import SANA_VIDEO_DPM_SCHEDULER

GB = 1e9
PROMPT_TOKENS = 512          # the complex-human instruction (~190 Gemma tokens) + max_sequence_length 300, rounded up
CAPTION_TOKENS = 300         # what the DiT cross-attends to after the instruction is cut
RESOLUTIONS = {"480p": (480, 832, SANA_VIDEO_2B_480P, AutoencoderKLWanConfig()),
               "720p": (704, 1280, SANA_VIDEO_2B_720P, LTX2_VIDEO_VAE)}
MODES = ("bf16", "int8", "fp8")


def tiny_resolutions():
    """Toy widths with the published layouts (patch, compression), for a dry run in seconds."""
    from sana_jax.config.ltx2_vae import AutoencoderKLLTX2VideoConfig
    from sana_jax.testing.pipelines import TINY_LTX2

    small = dict(num_attention_heads=2, attention_head_dim=16, num_layers=2, num_cross_attention_heads=2,
                 cross_attention_head_dim=16, cross_attention_dim=32, caption_channels=32)
    te = dataclasses.replace(GEMMA2_2B, vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=2, num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16)
    wan = AutoencoderKLWanConfig(base_dim=8, dim_mult=(1, 1, 1, 1), num_res_blocks=1)
    ltx = AutoencoderKLLTX2VideoConfig(**TINY_LTX2)
    return te, {"480p": (64, 96, dataclasses.replace(SANA_VIDEO_2B_480P, **small), wan),
                "720p": (64, 128, dataclasses.replace(SANA_VIDEO_2B_720P, in_channels=8, out_channels=8, **small),
                         ltx)}


def _bf16(tree):
    return jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct(a.shape, jnp.bfloat16) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def abstract_component(config, mode: str, make=None, **options) -> Component:
    """A component whose params are shape structures: bf16 weights, or ``mode``'s quantized values and bf16
    scales as `load_component(quantize=mode)` holds them. ``make`` (bf16 shape structures -> arrays): real
    params instead, made by it and quantized on the device (`full_size.py`'s random weights)."""
    spec = REGISTRY[config.class_name]
    module = spec.build(config, dtype="bfloat16", param_dtype="bfloat16", **options)
    params = _bf16(abstract_params(spec, config, module))
    if make is not None:
        params = make(params)
    if mode == "bf16":
        return Component(config.class_name, config, module, params, spec.methods, spec.static_argnames)
    qmodule = quantization.quantize_module(module, mode, config.class_name)
    stacked = spec.layer_prefix if options.get("scan_layers") else None
    qabstract = abstract_params(spec, config, qmodule)
    quantize = functools.partial(quantization.quantize_params, abstract=qabstract, stacked=stacked,
                                 dtype=jnp.bfloat16)
    qparams = jax.eval_shape(quantize, params) if make is None else jax.jit(quantize)(params)
    return Component(config.class_name, config, qmodule, qparams, spec.methods, spec.static_argnames, quantize=mode)


def nbytes(tree) -> int:
    return sum(int(np.prod(a.shape)) * jnp.dtype(a.dtype).itemsize for a in jax.tree_util.tree_leaves(tree))


@dataclasses.dataclass
class Stage:
    name: str
    program: int         # arguments + outputs - aliases + temporaries of the stage's program(s), bytes
    temp: int
    params: int          # of those arguments, the stage's component's weights
    compile_s: float
    upcast: int = 0      # of the temporaries, whole-array copies of weights in another dtype (see `weight_copies`)


_INSTRUCTION = re.compile(r"^\s*(%\S+) = (\w+)\[([0-9,]*)\]\S* (\w[\w-]*)\((.*?)\)")


def weight_copies(hlo_text: str) -> int:
    """Bytes of the entry computation's whole-array dtype conversions of its parameters (an instruction whose
    operands are parameters, one of them of its shape in another dtype: a weight upcast, or quantized values
    dequantized with their scales). XLA:CPU has no bf16 / int8 / fp8 matmul: it converts every weight to f32,
    hoists the conversions of the scanned layers' stacked weights out of the sampling loop and schedules the
    unscanned Gemma2 layers' conversions together, so every layer's f32 copy is live at once. A GPU's matmuls read
    bf16 (and quantized) weights as they are; the accelerator column leaves these bytes out, and the GPU script
    measures the programs themselves."""
    entry = hlo_text[hlo_text.index("\nENTRY"):]
    parameters, total = {}, 0
    for line in entry.splitlines():
        m = _INSTRUCTION.match(line)
        if not m:
            continue
        name, dtype, dims, op, operands = m.groups()
        if op == "parameter":
            parameters[name] = (dtype, dims)
        elif op in ("convert", "fusion") and all(o in parameters for o in operands.split(", ")):
            sources = [parameters[o] for o in operands.split(", ")]   # a weight, or quantized values and scales
            if any(source_dims == dims and source_dtype != dtype for source_dtype, source_dims in sources):
                size = {"f32": 4, "bf16": 2, "f16": 2, "s8": 1}.get(dtype, 4)
                total += int(np.prod([int(d) for d in dims.split(",") if d] or [1])) * size
    return total


def measure(lowered, params, name) -> Stage:
    start = time.perf_counter()
    compiled = lowered.compile()
    stats = compiled.memory_analysis()
    took = time.perf_counter() - start
    program = (stats.argument_size_in_bytes + stats.output_size_in_bytes - stats.alias_size_in_bytes
               + stats.temp_size_in_bytes)
    upcast = weight_copies(compiled.as_text()) if jax.default_backend() == "cpu" else 0
    return Stage(name, program, stats.temp_size_in_bytes, nbytes(params), took, upcast)


def plan(resolution, mode: str, te_config, decode_frames: int, frames: int, steps: int,
         cfg_batched: bool = True) -> dict:
    height, width, dit_config, vae_config = resolution
    te = abstract_component(te_config, mode)
    dit = abstract_component(dit_config, mode, scan_layers=True)
    vae = abstract_component(vae_config, "bf16")
    pipe = SanaVideoPipeline(None, te, dit, vae, SANA_VIDEO_DPM_SCHEDULER)
    shape = latent_shape(dit_config, vae_config, 1, height, width, frames)
    s = jax.ShapeDtypeStruct
    ids = s((1, PROMPT_TOKENS), jnp.int32)
    text = measure(te._apply.lower({"params": te.params}, ids, ids), te.params, "text encoder")
    embeds = s((2, CAPTION_TOKENS, te_config.hidden_size), jnp.float32)
    mask = s((2, CAPTION_TOKENS), jnp.int32)
    denoise = measure(pipe._denoise.lower(dit.params, s(shape, jnp.float32), embeds, mask, s((), jnp.float32),
                                          schedule=SANA_VIDEO_DPM_SCHEDULER.schedule(steps), image_to_video=False,
                                          cfg=True, cfg_batched=cfg_batched, progress=False), dit.params,
                      "denoise")
    latents = s(shape, jnp.bfloat16)
    if decode_frames and decode_frames < shape[1]:
        # The largest run: a later one (it carries the causal state in and out); the first has none in.
        first = s(shape[:1] + (decode_frames,) + shape[2:], jnp.bfloat16)
        opening = pipe._decode.lower(vae.params, first, vae.module.init_stream_state(), mode="stream")
        lowered, state = opening, None
        for _ in range(shape[1] // decode_frames):   # a non-causal decoder's state grows over its first runs
            new = jax.tree_util.tree_map(lambda a: s(a.shape, a.dtype), lowered.out_info[1])
            if state is not None and new == state:
                break
            state, lowered = new, pipe._decode.lower(vae.params, first, new, mode="stream")
        runs = [measure(opening, vae.params, "decode"), measure(lowered, vae.params, "decode")]
        decode = max(runs, key=lambda r: r.program)
        decode.compile_s = sum(r.compile_s for r in runs)
    else:
        decode = measure(pipe._decode.lower(vae.params, latents, None, mode="whole"), vae.params, "decode")
    video = int(np.prod((1, frames, height, width, 3))) * 2          # the decoded frames, bf16, held to the end
    carried = nbytes(embeds) + int(np.prod(shape)) * 4                # held across stages
    weights = {"text encoder": text.params, "denoise": denoise.params, "decode": decode.params}
    return dict(stages=(text, denoise, decode), weights=weights, video=video, carried=carried, shape=shape)


def peaks(result: dict, offload: bool, accelerator: bool = False) -> dict:
    """Each stage's peak: its program, the other components' resident weights, the buffers held across stages.
    ``accelerator``: without the CPU's f32 copies of the weights (`weight_copies`)."""
    weights = result["weights"]
    out = {}
    for stage in result["stages"]:
        others = sum(w for name, w in weights.items() if name != stage.name and (name != "text encoder" or
                                                                                   not offload))
        held = result["carried"] + (result["video"] if stage.name == "decode" else 0)
        out[stage.name] = stage.program + others + held - (stage.upcast if accelerator else 0)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--resolutions", nargs="+", default=list(RESOLUTIONS), choices=list(RESOLUTIONS))
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    p.add_argument("--decode-frames", type=int, default=1, help="0: the whole clip in one program")
    p.add_argument("--frames", type=int, default=81)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--cfg-sequential", action="store_true",
                   help="CFG's negative and positive branch as two DiT calls per step (pipe(..., cfg_batched=False))")
    p.add_argument("--tiny", action="store_true", help="toy widths, the published layouts (a dry run)")
    args = p.parse_args(argv)
    te_config, resolutions = tiny_resolutions() if args.tiny else (GEMMA2_2B, RESOLUTIONS)
    print(f"backend {jax.default_backend()} ({jax.devices()[0].device_kind}), jax {jax.__version__}; "
          f"{args.frames} frames, {args.steps} steps, CFG {'in two calls' if args.cfg_sequential else 'batched'}; "
          f"decode_frames {args.decode_frames}"
          + (" (TINY dry run)" if args.tiny else ""), flush=True)
    rows = []
    for res in args.resolutions:
        for mode in args.modes:
            result = plan(resolutions[res], mode, te_config, args.decode_frames, args.frames, args.steps,
                          cfg_batched=not args.cfg_sequential)
            text, denoise, decode = result["stages"]
            print(f"{res} {mode}: latents {result['shape']}; weights GB: text encoder {text.params / GB:.2f}, DiT "
                  f"{denoise.params / GB:.2f}, VAE {decode.params / GB:.2f}; temporaries GB: text "
                  f"{text.temp / GB:.2f}, denoise {denoise.temp / GB:.2f}, decode {decode.temp / GB:.2f} (of which "
                  f"f32 weight copies {text.upcast / GB:.2f} / {denoise.upcast / GB:.2f} / {decode.upcast / GB:.2f});"
                  f" compiled in {text.compile_s:.0f} / {denoise.compile_s:.0f} / {decode.compile_s:.0f} s",
                  flush=True)
            for offload in (False, True):
                rows.append((res, mode, offload, peaks(result, offload), peaks(result, offload, accelerator=True)))
    cpu = jax.default_backend() == "cpu"
    print("\n| resolution | weights | Gemma2 offloaded | peak GB: text encoder | denoise | decode | generation |"
          + (" without the CPU's f32 weight copies |" if cpu else ""))
    print("|---|---|---|---|---|---|---|" + ("---|" if cpu else ""))
    for res, mode, offload, peak, accel in rows:
        print(f"| {res} | {mode} | {'yes' if offload else 'no'} | {peak['text encoder'] / GB:.2f} | "
              f"{peak['denoise'] / GB:.2f} | {peak['decode'] / GB:.2f} | **{max(peak.values()) / GB:.2f}** |"
              + (f" **{max(accel.values()) / GB:.2f}** |" if cpu else ""))


if __name__ == "__main__":
    main()
