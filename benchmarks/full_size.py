"""The published configurations at full size: one generation timed stage by stage on an accelerator, and the
DiT's cost model (FLOPs and bytes from XLA's compiled cost analysis) on any machine.

    python benchmarks/full_size.py --cost-model            # no weights made: the floor at an H100 / H200's peaks
    python benchmarks/full_size.py                         # GPU: 480p bf16, random weights, one 50-step CFG run
    python benchmarks/full_size.py --resolutions 480p 720p --modes bf16 int8
    python benchmarks/full_size.py --tiny                  # dry run at toy width (CPU, seconds)

The generation is the pipeline's own programs (`SanaVideoPipeline` around components built as `memory_plan.py`
builds them, here with random bf16 weights made on the device: N(0, 0.02), quantized on the device for int8 /
fp8): Gemma2-2B encodes the prompt and the negative prompt (512 tokens each; the tokenizer is not timed), the 2B
DiT runs the 50-step CFG loop as one compiled program, the VAE decodes (``--decode-frames``, 0: whole). Each stage
is compiled first (its compile time printed apart), then run and timed once (``--repeats`` for more). Printed:
per-stage seconds, the loop's seconds per step, the DiT's model-FLOPs utilisation (the XLA cost analysis' FLOPs of
one CFG forward x steps / loop time / the device's bf16 dense peak) and the device's peak memory in use.

The cost model lowers one CFG forward (batch 2) of the published DiT at 480p and 720p, 81 frames, 300 caption
tokens, from shape structures, and prints XLA's FLOPs and bytes accessed with the time each implies at the peaks
below: the floor the GPU numbers are read against. Bytes come from the compiling platform's program (on CPU its
f32 weight copies count, see `memory_plan.weight_copies`), FLOPs do not depend on it.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._timing import median_time
from benchmarks.memory_plan import (
    CAPTION_TOKENS,
    PROMPT_TOKENS,
    RESOLUTIONS,
    abstract_component,
    nbytes,
    tiny_resolutions,
)
from sana_jax.components import Component
from sana_jax.config.gemma2 import GEMMA2_2B
from sana_jax.pipeline.sana_video import SanaVideoPipeline, latent_shape
from sana_jax.schedulers import SANA_VIDEO_DPM_SCHEDULER

# bf16 dense tensor-core peak (FLOP/s) and HBM bandwidth (bytes/s) of the SXM parts, from NVIDIA's datasheets
PEAKS = {"H100": (989e12, 3.35e12), "H200": (989e12, 4.8e12)}


def device_peak() -> tuple[str, float, float] | None:
    kind = jax.devices()[0].device_kind
    for name, (flops, bandwidth) in PEAKS.items():
        if name in kind:
            return name, flops, bandwidth
    return None


@functools.partial(jax.jit, static_argnums=(1, 2))
def _normal(key, shape, dtype):
    return (0.02 * jax.random.normal(key, shape, jnp.float32)).astype(dtype)


def random_component(config, mode: str, seed: int, **options) -> Component:
    """`abstract_component` with random bf16 weights N(0, 0.02) made on the device (then quantized there)."""
    def make(abstract):
        leaves, treedef = jax.tree_util.tree_flatten(abstract)
        key = jax.random.key(seed)
        return treedef.unflatten([_normal(jax.random.fold_in(key, i), a.shape, a.dtype)
                                  for i, a in enumerate(leaves)])

    return abstract_component(config, mode, make, **options)


def cost(lowered) -> dict:
    """XLA's cost analysis of a lowered program, compiled ("flops", "bytes accessed", ...)."""
    analysis = lowered.compile().cost_analysis()
    return analysis[0] if isinstance(analysis, (list, tuple)) else analysis


def dit_forward(dit: Component, shape, caption_dim: int):
    """One CFG forward of the DiT (batch 2), lowered from shape structures."""
    s = jax.ShapeDtypeStruct
    x = s((2,) + tuple(shape[1:]), jnp.bfloat16)
    return jax.jit(lambda p, x, t, e, m: dit.module.apply({"params": p}, x, t, e, m)).lower(
        dit.params, x, s((2,), jnp.float32), s((2, CAPTION_TOKENS, caption_dim), jnp.bfloat16),
        s((2, CAPTION_TOKENS), jnp.int32))


def cost_model(resolutions, te_config, frames: int):
    print("| resolution | DiT tokens | GFLOP per CFG forward | GB accessed | compute floor ms (989 TFLOP/s bf16) | "
          "HBM floor ms (H100 / H200) | 50 steps at the compute floor, s |")
    print("|---|---|---|---|---|---|---|")
    for name, (height, width, dit_config, vae_config) in resolutions.items():
        dit = abstract_component(dit_config, "bf16", scan_layers=False)
        shape = latent_shape(dit_config, vae_config, 1, height, width, frames)
        analysis = cost(dit_forward(dit, shape, te_config.hidden_size))
        flops, accessed = analysis["flops"], analysis["bytes accessed"]
        p = dit_config.patch_size
        tokens = 2 * (shape[1] // p[0]) * (shape[2] // p[1]) * (shape[3] // p[2])
        compute = flops / PEAKS["H100"][0]
        print(f"| {name} | {tokens:,} | {flops / 1e9:,.0f} | {accessed / 1e9:.1f} | {compute * 1e3:.0f} | "
              f"{accessed / PEAKS['H100'][1] * 1e3:.1f} / {accessed / PEAKS['H200'][1] * 1e3:.1f} | "
              f"{50 * compute:.1f} |", flush=True)


def timed(fn, repeats: int) -> float:
    """Median seconds of ``fn()`` with its result ready (warm up before calling this)."""
    return median_time(lambda: jax.block_until_ready(fn()), repeats)


def generation(resolution, mode: str, te_config, frames: int, steps: int, decode_frames: int, repeats: int):
    height, width, dit_config, vae_config = resolution
    start = time.perf_counter()
    te = random_component(te_config, mode, 0)
    dit = random_component(dit_config, mode, 1, scan_layers=True)
    vae = random_component(vae_config, "bf16", 2)
    jax.block_until_ready((te.params, dit.params, vae.params))
    made = time.perf_counter() - start
    pipe = SanaVideoPipeline(None, te, dit, vae, SANA_VIDEO_DPM_SCHEDULER)
    schedule = SANA_VIDEO_DPM_SCHEDULER.schedule(steps)
    shape = latent_shape(dit_config, vae_config, 1, height, width, frames)
    rng = np.random.default_rng(0)
    ids = jnp.asarray(rng.integers(0, te_config.vocab_size, (1, PROMPT_TOKENS)), jnp.int32)
    ones = jnp.ones((1, PROMPT_TOKENS), jnp.int32)

    row = dict(weights_gb=(nbytes(te.params) + nbytes(dit.params) + nbytes(vae.params)) / 1e9, made_s=made)
    start = time.perf_counter()
    jax.block_until_ready(te(ids, ones))
    row["text_compile_s"] = time.perf_counter() - start
    row["text_s"] = 2 * timed(lambda: te(ids, ones), repeats)          # the prompt and the negative prompt

    embeds = jnp.asarray(rng.standard_normal((2, CAPTION_TOKENS, te_config.hidden_size)), jnp.float32)
    mask = jnp.ones((2, CAPTION_TOKENS), jnp.int32)
    noise = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    start = time.perf_counter()
    loop = pipe._denoise.lower(dit.params, noise, embeds, mask, jnp.float32(6.0), schedule=schedule,
                               image_to_video=False, cfg=True, progress=False).compile()
    row["denoise_compile_s"] = time.perf_counter() - start
    latents = None

    def run():
        nonlocal latents
        latents = loop(dit.params, jnp.array(noise, copy=True), embeds, mask, jnp.float32(6.0))[0]
        return latents

    row["denoise_s"] = timed(run, repeats)
    row["step_s"] = row["denoise_s"] / steps
    flops = cost(dit_forward(dit, shape, te_config.hidden_size))["flops"]
    peak = device_peak()
    row["mfu"] = flops / row["step_s"] / peak[1] if peak else None
    row["gflop_per_step"] = flops / 1e9

    start = time.perf_counter()
    jax.block_until_ready(pipe.decode(latents, decode_frames))
    row["decode_compile_s"] = time.perf_counter() - start
    row["decode_s"] = timed(lambda: pipe.decode(latents, decode_frames), repeats)
    stats = jax.devices()[0].memory_stats() or {}
    row["peak_gb"] = stats["peak_bytes_in_use"] / 1e9 if "peak_bytes_in_use" in stats else None
    row["total_s"] = row["text_s"] + row["denoise_s"] + row["decode_s"]
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cost-model", action="store_true", help="FLOPs and bytes of the full-size DiT forward only")
    p.add_argument("--resolutions", nargs="+", default=["480p"], choices=list(RESOLUTIONS))
    p.add_argument("--modes", nargs="+", default=["bf16"], choices=["bf16", "int8", "fp8"])
    p.add_argument("--frames", type=int, default=81)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--decode-frames", type=int, default=0, help="0: the whole clip in one program")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--tiny", action="store_true", help="toy widths, the published layouts (a dry run)")
    args = p.parse_args(argv)
    te_config, resolutions = tiny_resolutions() if args.tiny else (GEMMA2_2B, RESOLUTIONS)
    print(f"backend {jax.default_backend()} ({jax.devices()[0].device_kind}), jax {jax.__version__}; {args.frames} "
          f"frames" + (" (TINY dry run)" if args.tiny else ""), flush=True)
    if args.cost_model:
        return cost_model(resolutions, te_config, args.frames)
    rows = []
    for res in args.resolutions:
        for mode in args.modes:
            row = generation(resolutions[res], mode, te_config, args.frames, args.steps, args.decode_frames,
                             args.repeats)
            print(res, mode, {k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
            rows.append((res, mode, row))
    print(f"\n{args.steps} steps, CFG, decode_frames {args.decode_frames}; medians of {args.repeats}\n")
    print("| resolution | weights | prompt encoding s | denoising s (per step) | VAE decode s | total s | "
          "DiT MFU | peak memory GB | compile s (text / loop / decode) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for res, mode, r in rows:
        mfu = f"{r['mfu']:.0%}" if r["mfu"] is not None else "-"
        peak = f"{r['peak_gb']:.1f}" if r["peak_gb"] is not None else "-"
        print(f"| {res} | {mode} | {r['text_s']:.2f} | {r['denoise_s']:.1f} ({r['step_s']:.3f}) | {r['decode_s']:.2f} "
              f"| {r['total_s']:.1f} | {mfu} | {peak} | {r['text_compile_s']:.0f} / {r['denoise_compile_s']:.0f} / "
              f"{r['decode_compile_s']:.0f} |")


if __name__ == "__main__":
    main()
