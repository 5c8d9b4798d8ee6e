"""Float64 NumPy references for linear attention, written token by token from the definition, and the check every
kernel (Pallas TPU, Pallas Triton) runs against them and the XLA op: output, final state and VJPs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from sana_jax.kernels.linear_attention.reference import linear_attention_xla
from sana_jax.testing.numerics import rel_err


def token_reference(q, k, v, cos=None, sin=None, chunk_size=None, s0=None, z0=None, eps=1e-15):
    """out_n = Σ_{m visible} v_m (R φk_m · R φq_n) / (Σ_{m visible} φk_m · φq_n + eps), in float64.

    Visible: all m (bidirectional) or m in the same or an earlier run of chunk_size tokens; plus the initial state.
    """
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    b, n, h, d = q.shape
    fq, fk = np.maximum(q, 0), np.maximum(k, 0)

    def rot(x):
        if cos is None:
            return x
        c, s = np.asarray(cos, np.float64)[:, None], np.asarray(sin, np.float64)[:, None]
        out = np.empty_like(x)
        out[..., 0::2] = x[..., 0::2] * c[..., 0::2] - x[..., 1::2] * s[..., 1::2]
        out[..., 1::2] = x[..., 0::2] * s[..., 1::2] + x[..., 1::2] * c[..., 0::2]
        return out

    rq, rk = rot(fq), rot(fk)
    block = np.arange(n) // (chunk_size or n)
    out = np.zeros(v.shape)
    for i in range(n):
        vis = block <= block[i]
        s = np.einsum("bmhi,bmhj->bhij", v[:, vis], rk[:, vis])
        z = fk[:, vis].sum(1)
        if s0 is not None:
            s = s + np.asarray(s0, np.float64)
            z = z + np.asarray(z0, np.float64)
        num = np.einsum("bhij,bhj->bhi", s, rq[:, i])
        den = np.einsum("bhj,bhj->bh", z, fq[:, i]) + eps
        out[:, i] = num / den[..., None]
    s_final = np.einsum("bmhi,bmhj->bhij", v, rk) + (0 if s0 is None else s0)
    z_final = fk.sum(1) + (0 if z0 is None else z0)
    return out, s_final, z_final


def numpy_reference(q, k, v, rope, chunk_size, initial_state, eps):
    """``token_reference`` with the kernels' signature, as (out, (S, z))."""
    cos, sin = (None, None) if rope is None else rope
    s0, z0 = (None, None) if initial_state is None else (np.asarray(t, np.float64) for t in initial_state)
    out, s, z = token_reference(q, k, v, cos, sin, chunk_size, s0, z0, eps)
    return out, (np.asarray(s), np.asarray(z))


def make_inputs(seed, b, n, h, d, dv, *, rope, initial_state, dtype=jnp.float32):
    ks = jax.random.split(jax.random.PRNGKey(seed), 6)
    q = jax.random.normal(ks[0], (b, n, h, d), dtype)
    k = jax.random.normal(ks[1], (b, n, h, d), dtype)
    v = jax.random.normal(ks[2], (b, n, h, dv), dtype)
    tables = None
    if rope:
        phase = 3.0 * jax.random.uniform(ks[3], (n, d // 2))
        tables = (jnp.repeat(jnp.cos(phase), 2, axis=1), jnp.repeat(jnp.sin(phase), 2, axis=1))
    state = None
    if initial_state:
        state = (jax.random.uniform(ks[4], (b, h, dv, d)), jax.random.uniform(ks[5], (b, h, d)))
    return q, k, v, tables, state


def run_with_state(fn, q, k, v, rope, chunk_size, state, **kw):
    """``fn(...)`` with the state returned: (out, (S, z))."""
    return fn(q, k, v, rope, chunk_size=chunk_size, initial_state=state, return_state=True, **kw)


def assert_matches_references(kernel, seed, b, n, h, d, dv, chunk, rope, init, **kernel_kw):
    """``kernel``'s output, final state and VJPs (q, k, v and the initial state) against the float64 token loop and
    the XLA op (<= 1e-5 relative)."""
    q, k, v, tables, state = make_inputs(seed, b, n, h, d, dv, rope=rope, initial_state=init)
    s0, z0 = state if init else (jnp.zeros((b, h, dv, d)), jnp.zeros((b, h, d)))

    def ours(q, k, v, s0, z0):
        return run_with_state(kernel, q, k, v, tables, chunk, (s0, z0) if init else None, **kernel_kw)

    def xla(q, k, v, s0, z0):
        return run_with_state(linear_attention_xla, q, k, v, tables, chunk, (s0, z0) if init else None)

    args = (q, k, v, s0, z0)
    (out, (s, z)), vjp_ours = jax.vjp(ours, *args)
    (out_x, (s_x, z_x)), vjp_xla = jax.vjp(xla, *args)
    out_np, (s_np, z_np) = numpy_reference(q, k, v, tables, chunk, state, 1e-15)
    for got, xla_val, ref in ((out, out_x, out_np), (s, s_x, s_np), (z, z_x, z_np)):
        assert rel_err(got, ref) < 1e-5
        assert rel_err(got, xla_val) < 1e-5
    assert out.dtype == q.dtype and s.dtype == z.dtype == jnp.float32
    assert s.shape == (b, h, dv, d) and z.shape == (b, h, d)

    ks = jax.random.split(jax.random.PRNGKey(100 + seed), 3)
    cotangent = (jax.random.normal(ks[0], out.shape), (jax.random.normal(ks[1], s.shape),
                                                       jax.random.normal(ks[2], z.shape)))
    names = ("q", "k", "v", "S0", "z0") if init else ("q", "k", "v")
    for name, g, gx in zip(names, vjp_ours(cotangent), vjp_xla(cotangent)):
        assert np.linalg.norm(np.asarray(gx)) > 0, name
        assert rel_err(g, gx) < 1e-5, name
