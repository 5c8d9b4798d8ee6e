"""Pure-XLA linear attention: the reference every backend is checked against, and the CPU implementation."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sana_jax.nn.rope import apply_interleaved_rope


def _check(q, k, v, rope, chunk_size, initial_state):
    if q.ndim != 4 or k.shape != q.shape:
        raise ValueError(f"q and k must have the same shape (B, N, H, d); got q {q.shape}, k {k.shape}")
    if v.ndim != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"v must be (B, N, H, d_v) matching q's (B, N, H) = {q.shape[:3]}; got {v.shape}")
    b, n, h, d = q.shape
    if rope is not None:
        cos, sin = rope
        if cos.shape != (n, d) or sin.shape != (n, d):
            raise ValueError(f"rope tables must be (N, d) = {(n, d)}; got cos {cos.shape}, sin {sin.shape}")
        if d % 2:
            raise ValueError(f"RoPE needs an even head dim; got d = {d}")
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size <= 0):
        raise ValueError(f"chunk_size must be a positive int or None; got {chunk_size!r}")
    if initial_state is not None:
        s0, z0 = initial_state
        if s0.shape != (b, h, v.shape[-1], d) or z0.shape != (b, h, d):
            raise ValueError(f"initial_state must be (S {(b, h, v.shape[-1], d)}, z {(b, h, d)}); "
                             f"got S {s0.shape}, z {z0.shape}")


def linear_attention_xla(q, k, v, rope=None, *, chunk_size=None, initial_state=None, return_state=False,
                         eps=1e-15):
    """See `sana_jax.kernels.linear_attention`. Block-causal runs a `lax.scan` over runs of C tokens."""
    _check(q, k, v, rope, chunk_size, initial_state)
    b, n, h, d = q.shape
    dv = v.shape[-1]
    f32 = jnp.float32
    qf = jax.nn.relu(q).astype(f32)
    kf = jax.nn.relu(k).astype(f32)
    vf = v.astype(f32)
    if rope is not None:
        cos, sin = (t.astype(f32) for t in rope)
        qr, kr = apply_interleaved_rope(qf, cos, sin), apply_interleaved_rope(kf, cos, sin)
    else:
        qr, kr = qf, kf
    if initial_state is None:
        s0, z0 = jnp.zeros((b, h, dv, d), f32), jnp.zeros((b, h, d), f32)
    else:
        s0, z0 = (t.astype(f32) for t in initial_state)

    def block(state, xs):
        s, z = state
        qf_c, qr_c, kf_c, kr_c, v_c = xs
        s = s + jnp.einsum("bnhi,bnhj->bhij", v_c, kr_c)
        z = z + jnp.sum(kf_c, axis=1)
        num = jnp.einsum("bhij,bnhj->bnhi", s, qr_c)
        den = jnp.einsum("bnhj,bhj->bnh", qf_c, z) + eps
        return (s, z), num / den[..., None]

    if chunk_size is None or chunk_size >= n:
        (s, z), out = block((s0, z0), (qf, qr, kf, kr, vf))
    else:
        # Zero rows past N contribute nothing: ReLU(0) = 0 and a rotated zero is zero.
        c = chunk_size
        blocks = -(-n // c)
        pad = blocks * c - n

        def split(x):
            x = jnp.pad(x, ((0, 0), (0, pad), (0, 0), (0, 0)))
            return jnp.moveaxis(x.reshape(b, blocks, c, *x.shape[2:]), 1, 0)

        (s, z), out = jax.lax.scan(block, (s0, z0), tuple(split(x) for x in (qf, qr, kf, kr, vf)))
        out = jnp.moveaxis(out, 0, 1).reshape(b, blocks * c, h, dv)[:, :n]
    out = out.astype(q.dtype)
    return (out, (s, z)) if return_state else out
