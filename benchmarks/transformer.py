"""Linear DiT forward: this project's jitted JAX vs diffusers' eager PyTorch, same weights and inputs, one run.

    python benchmarks/transformer.py [--repeats 5] [--cases a,b] [--threads 2]

Prints median seconds per forward (after one warm-up / compile), the ratio diffusers / ours (> 1: we are faster)
and the compile time. Random weights; fp32; batch 1 (no CFG).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from _timing import median_time

CASES = {
    # name: (transformer config overrides, latent (C, F, H, W), text tokens)
    "a": (dict(num_attention_heads=8, attention_head_dim=64, num_layers=4, num_cross_attention_heads=8,
               cross_attention_head_dim=64, cross_attention_dim=512, caption_channels=256, mlp_ratio=3.0),
          (16, 8, 60, 104), 64),
    "b": (dict(num_attention_heads=20, attention_head_dim=112, num_layers=1, num_cross_attention_heads=20,
               cross_attention_head_dim=112, cross_attention_dim=2240, caption_channels=2304, mlp_ratio=3.0),
          (16, 8, 30, 52), 300),
}
DESCRIPTION = {
    "a": "4 layers, D 512 (8x64), latent 16x8x60x104",
    "b": "1 layer, D 2240 (20x112), latent 16x8x30x52",
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cases", default="a,b")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    from diffusers import SanaVideoTransformer3DModel

    from sana_jax import load_component

    torch.set_num_threads(args.threads)
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}; torch {torch.__version__} with "
          f"{torch.get_num_threads()} threads; median of {args.repeats} after warm-up\n")
    rows = []
    for name in args.cases.split(","):
        overrides, (c, f, h, w), text = CASES[name]
        torch.manual_seed(0)
        ref = SanaVideoTransformer3DModel(in_channels=c, out_channels=c, patch_size=(1, 2, 2), **overrides).eval()
        rng = np.random.default_rng(0)
        x = rng.standard_normal((1, c, f, h, w), dtype=np.float32)
        ctx = rng.standard_normal((1, text, overrides["caption_channels"]), dtype=np.float32)
        t = np.array([500.0], np.float32)
        with tempfile.TemporaryDirectory() as tmp:
            ref.save_pretrained(tmp)
            ours = load_component(tmp)

        tx, tctx, tt = torch.from_numpy(x), torch.from_numpy(ctx), torch.from_numpy(t)

        def run_ref():
            with torch.inference_mode():
                return ref(tx, tctx, tt).sample

        jx, jctx, jt = jnp.asarray(x.transpose(0, 2, 3, 4, 1)), jnp.asarray(ctx), jnp.asarray(t)
        start = time.perf_counter()
        out = ours(jx, jt, jctx).block_until_ready()
        compile_s = time.perf_counter() - start
        expected = run_ref().numpy().transpose(0, 2, 3, 4, 1)
        err = float(np.linalg.norm(np.asarray(out) - expected) / np.linalg.norm(expected))
        t_ref = median_time(run_ref, args.repeats)
        t_ours = median_time(lambda: ours(jx, jt, jctx).block_until_ready(), args.repeats)
        params = sum(p.numel() for p in ref.parameters())
        rows.append((name, DESCRIPTION[name], f * (h // 2) * (w // 2), params, t_ref, t_ours, compile_s, err))

    header = ("case", "shape", "tokens", "params", "diffusers s", "sana-jax s", "ratio", "compile s", "rel err")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for name, desc, tokens, params, t_ref, t_ours, compile_s, err in rows:
        print(f"| {name} | {desc} | {tokens:,} | {params / 1e6:.1f} M | {t_ref:.3f} | {t_ours:.3f} | "
              f"{t_ref / t_ours:.2f}x | {compile_s:.1f} | {err:.1e} |")


if __name__ == "__main__":
    main()
