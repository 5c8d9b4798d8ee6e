"""Where a cold 60-second stream of the demo model spends its time: load, prompt, the compilation of each of the
stream's three programs (and of the DiT step as it was before caption padding was dropped) under XLA's default
options and under this project's (``sana_jax/_compile.py``), and the per-block run of the DiT step and the windowed
VAE decode, one after the other and side by side.

    python benchmarks/stream_cold_start.py [--model sana_jax/shapes/model] [--blocks 60]

Prints markdown tables. Each compilation is done afresh (a new ``jax.jit``), so none reuses another's.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from sana_jax import SanaVideoPipeline, _compile
from sana_jax.models.transformer import init_cache
from sana_jax.pipeline import prompts as prompt_lib
from sana_jax.pipeline.stream import _decode_run, block_sizes
from sana_jax.shapes import DEMO_MODEL


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=DEMO_MODEL)
    parser.add_argument("--blocks", type=int, default=60, help="later blocks run (60: a minute at 8 fps)")
    parser.add_argument("--decode-window", type=int, default=2)
    args = parser.parse_args()

    pipe, t_load = _timed(lambda: SanaVideoPipeline.from_pretrained(args.model))
    prompt = "a red circle moving left"
    (full_embeds, full_mask), t_prompt = _timed(lambda: jax.block_until_ready(pipe.encode_prompt([prompt])))
    embeds, mask = prompt_lib.drop_padding(full_embeds, full_mask)   # what pipe.stream passes the DiT
    shape = pipe.latent_shape(1, 32, 32, 17)
    b, _, h, w, c = shape
    first, later = block_sizes(shape[1], 2)[:2]
    tconfig = pipe.transformer.config
    ph, pw = tconfig.patch[1:]
    cache = init_cache(tconfig, b, h // ph, w // pw, pipe.transformer.module.dtype)
    key = jax.random.key(0)
    streamer = pipe._streamer
    window = 1 + args.decode_window + later

    def step_args(index, offset, size, cache, text=(embeds, mask)):
        return ((pipe.transformer.params, jax.random.fold_in(key, index), cache, *text, jnp.int32(offset),
                 jnp.float32(1.0), None), dict(shape=(b, size, h, w, c), schedule=None, cfg=False, pin=False))

    def programs(options, vae_options):
        step = jax.jit(streamer._block, static_argnames=("shape", "schedule", "cfg", "pin"),
                       compiler_options=options)
        decode = jax.jit(functools.partial(_decode_run, pipe.vae.module), static_argnames=("mode",),
                         compiler_options=vae_options)
        windows = jax.ShapeDtypeStruct((b, window, h, w, c), jnp.float32)
        lower_step = lambda args, static: step.lower(*args, **static)  # noqa: E731
        return {
            "DiT step, first block": lambda: lower_step(*step_args(0, 0, first, cache)),
            "DiT step, later blocks": lambda: lower_step(*step_args(1, first, later, cache)),
            "DiT step, later blocks, all 300 caption positions":
                lambda: lower_step(*step_args(1, first, later, cache, (full_embeds, full_mask))),
            "VAE decode, windowed": lambda: decode.lower(pipe.vae.params, windows, None, mode="whole"),
        }

    rows, compiled = [], {}
    for label, options in (("XLA default", (None, None)),
                           ("sana_jax._compile", (_compile.compiler_options(), _compile.compiler_options(vae=True)))):
        for name, lower in programs(*options).items():
            lowered, t_trace = _timed(lower)
            compiled[label, name], t_compile = _timed(lowered.compile)
            rows.append((name, label, t_trace, t_compile))
    print(f"load {t_load:.2f} s, prompt {t_prompt:.2f} s (its compilation included); the DiT sees {embeds.shape[1]} "
          f"of {full_embeds.shape[1]} caption positions\n")
    print("| program | options | trace + lower (s) | compile (s) |\n|---|---|---|---|")
    for name, label, t_trace, t_compile in rows:
        print(f"| {name} | {label} | {t_trace:.2f} | {t_compile:.2f} |")

    label = "sana_jax._compile"
    step0, decode = compiled[label, "DiT step, first block"], compiled[label, "VAE decode, windowed"]
    x, cache1 = step0(*step_args(0, 0, first, cache)[0])
    history = np.asarray(jnp.concatenate([x[:, :1], x[:, x.shape[1] - args.decode_window:]], axis=1))

    def blocks(step, text, side_by_side: bool):
        state, pending, step_times, decode_times = cache1, None, [], []
        start = time.perf_counter()
        for i in range(args.blocks):
            t = time.perf_counter()
            x, state = step(*step_args(i + 1, first + 2 * i, later, state, text)[0])
            if not side_by_side:
                jax.block_until_ready(x)
                step_times.append(time.perf_counter() - t)
            if pending is not None:
                jax.block_until_ready(pending)
            t = time.perf_counter()
            pending, _, _ = decode(pipe.vae.params, np.concatenate([history, np.asarray(x)], axis=1), None)
            if not side_by_side:
                jax.block_until_ready(pending)
                decode_times.append(time.perf_counter() - t)
        jax.block_until_ready(pending)
        return time.perf_counter() - start, step_times, decode_times

    print(f"\n| {args.blocks} later blocks | seconds | per block (ms) |\n|---|---|---|")
    runs = {}
    for text, name in (((full_embeds, full_mask), "DiT step, all 300 caption positions (before)"),
                       ((embeds, mask), "DiT step (4 steps + state write)")):
        step = compiled[label, "DiT step, later blocks" + ("" if text[0] is embeds else
                                                           ", all 300 caption positions")]
        blocks(step, text, False)  # warm-up
        runs[name] = blocks(step, text, False)
        step_times = runs[name][1]
        print(f"| {name} | {sum(step_times):.2f} | {1e3 * statistics.median(step_times):.1f} |")
    serial, _, decode_times = runs["DiT step (4 steps + state write)"]
    print(f"| windowed VAE decode ({window} latent frames) | {sum(decode_times):.2f} | "
          f"{1e3 * statistics.median(decode_times):.1f} |")
    overlapped, _, _ = blocks(compiled[label, "DiT step, later blocks"], (embeds, mask), True)
    print(f"| one after the other | {serial:.2f} | {1e3 * serial / args.blocks:.1f} |")
    print(f"| side by side (the next step dispatched first) | {overlapped:.2f} | "
          f"{1e3 * overlapped / args.blocks:.1f} |")


if __name__ == "__main__":
    main()
