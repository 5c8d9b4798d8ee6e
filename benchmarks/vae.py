"""Wan2.1 VAE decode: this project's jitted JAX vs diffusers' PyTorch, and the memory of streaming decode.

    python benchmarks/vae.py [--repeats 3] [--threads 2] [--parts speed,memory]

(a) speed: the published Wan2.1 config (126.9 M params, random weights), latents 16x3x16x16 (channels-first
    notation; (1, 3, 16, 16, 16) channels-last) -> video (1, 9, 128, 128, 3). Median seconds of ``--repeats`` runs
    after one warm-up (and the compile, reported apart); ratio diffusers / ours (> 1: we are faster).
(b) memory: the tiny test config (base_dim 3) decoding 21, 81 and 241 latent frames at 16x16 (video 128x128),
    whole clip vs ``decode_streaming(chunk_size=1)``. Two measures per case: XLA's compiled memory analysis
    (temporaries, besides the arguments and the output video itself) and the peak RSS of a fresh subprocess that
    compiles and runs the case (includes ~0.3 GB of python + jax import and the output video). Then the published
    Wan2.1 config at latents 8x8, compiled and analysed only (running it takes minutes per case here).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from _timing import median_time

TINY = dict(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True])
MEMORY_FRAMES = (21, 81, 241)
MEMORY_SIZE = 16  # latent height = width
WAN21_MEMORY_SIZE = 8  # the published config: compiled and analysed, not run (minutes per case on 2 cores)


def speed(repeats: int):
    import jax.numpy as jnp
    import numpy as np
    import torch
    from diffusers import AutoencoderKLWan

    from sana_jax import load_component

    torch.manual_seed(0)
    ref = AutoencoderKLWan().eval()
    with tempfile.TemporaryDirectory() as tmp:
        ref.save_pretrained(tmp)
        ours = load_component(tmp)
    z = np.random.default_rng(0).standard_normal((1, 16, 3, 16, 16), dtype=np.float32)
    mean = np.asarray(ref.config.latents_mean, np.float32).reshape(1, -1, 1, 1, 1)
    std = np.asarray(ref.config.latents_std, np.float32).reshape(1, -1, 1, 1, 1)
    tz = torch.from_numpy(z * std + mean)
    jz = jnp.asarray(z.transpose(0, 2, 3, 4, 1))

    def run_ref():
        with torch.inference_mode():
            return ref.decode(tz).sample

    start = time.perf_counter()
    out = ours.decode(jz).block_until_ready()
    compile_s = time.perf_counter() - start
    expected = run_ref().numpy().transpose(0, 2, 3, 4, 1)
    err = float(np.linalg.norm(np.asarray(out) - expected) / np.linalg.norm(expected))
    # The pipeline's decode program, compiled with sana_jax._compile's options (the component's `decode` at top level
    # compiles with the same options since 2026-12-07, `_compile.jit_anywhere`).
    from sana_jax import _compile

    pipeline_decode = _compile.jit(lambda p, z: ours.module.apply({"params": p}, z, method="decode"), vae=True)
    np.testing.assert_allclose(np.asarray(pipeline_decode(ours.params, jz)), np.asarray(out), atol=1e-4)
    # Interleaved, so that a noisy machine slows all sides alike.
    t_ours, t_pipe, t_ref = [], [], []
    for _ in range(repeats):
        t_ours.append(median_time(lambda: ours.decode(jz).block_until_ready(), 1))
        t_pipe.append(median_time(lambda: pipeline_decode(ours.params, jz).block_until_ready(), 1))
        t_ref.append(median_time(run_ref, 1))
    t_ours, t_pipe, t_ref = (statistics.median(t) for t in (t_ours, t_pipe, t_ref))
    print("| decode, Wan2.1 config, z 16x3x16x16 -> 3x9x128x128 | seconds | diffusers / it |")
    print("|---|---:|---:|")
    print(f"| diffusers (eager, torch {torch.__version__}, {torch.get_num_threads()} threads) | {t_ref:.3f} | |")
    print(f"| sana-jax, `vae.decode` (the component's method) | {t_ours:.3f} | {t_ref / t_ours:.2f}x |")
    print(f"| sana-jax, the pipeline's decode (`_compile.jit(vae=True)`: no YNNPACK, -O2) | {t_pipe:.3f} | "
          f"**{t_ref / t_pipe:.2f}x** |")
    print(f"| sana-jax first call (compile + run) | {compile_s:.1f} |")
    print(f"\nrelative error vs diffusers on this input: {err:.1e}\n")


def _memory_case(mode: str, frames: int, config_name: str = "tiny") -> dict:
    """Runs in a fresh subprocess: compiles (and for the tiny config runs) one case; XLA's analysis, peak RSS."""
    import jax

    from sana_jax.components import REGISTRY
    from sana_jax.config import AutoencoderKLWanConfig

    spec = REGISTRY["AutoencoderKLWan"]
    config = AutoencoderKLWanConfig.from_dict(TINY) if config_name == "tiny" else AutoencoderKLWanConfig()
    size = MEMORY_SIZE if config_name == "tiny" else WAN21_MEMORY_SIZE
    module = spec.build(config)
    params = module.init(jax.random.key(0), *spec.example_inputs(config))
    z = jax.random.normal(jax.random.key(1), (1, frames, size, size, config.z_dim))
    if mode == "whole":
        fn = jax.jit(lambda p, z: module.apply(p, z, method="decode"))
    else:
        fn = jax.jit(lambda p, z: module.apply(p, z, 1, method="decode_streaming"))
    compiled = fn.lower(params, z).compile()
    analysis = compiled.memory_analysis()
    if config_name != "tiny":
        return dict(temp=analysis.temp_size_in_bytes, output=analysis.output_size_in_bytes)
    start = time.perf_counter()
    out = compiled(params, z).block_until_ready()
    seconds = time.perf_counter() - start
    return dict(temp=analysis.temp_size_in_bytes, output=analysis.output_size_in_bytes, seconds=seconds,
                frames_out=out.shape[1], rss=_peak_rss())


def _peak_rss() -> int:
    """This process's peak RSS in bytes: VmHWM, which (unlike ru_maxrss) does not inherit the parent's peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def memory():
    rows = []
    for frames in MEMORY_FRAMES:
        for mode in ("whole", "streaming"):
            proc = subprocess.run([sys.executable, __file__, "--memory-case", f"{mode}:{frames}"],
                                  capture_output=True, text=True, check=True)
            rows.append((frames, mode, json.loads(proc.stdout.strip().splitlines()[-1])))
    def mb(n):
        return f"{n / 2**20:,.0f}"

    print(f"Tiny config (base_dim 3), latents {MEMORY_SIZE}x{MEMORY_SIZE}:\n")
    print(f"| latent frames -> video frames ({MEMORY_SIZE * 8}x{MEMORY_SIZE * 8}) | decode | XLA temporaries MB | "
          "output MB | peak RSS MB (fresh process) | run s |")
    print("|---|---|---:|---:|---:|---:|")
    for frames, mode, r in rows:
        print(f"| {frames} -> {r['frames_out']} | {mode} | {mb(r['temp'])} | {mb(r['output'])} | {mb(r['rss'])} | "
              f"{r['seconds']:.2f} |")
    print(f"\nPublished Wan2.1 config (base_dim 96), latents {WAN21_MEMORY_SIZE}x{WAN21_MEMORY_SIZE}, compiled only:\n")
    print(f"| latent frames -> video frames ({WAN21_MEMORY_SIZE * 8}x{WAN21_MEMORY_SIZE * 8}) | decode | "
          "XLA temporaries MB | output MB |")
    print("|---|---|---:|---:|")
    for frames in MEMORY_FRAMES:
        for mode in ("whole", "streaming"):
            proc = subprocess.run([sys.executable, __file__, "--memory-case", f"{mode}:{frames}:wan21"],
                                  capture_output=True, text=True, check=True)
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"| {frames} -> {1 + 4 * (frames - 1)} | {mode} | {mb(r['temp'])} | {mb(r['output'])} |")
    print()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--parts", default="speed,memory")
    parser.add_argument("--memory-case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_case:
        mode, frames, *config_name = args.memory_case.split(":")
        print(json.dumps(_memory_case(mode, int(frames), *config_name)))
        return

    import jax
    import torch

    torch.set_num_threads(args.threads)
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}; torch {torch.__version__} with "
          f"{torch.get_num_threads()} threads; fp32; median of {args.repeats} after warm-up; "
          f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')!r}\n")
    parts = args.parts.split(",")
    if "speed" in parts:
        speed(args.repeats)
    if "memory" in parts:
        memory()


if __name__ == "__main__":
    from sana_jax._host import reexec_with_tuned_malloc

    reexec_with_tuned_malloc()  # as sample.py runs: both sides under the same malloc setting
    main()
