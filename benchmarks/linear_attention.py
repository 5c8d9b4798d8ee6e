"""The linear-attention op alone: each implementation's time, achieved bandwidth and FLOP/s, and roofline fraction.

    python benchmarks/linear_attention.py [--shapes published|small] [--repeats 10] [--implementations xla,pallas]

Published shapes: 20 heads x 112; N = 32,760 (480p: 21 latent frames x 30 x 52 tokens) and N = 9,680 (720p with
the LTX-2 VAE, patch 1: 11 latent frames x 22 x 40 tokens); batch 1, bf16 in and out, fp32 sums; bidirectional and
block-causal with runs of 3 latent frames. The op is memory-bound (arithmetic intensity ~ d / 2 FLOP/byte), so the roofline here is bytes: the
minimum traffic (read q, k, v and the RoPE tables once, write the output once) over the copy bandwidth measured in
the same run (an XLA device-to-device copy of a buffer of the same size). "of roofline" = ideal time / measured.
On CPU the Pallas kernel runs only in interpret mode (meaningless as a time): it is skipped unless asked for, with
--shapes small.
"""

from __future__ import annotations

import argparse

from _timing import median_time

SHAPES = {
    # name: (batch, tokens, heads, head dim, block-causal run in tokens)
    "published": [("480p", 1, 32_760, 20, 112, 3 * 30 * 52), ("720p", 1, 9_680, 20, 112, 3 * 22 * 40)],
    "small": [("small", 1, 2_048, 4, 64, 256)],
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", choices=sorted(SHAPES), default="published")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--implementations", default=None, help="comma list; default: xla, plus pallas off CPU")
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np

    from sana_jax.kernels.linear_attention import linear_attention

    backend = jax.default_backend()
    impls = (args.implementations or ("xla" if backend == "cpu" else "xla,pallas")).split(",")
    print(f"jax {jax.__version__} on {backend} ({jax.devices()[0].device_kind}); bf16 inputs, fp32 sums; "
          f"median of {args.repeats} after warm-up\n")
    rows = []
    for name, b, n, h, d, run in SHAPES[args.shapes]:
        rng = np.random.default_rng(0)
        q, k, v = (jnp.asarray(rng.normal(size=(b, n, h, d)), jnp.bfloat16) for _ in range(3))
        theta = rng.uniform(0, 3, size=(n, d // 2)).repeat(2, axis=1)
        rope = (jnp.asarray(np.cos(theta), jnp.float32), jnp.asarray(np.sin(theta), jnp.float32))
        moved = 4 * q.nbytes + 2 * rope[0].nbytes                     # q, k, v, out and the two tables
        flops = 4.0 * b * n * h * d * d + 8.0 * b * n * h * d          # state + output matmuls, ReLU/RoPE/denominator
        buf = jnp.zeros((moved // 2,), jnp.bfloat16)
        copy = jax.jit(lambda x: x + 1)                                # reads and writes the buffer once each
        copy(buf).block_until_ready()
        t_copy = median_time(lambda: copy(buf).block_until_ready(), args.repeats)
        bandwidth = 2 * buf.nbytes / t_copy
        for mode, chunk in (("bidirectional", None), (f"block-causal C={run}", run)):
            for impl in impls:
                fn = jax.jit(lambda q, k, v, rope, impl=impl, chunk=chunk: linear_attention(
                    q, k, v, rope, chunk_size=chunk, implementation=impl))
                fn(q, k, v, rope).block_until_ready()
                t = median_time(lambda: fn(q, k, v, rope).block_until_ready(), args.repeats)
                rows.append((name, mode, impl, f"{t * 1e3:.2f}", f"{moved / t / 1e9:.1f}", f"{flops / t / 1e12:.3f}",
                             f"{moved / bandwidth / t:.0%}"))
        print(f"{name}: B {b}, N {n:,}, {h} heads x {d}: minimum traffic {moved / 1e6:.1f} MB, "
              f"{flops / 1e9:.2f} GFLOP; copy bandwidth {bandwidth / 1e9:.1f} GB/s")
    header = ("shape", "mode", "implementation", "median ms", "GB/s", "TFLOP/s", "of roofline")
    print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
