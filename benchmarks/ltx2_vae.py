"""LTX-2 video VAE: this project's jitted JAX vs diffusers' PyTorch, and the memory of streaming decode.

    python benchmarks/ltx2_vae.py [--repeats 3] [--threads 2] [--parts speed,memory]

(a) speed: the published LTX-2 VAE config (1,222 M params, random weights): decode of latents 128x2x2x3
    (channels-first notation) -> video 3x9x64x96, as the pipeline's program (``sana_jax._compile``'s CPU options)
    and as the module under a plain jax.jit (XLA's defaults), and encode of that video back (``vae.encode``, which
    ``pipe.encode_video`` calls: at top level compiled with the same options). Run under the host-memory setting of
    sample.py (``sana_jax._host``), both sides. Median seconds of
    ``--repeats`` interleaved runs after one warm-up (the first call reported apart); ratio diffusers / ours (> 1: we
    are faster).
(b) memory: the published decoder at latents 2x2, whole clip vs ``decode_streaming`` (runs of 2 latent frames),
    for 31, 61 and 121 latent frames (241 / 481 / 961 video frames at 64x64): XLA's compiled memory analysis
    (temporaries besides the arguments and the output video), compiled only.
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
import time

from _timing import interleaved_median_times

MEMORY_FRAMES = (31, 61, 121)
MEMORY_SIZE = 2      # latent height = width
CHUNK = 2


def speed(repeats: int):
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    from diffusers import AutoencoderKLLTX2Video

    from sana_jax import _compile, load_component
    from sana_jax.config import LTX2_VIDEO_VAE
    from sana_jax.pipeline import sana_video

    torch.manual_seed(0)
    kwargs = {k: v for k, v in LTX2_VIDEO_VAE.to_dict().items() if not k.startswith("_")}
    ref = AutoencoderKLLTX2Video(**kwargs).eval()
    with tempfile.TemporaryDirectory() as tmp:
        ref.save_pretrained(tmp)
        ours = load_component(tmp)
    z = np.random.default_rng(0).standard_normal((1, 128, 2, 2, 3), dtype=np.float32)
    tz = torch.from_numpy(z)
    jz = jnp.asarray(z.transpose(0, 2, 3, 4, 1))
    # The pipeline's decode program (sana_jax.pipeline.sana_video: `_compile.jit`, XLA's own dot and conv kernels,
    # -O2) and the module under a plain jax.jit (XLA's defaults: what it runs as inside a caller's jit); the
    # component's encode (at top level compiled with the same options, `_compile.jit_anywhere`).
    pipeline_decode = _compile.jit(functools.partial(sana_video._decode, ours.module), vae=True,
                                   static_argnames="mode")
    decode = jax.jit(lambda p, z: ours.module.apply({"params": p}, z, None, "whole", False, method="decode_chunk")[0])

    def ref_decode():
        with torch.inference_mode():
            return ref.decode(tz).sample

    def ours_decode():
        return decode(ours.params, jz).block_until_ready()

    def pipe_decode():
        return pipeline_decode(ours.params, jz, None, mode="whole")[0].block_until_ready()

    expected = ref_decode().numpy().transpose(0, 2, 3, 4, 1)
    x = np.clip(expected, -1, 1)
    tx = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 4, 1, 2, 3)))
    jx = jnp.asarray(x)

    def ref_encode():
        with torch.inference_mode():
            return ref.encode(tx).latent_dist.mode()

    def ours_encode():
        return ours.encode(jx).block_until_ready()

    mu = ref_encode().numpy().transpose(0, 2, 3, 4, 1)
    # (name, label, ours, its diffusers counterpart, expected)
    rows = (("decode", "decode z 128x2x2x3 -> 3x9x64x96, the module under a plain `jax.jit` (XLA's defaults)",
             ours_decode, "ref decode", expected),
            ("pipeline decode", "decode, the pipeline's decode program (`_compile.jit`)", pipe_decode, "ref decode",
             expected),
            ("encode", "encode 3x9x64x96 -> 128x2x2x3, `vae.encode` (= `pipe.encode_video`)", ours_encode,
             "ref encode", mu))
    first, errors = {}, {}
    for name, _, fn, _, want in rows:
        start = time.perf_counter()
        got = np.asarray(fn())
        first[name] = time.perf_counter() - start
        errors[name] = float(np.linalg.norm(got - want) / np.linalg.norm(want))

    fns = {"ref decode": ref_decode, "decode": ours_decode, "pipeline decode": pipe_decode,
           "ref encode": ref_encode, "encode": ours_encode}
    times = dict(zip(fns, interleaved_median_times(list(fns.values()), repeats)))
    print("| published LTX-2 VAE | diffusers s | sana-jax s | ratio | sana-jax first call s | rel err |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, label, _, ref_name, _ in rows:
        ref_s = times[ref_name]
        bold = "" if name == "decode" else "**"
        print(f"| {label} | {ref_s:.3f} | {times[name]:.3f} | {bold}{ref_s / times[name]:.2f}x{bold} | "
              f"{first[name]:.1f} | {errors[name]:.1e} |")
    print()


def memory():
    import jax

    from sana_jax.components import REGISTRY
    from sana_jax.config import LTX2_VIDEO_VAE

    spec = REGISTRY["AutoencoderKLLTX2Video"]
    module = spec.build(LTX2_VIDEO_VAE)
    params = jax.eval_shape(lambda: module.init(jax.random.key(0), *spec.example_inputs(LTX2_VIDEO_VAE)))
    mb = lambda n: f"{n / 2**20:,.0f}"  # noqa: E731
    print(f"Published LTX-2 decoder, latents {MEMORY_SIZE}x{MEMORY_SIZE}, compiled only; streaming = runs of {CHUNK} "
          "latent frames:\n")
    print(f"| latent frames -> video frames ({MEMORY_SIZE * 32}x{MEMORY_SIZE * 32}) | decode | XLA temporaries MB | "
          "output MB | compile s |")
    print("|---|---|---:|---:|---:|")
    for frames in MEMORY_FRAMES:
        z = jax.ShapeDtypeStruct((1, frames, MEMORY_SIZE, MEMORY_SIZE, 128), jax.numpy.float32)
        for mode in ("whole", "streaming"):
            if mode == "whole":
                fn = jax.jit(lambda p, z: module.apply(p, z, method="decode"))
            else:
                fn = jax.jit(lambda p, z: module.apply(p, z, CHUNK, method="decode_streaming"))
            start = time.perf_counter()
            analysis = fn.lower(params, z).compile().memory_analysis()
            seconds = time.perf_counter() - start
            print(f"| {frames} -> {1 + 8 * (frames - 1)} | {mode} | {mb(analysis.temp_size_in_bytes)} | "
                  f"{mb(analysis.output_size_in_bytes)} | {seconds:.0f} |", flush=True)
    print()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--parts", default="speed,memory")
    args = parser.parse_args()

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
