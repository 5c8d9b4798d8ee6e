"""The linear-attention op alone: each implementation's time, achieved bandwidth and FLOP/s, and roofline fraction.

    python benchmarks/linear_attention.py [--shapes published|small] [--repeats 10] [--implementations xla,pallas]
                                          [--backward] [--sweep] [--check]

Published shapes: 20 heads x 112; N = 32,760 (480p: 21 latent frames x 30 x 52 tokens) and N = 9,680 (720p with
the LTX-2 VAE, patch 1: 11 latent frames x 22 x 40 tokens); batch 1, bf16 in and out, fp32 sums; bidirectional and
block-causal with runs of 3 latent frames. The op is memory-bound at the bytes it must move (arithmetic intensity
~ d / 2 FLOP/byte), so the roofline here is bytes: the minimum traffic (read q, k, v and the RoPE tables once,
write the output once) over the copy bandwidth measured in the same run (an XLA device-to-device copy of a buffer
of the same size). "of roofline" = ideal time / measured. With --backward the forward+backward (a VJP of all of
q, k, v) is timed too; its minimum traffic counts q, k, v, dOut read and dq, dk, dv written.

Implementations: "xla", "pallas" (the backend's kernel: Triton on GPU with TF32 products, Mosaic on TPU) and, on
GPU, "pallas-bf16" (bf16 products) and "pallas-fp32" (exact fp32 FMAs). On CPU the Pallas kernels only run in
interpret mode (meaningless as a time): they are skipped unless asked for, with --shapes small.
--sweep (GPU) times the Triton forward over tile rows x warps x operand precision at the 480p shape; with
--backward, forward+backward over the gradient kernels' tile rows x warps at 480p and 720p, against XLA.
--check (GPU) compares the compiled kernels' output, final state and VJPs with the XLA op run on the CPU at fp32
"highest" precision, on an odd shape (N not a multiple of the tile, runs not dividing N, d_v != d, initial state).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

SHAPES = {
    # name: (batch, tokens, heads, head dim, block-causal run in tokens)
    "published": [("480p", 1, 32_760, 20, 112, 3 * 30 * 52), ("720p", 1, 9_680, 20, 112, 3 * 22 * 40)],
    "small": [("small", 1, 2_048, 4, 64, 256)],
}


def device_time(fn, args, repeats, inner=10):
    """Median over ``repeats`` of (``inner`` back-to-back calls, one sync) / inner: dispatch overlaps the device."""
    import jax

    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            out = fn(*args)
        jax.block_until_ready(out)
        times.append((time.perf_counter() - start) / inner)
    return statistics.median(times)


def variants(names, backend):
    from sana_jax.kernels.linear_attention import linear_attention
    from sana_jax.kernels.linear_attention.pallas_triton import linear_attention_pallas_gpu

    made = {}
    for name in names:
        if name in ("xla", "pallas"):
            made[name] = functools.partial(linear_attention, implementation=name)
        elif name.startswith("pallas-") and backend == "gpu":
            made[name] = functools.partial(linear_attention_pallas_gpu, matmul=name.split("-", 1)[1])
        else:
            raise SystemExit(f"--implementations: unknown or unavailable here: {name!r}")
    return made


def inputs(b, n, h, d, dtype, seed=0, dv=None):
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(seed)
    q, k = (jnp.asarray(rng.normal(size=(b, n, h, d)), dtype) for _ in range(2))
    v = jnp.asarray(rng.normal(size=(b, n, h, dv or d)), dtype)
    theta = rng.uniform(0, 3, size=(n, d // 2)).repeat(2, axis=1)
    return q, k, v, (jnp.asarray(np.cos(theta), jnp.float32), jnp.asarray(np.sin(theta), jnp.float32))


def table(header, rows):
    print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(x) for x in row) + " |")


def timing(args, backend):
    import jax
    import jax.numpy as jnp

    impls = (args.implementations or ("xla" if backend == "cpu" else
                                      "xla,pallas,pallas-bf16" if backend == "gpu" else "xla,pallas")).split(",")
    fns = variants(impls, backend)
    rows = []
    for name, b, n, h, d, run in SHAPES[args.shapes]:
        q, k, v, rope = inputs(b, n, h, d, jnp.bfloat16)
        moved = 4 * q.nbytes + 2 * rope[0].nbytes                     # q, k, v, out and the two tables
        moved_bwd = 7 * q.nbytes + 2 * rope[0].nbytes                 # q, k, v, dOut in; dq, dk, dv out
        flops = 4.0 * b * n * h * d * d + 8.0 * b * n * h * d          # state + output matmuls, ReLU/RoPE/denominator
        buf = jnp.zeros((moved // 2,), jnp.bfloat16)
        copy = jax.jit(lambda x: x + 1)                                # reads and writes the buffer once each
        bandwidth = 2 * buf.nbytes / device_time(copy, (buf,), args.repeats)
        for mode, chunk in (("bidirectional", None), (f"block-causal C={run}", run)):
            for impl, op in fns.items():
                fwd = jax.jit(lambda q, k, v, rope, op=op, chunk=chunk: op(q, k, v, rope, chunk_size=chunk))
                t = device_time(fwd, (q, k, v, rope), args.repeats)
                rows.append((name, mode, impl, "forward", f"{t * 1e3:.3f}", f"{moved / t / 1e9:.0f}",
                             f"{flops / t / 1e12:.2f}", f"{moved / bandwidth / t:.0%}"))
                if args.backward:
                    def loss(q, k, v, rope, op=op, chunk=chunk):
                        return jnp.sum(op(q, k, v, rope, chunk_size=chunk).astype(jnp.float32))

                    bwd = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
                    t = device_time(bwd, (q, k, v, rope), args.repeats)
                    rows.append((name, mode, impl, "fwd+bwd", f"{t * 1e3:.3f}", f"{moved_bwd / t / 1e9:.0f}",
                                 f"{3 * flops / t / 1e12:.2f}", f"{moved_bwd / bandwidth / t:.0%}"))
        print(f"{name}: B {b}, N {n:,}, {h} heads x {d}: minimum traffic {moved / 1e6:.1f} MB forward, "
              f"{moved_bwd / 1e6:.1f} MB fwd+bwd; {flops / 1e9:.2f} GFLOP forward; copy bandwidth "
              f"{bandwidth / 1e9:.0f} GB/s")
    table(("shape", "mode", "implementation", "pass", "median ms", "GB/s", "TFLOP/s", "of roofline"), rows)


def sweep(args):
    """Forward over tile x warps x products at 480p; with --backward, forward+backward over the gradient kernels'
    tile x warps (forward at its defaults) at 480p and 720p, with the XLA op's times as the baseline."""
    import jax
    import jax.numpy as jnp

    from sana_jax.kernels.linear_attention import linear_attention
    from sana_jax.kernels.linear_attention.pallas_triton import linear_attention_pallas_gpu

    def timed(fn, q, k, v, rope):
        try:
            return f"{device_time(fn, (q, k, v, rope), args.repeats) * 1e3:.3f}"
        except Exception as e:  # noqa: BLE001  (a configuration Triton rejects is a result)
            return f"failed: {type(e).__name__}: {str(e)[:80]}"

    def fwd_bwd(op):
        return jax.jit(jax.grad(lambda q, k, v, rope: jnp.sum(op(q, k, v, rope).astype(jnp.float32)), (0, 1, 2)))

    rows = []
    shapes = SHAPES["published"] if args.backward else SHAPES["published"][:1]
    for name, b, n, h, d, run in shapes:
        q, k, v, rope = inputs(b, n, h, d, jnp.bfloat16)
        for chunk in (None, run):
            mode = "bidirectional" if chunk is None else f"C={chunk}"
            if args.backward:
                xla = functools.partial(linear_attention, chunk_size=chunk, implementation="xla")
                rows.append((name, mode, "xla", "", "", "", "fwd+bwd", timed(fwd_bwd(xla), q, k, v, rope)))
                for tile in (32, 64, 128):
                    for warps in (4, 8):
                        op = functools.partial(linear_attention_pallas_gpu, chunk_size=chunk, backward_tile=tile,
                                               backward_num_warps=warps)
                        rows.append((name, mode, "pallas", tile, warps, "tf32", "fwd+bwd",
                                     timed(fwd_bwd(op), q, k, v, rope)))
                        print(*rows[-1], sep=" | ", flush=True)
                continue
            for tile in (32, 64, 128):
                for warps in (4, 8):
                    for matmul in ("tf32", "bf16"):
                        fwd = jax.jit(functools.partial(linear_attention_pallas_gpu, chunk_size=chunk, tile=tile,
                                                        num_warps=warps, matmul=matmul))
                        rows.append((name, mode, "pallas", tile, warps, matmul, "forward", timed(fwd, q, k, v, rope)))
    table(("shape", "mode", "implementation", "tile", "warps", "products", "pass", "ms"), rows)


def check(args, backend):
    import jax
    import jax.numpy as jnp
    import numpy as np

    from sana_jax.kernels.linear_attention import linear_attention_xla

    cpu = jax.devices("cpu")[0]
    b, n, h, d, dv = 2, 5_003, 3, 112, 96
    q, k, v, rope = inputs(b, n, h, d, jnp.float32, seed=1, dv=dv)
    rng = np.random.default_rng(2)
    s0 = jnp.asarray(rng.uniform(size=(b, h, dv, d)), jnp.float32)
    z0 = jnp.asarray(rng.uniform(size=(b, h, d)), jnp.float32)
    cot = [jnp.asarray(rng.normal(size=shape), jnp.float32) for shape in ((b, n, h, dv), (b, h, dv, d), (b, h, d))]

    def run(op, chunk, *xs):
        def f(q, k, v, s0, z0):
            out, (s, z) = op(q, k, v, rope_, chunk_size=chunk, initial_state=(s0, z0), return_state=True)
            return out, s, z

        rope_ = xs[5]
        outs, vjp = jax.vjp(f, *xs[:5])
        return outs, vjp(tuple(xs[6]))

    def rel(a, ref):
        a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
        return float(np.linalg.norm(a - ref) / np.linalg.norm(ref))

    names = ("out", "S", "z", "dq", "dk", "dv", "dS0", "dz0")
    rows, worst = [], {}
    for chunk in (None, 1_500):
        with jax.default_matmul_precision("highest"):
            ref_args = jax.device_put((q, k, v, s0, z0, rope, cot), cpu)
            ref_outs, ref_grads = jax.jit(functools.partial(run, linear_attention_xla, chunk))(*ref_args)
        for impl, op in variants(args.implementations.split(",") if args.implementations else
                                 (["xla", "pallas", "pallas-fp32", "pallas-bf16"] if backend == "gpu"
                                  else ["xla", "pallas"]), backend).items():
            outs, grads = jax.jit(functools.partial(run, op, chunk))(q, k, v, s0, z0, rope, cot)
            errs = [rel(a, r) for a, r in zip((*outs, *grads), (*ref_outs, *ref_grads))]
            worst[impl] = max(worst.get(impl, 0.0), *errs)
            rows.append(("bidirectional" if chunk is None else f"C={chunk}", impl, *(f"{e:.1e}" for e in errs)))
    print(f"B {b}, N {n:,}, {h} heads, d {d}, d_v {dv}, RoPE, initial state; fp32 inputs; relative L2 error "
          "against the XLA op on CPU at 'highest' precision")
    table(("mode", "implementation", *names), rows)
    print("\nworst per implementation: " + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", choices=sorted(SHAPES), default="published")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--implementations", default=None, help="comma list; default: xla, plus pallas off CPU")
    parser.add_argument("--backward", action="store_true", help="also time forward + backward")
    parser.add_argument("--sweep", action="store_true", help="GPU: Triton forward over tile x warps x precision")
    parser.add_argument("--check", action="store_true", help="correctness of each implementation, then exit")
    args = parser.parse_args()

    import jax

    backend = jax.default_backend()
    print(f"jax {jax.__version__} on {backend} ({jax.devices()[0].device_kind}); bf16 inputs, fp32 sums; "
          f"median of {args.repeats} after warm-up")
    if args.check:
        check(args, backend)
    elif args.sweep:
        sweep(args)
    else:
        timing(args, backend)


if __name__ == "__main__":
    main()
