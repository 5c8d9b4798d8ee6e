"""The custom-VJP wrapper shared by the Pallas backends: kernels compute per-run states, the op returns the last."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def fused_op(forward, backward, last):
    """(q, k, v, tables, s0, z0) -> (out, S_final, z_final) under ``jax.custom_vjp``.

    ``forward(q, k, v, tables, s0, z0)`` -> (out, S per run, z per run); ``last(x)`` picks the final run's state;
    ``backward(q, k, v, tables, s_runs, z_runs, d_out, d_s, d_z)`` -> (dq, dk, dv, dS0, dz0).
    """

    @jax.custom_vjp
    def fused(q, k, v, tables, s0, z0):
        out, s_runs, z_runs = forward(q, k, v, tables, s0, z0)
        return out, last(s_runs), last(z_runs)

    def fwd(q, k, v, tables, s0, z0):
        out, s_runs, z_runs = forward(q, k, v, tables, s0, z0)
        return (out, last(s_runs), last(z_runs)), (q, k, v, tables, s_runs, z_runs)

    def bwd(res, cotangents):
        q, k, v, tables, s_runs, z_runs = res
        dq, dk, dv, ds0, dz0 = backward(q, k, v, tables, s_runs, z_runs, *cotangents)
        # RoPE tables are constants of the position grid: zero cotangent.
        return dq, dk, dv, jax.tree.map(jnp.zeros_like, tables), ds0, dz0

    fused.defvjp(fwd, bwd)
    return fused
