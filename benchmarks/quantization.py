"""Forward time of the DiT in bf16 against its int8, w8a8 and fp8 quantizations (`sana_jax.quantize`), one run.

    python benchmarks/quantization.py                 # the 2B DiT cut to one layer at 480p's grid, and the demo DiT
    python benchmarks/quantization.py --tiny          # a dry run at toy width

Two models, random weights (the speed does not depend on their values):
- **2B width**: the published 2B DiT (D 2240, 20 heads of 112, caption 2304, mlp ratio 3) cut to one transformer
  layer, on ``--frames`` latent frames of the 480p grid (30 x 52 tokens each) with CFG's batch of 2 and 300 caption
  tokens: the per-layer cost of a 480p denoising step, at a length this machine runs in seconds.
- **demo**: the shipped demo student (`sana_jax/shapes/model`), its stream's later-block call (batch 1, 2 latent
  frames of 4 x 4, against the carried state's empty cache: one forward).
Each in bf16 compute, unquantized and in every mode, compiled once, timed interleaved (medians); ratios are bf16's
time over the mode's (> 1: the quantized forward is faster).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._timing import interleaved_median_times
from sana_jax import load_component
from sana_jax import quantize as quantization
from sana_jax.components import REGISTRY, Component
from sana_jax.config.transformer import SANA_VIDEO_2B_480P
from sana_jax.testing.numerics import rel_err

DEMO = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "sana_jax", "shapes", "model",
                    "transformer")


def published_width(layers: int, tiny: bool) -> Component:
    config = dataclasses.replace(SANA_VIDEO_2B_480P, num_layers=layers)
    if tiny:
        config = dataclasses.replace(config, num_attention_heads=2, attention_head_dim=16,
                                     num_cross_attention_heads=2, cross_attention_head_dim=16, cross_attention_dim=32,
                                     caption_channels=32)
    spec = REGISTRY[config.class_name]
    module = spec.build(config, dtype="bfloat16", param_dtype="bfloat16")
    params = jax.jit(lambda key: nn.meta.unbox(module.init(key, *spec.example_inputs(config)))["params"])(
        jax.random.key(0))
    return Component(config.class_name, config, module, params, spec.methods, spec.static_argnames)


def inputs(config, batch, frames, height, width, text_len, seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((batch, frames, height, width, config.in_channels)), jnp.float32)
    t = jnp.full((batch,), 500.0, jnp.float32)
    ctx = jnp.asarray(rng.standard_normal((batch, text_len, config.caption_channels)), jnp.float32)
    return x, t, ctx


def bench(name, model: Component, args, repeats: int):
    variants = {"bf16": model, **{mode: quantization.quantize_component(model, mode) for mode in quantization.MODES}}
    outputs = {mode: np.asarray(m(*args), np.float32) for mode, m in variants.items()}      # compiles, warms up
    for m in variants.values():
        jax.block_until_ready(m(*args))
    fns = [lambda m=m: jax.block_until_ready(m(*args)) for m in variants.values()]
    times = interleaved_median_times(fns, repeats)
    base = times[0]
    ref = outputs["bf16"]
    rows = []
    for (mode, _), seconds in zip(variants.items(), times):
        err = rel_err(outputs[mode], ref)
        rows.append(f"| {name} | {mode} | {seconds * 1e3:.1f} | {base / seconds:.2f}x | "
                    f"{'-' if mode == 'bf16' else f'{err:.2%}'} |")
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=2, help="latent frames of the 480p grid for the 2B-width model")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--tiny", action="store_true", help="toy width, 1 frame (a dry run)")
    args = p.parse_args(argv)
    device = jax.devices()[0]
    print(f"backend {jax.default_backend()} ({device.device_kind}), jax {jax.__version__}, {os.cpu_count()} CPUs; "
          f"medians of {args.repeats}" + (" (TINY dry run)" if args.tiny else ""), flush=True)
    rows = []
    big = published_width(1, args.tiny)
    frames = 1 if args.tiny else args.frames
    grid = (8, 12) if args.tiny else (60, 104)
    rows += bench(f"2B width, 1 layer, {frames} x {grid[0] // 2} x {grid[1] // 2} tokens, batch 2", big,
                  inputs(big.config, 2, frames, *grid, 300), args.repeats)
    del big
    demo = load_component(DEMO, dtype="bfloat16", scan_layers=True)
    rows += bench("demo student, one block call", demo, inputs(demo.config, 1, 2, 4, 4, 32), args.repeats)
    print("\n| model | weights | forward ms (median) | speed vs bf16 | output rel. error vs bf16 |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
