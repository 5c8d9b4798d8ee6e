"""LTX-2 video VAE: this project's jitted JAX vs diffusers' PyTorch, and the memory of streaming decode.

    python benchmarks/ltx2_vae.py [--repeats 3] [--threads 2] [--parts speed,memory]

(a) speed: the published LTX-2 VAE config (1,222 M params, random weights): decode of latents 128x2x2x3
    (channels-first notation) -> video 3x9x64x96, and encode of that video back. Median seconds of ``--repeats``
    interleaved runs after one warm-up (the compile reported apart); ratio diffusers / ours (> 1: we are faster).
(b) memory: the published decoder at latents 2x2, whole clip vs ``decode_streaming`` (runs of 2 latent frames),
    for 31, 61 and 121 latent frames (241 / 481 / 961 video frames at 64x64): XLA's compiled memory analysis
    (temporaries besides the arguments and the output video), compiled only.
"""

from __future__ import annotations

import argparse
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

    from sana_jax import load_component
    from sana_jax.config import LTX2_VIDEO_VAE

    torch.manual_seed(0)
    kwargs = {k: v for k, v in LTX2_VIDEO_VAE.to_dict().items() if not k.startswith("_")}
    ref = AutoencoderKLLTX2Video(**kwargs).eval()
    with tempfile.TemporaryDirectory() as tmp:
        ref.save_pretrained(tmp)
        ours = load_component(tmp)
    z = np.random.default_rng(0).standard_normal((1, 128, 2, 2, 3), dtype=np.float32)
    tz = torch.from_numpy(z)
    jz = jnp.asarray(z.transpose(0, 2, 3, 4, 1))
    decode = jax.jit(lambda p, z: ours.module.apply({"params": p}, z, None, "whole", False, method="decode_chunk")[0])

    def ref_decode():
        with torch.inference_mode():
            return ref.decode(tz).sample

    start = time.perf_counter()
    video = decode(ours.params, jz).block_until_ready()
    compile_decode = time.perf_counter() - start
    expected = ref_decode().numpy().transpose(0, 2, 3, 4, 1)
    err_dec = float(np.linalg.norm(np.asarray(video) - expected) / np.linalg.norm(expected))

    x = np.clip(expected, -1, 1)
    tx = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 4, 1, 2, 3)))
    jx = jnp.asarray(x)

    def ref_encode():
        with torch.inference_mode():
            return ref.encode(tx).latent_dist.mode()

    start = time.perf_counter()
    latents = ours.encode(jx).block_until_ready()
    compile_encode = time.perf_counter() - start
    mu = ref_encode().numpy().transpose(0, 2, 3, 4, 1)
    err_enc = float(np.linalg.norm(np.asarray(latents) - mu) / np.linalg.norm(mu))

    t_dec_ours, t_dec_ref, t_enc_ours, t_enc_ref = interleaved_median_times(
        [lambda: decode(ours.params, jz).block_until_ready(), ref_decode,
         lambda: ours.encode(jx).block_until_ready(), ref_encode], repeats)
    print("| published LTX-2 VAE | diffusers s | sana-jax s | ratio | sana-jax first call s | rel err |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| decode z 128x2x2x3 -> 3x9x64x96 | {t_dec_ref:.3f} | {t_dec_ours:.3f} | **{t_dec_ref / t_dec_ours:.2f}x** "
          f"| {compile_decode:.1f} | {err_dec:.1e} |")
    print(f"| encode 3x9x64x96 -> 128x2x2x3 | {t_enc_ref:.3f} | {t_enc_ours:.3f} | **{t_enc_ref / t_enc_ours:.2f}x** "
          f"| {compile_encode:.1f} | {err_enc:.1e} |")
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
          f"{torch.get_num_threads()} threads; fp32; median of {args.repeats} after warm-up\n")
    parts = args.parts.split(",")
    if "speed" in parts:
        speed(args.repeats)
    if "memory" in parts:
        memory()


if __name__ == "__main__":
    main()
