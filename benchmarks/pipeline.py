"""Text-to-video sampling end to end: this project's pipeline vs diffusers' SanaVideoPipeline, same folder, steps,
guidance and initial noise, in one run.

    python benchmarks/pipeline.py [--repeats 3]

Cases: "tiny" (the test fixture: 32x32, 9 frames) and "small" (a 4-layer D-256 transformer, 128x128, 17 frames);
both random weights, fp32, CFG 6 with the default instruction, 10 steps. Prints the median seconds of a whole
call (prompt encoding, denoising, VAE decode) after a warm-up call, the ratio diffusers / ours (> 1: ours is
faster), and our first call (compile + run) separately.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from _timing import median_time


def build(kind: str, folder: str):
    from sana_jax.testing.pipelines import build_tiny_pipeline

    pipe = build_tiny_pipeline(folder)
    if kind == "tiny":
        return dict(height=32, width=32, frames=9)
    from diffusers import SanaVideoTransformer3DModel

    transformer = SanaVideoTransformer3DModel(
        in_channels=16, out_channels=16, num_attention_heads=4, attention_head_dim=64, num_layers=4,
        num_cross_attention_heads=4, cross_attention_head_dim=64, cross_attention_dim=256, caption_channels=32,
        mlp_ratio=3.0, patch_size=(1, 2, 2), rope_max_seq_len=1024)
    import shutil

    shutil.rmtree(os.path.join(folder, "transformer"))
    transformer.save_pretrained(os.path.join(folder, "transformer"))
    del pipe
    return dict(height=128, width=128, frames=17)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()

    import jax
    import numpy as np
    import torch
    from diffusers import SanaVideoPipeline as TorchPipeline

    from sana_jax.pipeline import SanaVideoPipeline

    print(f"jax {jax.__version__} ({jax.devices()[0].device_kind}), torch {torch.__version__} "
          f"({torch.get_num_threads()} threads); {args.steps} steps, CFG 6, median of {args.repeats}\n")
    rows = []
    for kind in ("tiny", "small"):
        with tempfile.TemporaryDirectory() as folder:
            size = build(kind, folder)
            ref = TorchPipeline.from_pretrained(folder)
            ours = SanaVideoPipeline.from_pretrained(folder)
        c, f = 16, (size["frames"] - 1) // 4 + 1
        noise = torch.randn(1, c, f, size["height"] // 8, size["width"] // 8,
                            generator=torch.Generator().manual_seed(0))
        kw = dict(num_inference_steps=args.steps, guidance_scale=6.0, **size)

        def run_ref():
            with torch.no_grad():
                return ref("a red circle moving left", latents=noise.clone(), output_type="np",
                           use_resolution_binning=False, **kw).frames

        def run_ours():
            return ours("a red circle moving left", latents=noise.numpy().transpose(0, 2, 3, 4, 1), **kw)

        start = time.perf_counter()
        video = run_ours()
        first = time.perf_counter() - start
        expected = np.round(np.clip(run_ref(), 0, 1) * 255)
        diff = int(np.abs(video.astype(np.int16) - expected).max())
        t_ref, t_ours = median_time(run_ref, args.repeats), median_time(run_ours, args.repeats)
        rows.append((kind, f"{size['frames']}x{size['height']}x{size['width']}", t_ref, t_ours, first, diff))

    print("| case | video | diffusers s | sana-jax s | ratio | sana-jax first call s | max uint8 diff |")
    print("|---|---|---|---|---|---|---|")
    for kind, video, t_ref, t_ours, first, diff in rows:
        print(f"| {kind} | {video} | {t_ref:.3f} | {t_ours:.3f} | {t_ref / t_ours:.2f}x | {first:.1f} | {diff} |")


if __name__ == "__main__":
    main()
