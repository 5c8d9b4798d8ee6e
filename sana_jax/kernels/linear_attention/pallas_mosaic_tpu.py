"""Pallas (Mosaic TPU) linear attention: the op of `sana_jax.kernels.linear_attention` as four fused kernels.

Tokens are laid out (B, H, rows, d) and cut into runs (the C tokens of one block-causal run, or all N tokens
when bidirectional); each run is split into ``tiles_per_run`` tiles of ``tile`` rows and zero-padded at its end.
Zero rows are exact: ReLU(0) = 0 and a rotated zero is zero, so they add nothing to S or z.

Forward, with S_j, z_j the state seen by run j (initial state plus runs 0..j):
  1. `_state_kernel`   walks tiles in order, carries (S, z) in VMEM, writes S_j, z_j per run.
  2. `_output_kernel`  parallel over tiles: out = R(φQ) S_jᵀ / (φQ·z_j + eps).
Backward (A = R(φQ), den = φQ·z + eps, dNum = dOut / den, dDen = -Σ_i dOut_i out_i / den):
  3. `_query_grad_kernel` dφQ = Rᵀ(dNum S_j) + dDen z_j, and per run dS_j = Σ dNumᵀ A, dz_j = Σ dDen φQ.
     A key in run j feeds the states of runs j..last, so its gradient state is G_j = dS_final + Σ_{i≥j} dS_i
     (a reverse cumulative sum over runs, done in XLA: runs × d_v × d numbers).
  4. `_key_grad_kernel` parallel over tiles: dV = R(φK) G_jᵀ, dφK = Rᵀ(V G_j) + g_j.
The initial state's gradient is G_0, g_0. ReLU passes gradient where the input is > 0 (as `jax.nn.relu`).

RoPE inside a kernel avoids strided lane slices: R(x) = x·cos + swap(x)·sin± with swap exchanging each pair
(2i, 2i+1) (a d × d permutation matmul) and sin± = (-sin, +sin) per pair; Rᵀ(y) = y·cos + swap(y·sin±).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from sana_jax.kernels.linear_attention._vjp import fused_op
from sana_jax.kernels.linear_attention.reference import _check

F32 = jnp.float32
_HIGHEST = jax.lax.Precision.HIGHEST
# Rows per tile: a multiple of 16 keeps bf16 tiles sublane-aligned; 512 rows of d = 128 fp32 is 256 KiB.
_ROW_ALIGN = 16
MAX_TILE = 512


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def _resolve_interpret(interpret):
    backend = jax.default_backend()
    if backend == "gpu" and not interpret:
        raise NotImplementedError("linear_attention_pallas is the Mosaic-TPU kernel; on GPU use "
                                  "pallas_triton.linear_attention_pallas_gpu (linear_attention picks it)")
    if interpret is None:
        return pltpu.InterpretParams() if backend == "cpu" else False
    return interpret


# ----------------------------------------------------------------------------------------------- in-kernel math

def _dot(a, b, contract):
    return jax.lax.dot_general(a, b, (contract, ((), ())), precision=_HIGHEST, preferred_element_type=F32)


def _rope(x, tables):
    if tables is None:
        return x
    cos, sin, swap = tables
    return x * cos + _dot(x, swap, ((1,), (0,))) * sin


def _rope_t(y, tables):
    if tables is None:
        return y
    cos, sin, swap = tables
    return y * cos + _dot(y * sin, swap, ((1,), (0,)))


def _split_refs(refs, n_lead, has_rope):
    """(leading refs, rope tables loaded or None, remaining refs)."""
    lead, rest = refs[:n_lead], refs[n_lead:]
    if not has_rope:
        return lead, None, rest
    cos, sin, swap = rest[:3]
    return lead, (cos[...], sin[...], swap[...]), rest[3:]


# ------------------------------------------------------------------------------------------------------ kernels

def _state_kernel(*refs, has_rope):
    (k_ref, v_ref), tables, (s0_ref, z0_ref, s_ref, z_ref, s_acc, z_acc) = _split_refs(refs, 2, has_rope)

    @pl.when(pl.program_id(2) == 0)
    def _():
        s_acc[...] = s0_ref[...]
        z_acc[...] = z0_ref[...]

    kf = jnp.maximum(k_ref[...].astype(F32), 0.0)
    s_acc[...] += _dot(v_ref[...].astype(F32), _rope(kf, tables), ((0,), (0,)))
    z_acc[...] += jnp.sum(kf, axis=0, keepdims=True)
    # The run's block is written back once its index changes, so the last tile of the run leaves S_j.
    s_ref[...] = s_acc[...]
    z_ref[...] = z_acc[...]


def _attend(q_ref, tables, s, z, eps):
    qf = jnp.maximum(q_ref[...].astype(F32), 0.0)
    qr = _rope(qf, tables)
    den = jnp.sum(qf * z, axis=1, keepdims=True) + eps
    return qf, qr, _dot(qr, s, ((1,), (1,))) / den, den


def _output_kernel(*refs, has_rope, eps):
    (q_ref,), tables, (s_ref, z_ref, o_ref) = _split_refs(refs, 1, has_rope)
    _, _, out, _ = _attend(q_ref, tables, s_ref[...], z_ref[...], eps)
    o_ref[...] = out.astype(o_ref.dtype)


def _query_grad_kernel(*refs, has_rope, eps, tiles_per_run):
    (q_ref, do_ref), tables, (s_ref, z_ref, dq_ref, ds_ref, dz_ref, ds_acc, dz_acc) = _split_refs(
        refs, 2, has_rope)

    @pl.when(pl.program_id(2) % tiles_per_run == 0)
    def _():
        ds_acc[...] = jnp.zeros_like(ds_acc)
        dz_acc[...] = jnp.zeros_like(dz_acc)

    s, z = s_ref[...], z_ref[...]
    qf, qr, out, den = _attend(q_ref, tables, s, z, eps)
    do = do_ref[...].astype(F32)
    dnum = do / den
    dden = -jnp.sum(do * out, axis=1, keepdims=True) / den
    dqf = _rope_t(_dot(dnum, s, ((1,), (0,))), tables) + dden * z
    dq_ref[...] = jnp.where(q_ref[...].astype(F32) > 0, dqf, 0.0).astype(dq_ref.dtype)
    ds_acc[...] += _dot(dnum, qr, ((0,), (0,)))
    dz_acc[...] += jnp.sum(dden * qf, axis=0, keepdims=True)
    ds_ref[...] = ds_acc[...]
    dz_ref[...] = dz_acc[...]


def _key_grad_kernel(*refs, has_rope):
    (k_ref, v_ref), tables, (g_s_ref, g_z_ref, dk_ref, dv_ref) = _split_refs(refs, 2, has_rope)
    g_s = g_s_ref[...]
    kf = jnp.maximum(k_ref[...].astype(F32), 0.0)
    dv_ref[...] = _dot(_rope(kf, tables), g_s, ((1,), (1,))).astype(dv_ref.dtype)
    dkf = _rope_t(_dot(v_ref[...].astype(F32), g_s, ((1,), (0,))), tables) + g_z_ref[...]
    dk_ref[...] = jnp.where(k_ref[...].astype(F32) > 0, dkf, 0.0).astype(dk_ref.dtype)


# ------------------------------------------------------------------------------------------------ pallas_calls

class _Plan:
    """Static tiling of one call: grid (B, H, tiles), tile rows, tiles per run."""

    def __init__(self, b, h, d, dv, runs, tiles_per_run, tile, has_rope, eps, interpret):
        self.b, self.h, self.d, self.dv = b, h, d, dv
        self.runs, self.tiles_per_run, self.tile = runs, tiles_per_run, tile
        self.has_rope, self.eps, self.interpret = has_rope, eps, interpret
        self.grid = (b, h, runs * tiles_per_run)

    def rows(self, width):
        return pl.BlockSpec((None, None, self.tile, width), lambda b, h, t: (b, h, t, 0))

    def run_state(self, rows):
        """Per-run state block (B, H, runs, rows, d), picked by the tile's run."""
        tpr = self.tiles_per_run
        return pl.BlockSpec((None, None, None, rows, self.d), lambda b, h, t: (b, h, t // tpr, 0, 0))

    def state(self, rows):
        return pl.BlockSpec((None, None, rows, self.d), lambda b, h, t: (b, h, 0, 0))

    def table_specs(self):
        if not self.has_rope:
            return []
        table = pl.BlockSpec((self.tile, self.d), lambda b, h, t: (t, 0))
        return [table, table, pl.BlockSpec((self.d, self.d), lambda b, h, t: (0, 0))]

    def call(self, kernel, in_specs, out_specs, out_shape, scratch=(), sequential=False):
        semantics = ("parallel", "parallel", "arbitrary" if sequential else "parallel")
        return pl.pallas_call(
            kernel, grid=self.grid, in_specs=in_specs, out_specs=out_specs, out_shape=out_shape,
            scratch_shapes=list(scratch), compiler_params=pltpu.CompilerParams(dimension_semantics=semantics),
            interpret=self.interpret)


def _forward(plan, q, k, v, tables, s0, z0):
    """q, k: (B, H, rows, d); v: (B, H, rows, dv); s0: (B, H, dv, d); z0: (B, H, 1, d).

    Returns out (B, H, rows, dv) and per-run states S (B, H, runs, dv, d), z (B, H, runs, 1, d).
    """
    p, tables = plan, tuple(tables or ())
    state_shapes = (jax.ShapeDtypeStruct((p.b, p.h, p.runs, p.dv, p.d), F32),
                    jax.ShapeDtypeStruct((p.b, p.h, p.runs, 1, p.d), F32))
    s_runs, z_runs = p.call(
        functools.partial(_state_kernel, has_rope=p.has_rope),
        [p.rows(p.d), p.rows(p.dv), *p.table_specs(), p.state(p.dv), p.state(1)],
        [p.run_state(p.dv), p.run_state(1)], state_shapes,
        scratch=[pltpu.VMEM((p.dv, p.d), F32), pltpu.VMEM((1, p.d), F32)], sequential=True,
    )(k, v, *tables, s0, z0)
    out = p.call(
        functools.partial(_output_kernel, has_rope=p.has_rope, eps=p.eps),
        [p.rows(p.d), *p.table_specs(), p.run_state(p.dv), p.run_state(1)], p.rows(p.dv),
        jax.ShapeDtypeStruct((p.b, p.h, q.shape[2], p.dv), q.dtype),
    )(q, *tables, s_runs, z_runs)
    return out, s_runs, z_runs


def _backward(plan, q, k, v, tables, s_runs, z_runs, d_out, d_s, d_z):
    """Gradients (dq, dk, dv, dS0, dz0) given the cotangents of out and of the final state."""
    p, tables = plan, tuple(tables or ())
    dq, ds_runs, dz_runs = p.call(
        functools.partial(_query_grad_kernel, has_rope=p.has_rope, eps=p.eps, tiles_per_run=p.tiles_per_run),
        [p.rows(p.d), p.rows(p.dv), *p.table_specs(), p.run_state(p.dv), p.run_state(1)],
        [p.rows(p.d), p.run_state(p.dv), p.run_state(1)],
        (jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct(s_runs.shape, F32),
         jax.ShapeDtypeStruct(z_runs.shape, F32)),
        scratch=[pltpu.VMEM((p.dv, p.d), F32), pltpu.VMEM((1, p.d), F32)], sequential=True,
    )(q, d_out, *tables, s_runs, z_runs)

    def suffix_sum(x, final):  # G_j = final + Σ_{i ≥ j} x_i
        return jnp.flip(jnp.cumsum(jnp.flip(x, 2), axis=2), 2) + final[:, :, None]

    g_s, g_z = suffix_sum(ds_runs, d_s), suffix_sum(dz_runs, d_z)
    dk, dv = p.call(
        functools.partial(_key_grad_kernel, has_rope=p.has_rope),
        [p.rows(p.d), p.rows(p.dv), *p.table_specs(), p.run_state(p.dv), p.run_state(1)],
        [p.rows(p.d), p.rows(p.dv)],
        (jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)),
    )(k, v, *tables, g_s, g_z)
    return dq, dk, dv, g_s[:, :, 0], g_z[:, :, 0]


def _fused(plan):
    """(q, k, v, tables, s0, z0) -> (out, S_final, z_final) with the hand-written backward."""
    return fused_op(functools.partial(_forward, plan), functools.partial(_backward, plan), lambda x: x[:, :, -1])


# ------------------------------------------------------------------------------------------------- public entry

def _to_runs(x, axis, run, runs, padded_run):
    """Pads `axis` (length N) to runs × run, then each run at its end to padded_run rows."""
    n = x.shape[axis]
    x = jnp.moveaxis(x, axis, 0)
    x = jnp.pad(x, [(0, runs * run - n)] + [(0, 0)] * (x.ndim - 1))
    x = x.reshape(runs, run, *x.shape[1:])
    x = jnp.pad(x, [(0, 0), (0, padded_run - run)] + [(0, 0)] * (x.ndim - 2))
    return jnp.moveaxis(x.reshape(runs * padded_run, *x.shape[2:]), 0, axis)


def _from_runs(x, axis, n, run, runs, padded_run):
    x = jnp.moveaxis(x, axis, 0)
    x = x.reshape(runs, padded_run, *x.shape[1:])[:, :run]
    return jnp.moveaxis(x.reshape(runs * run, *x.shape[2:])[:n], 0, axis)


def _rope_tables(rope, d):
    """(cos, sin±, swap): cos and sin taken per pair as `apply_interleaved_rope` reads them."""
    cos, sin = (t.astype(F32) for t in rope)
    cos = jnp.repeat(cos[:, 0::2], 2, axis=1)
    s = sin[:, 1::2]
    sin = jnp.stack([-s, s], axis=-1).reshape(s.shape[0], d)
    idx = jnp.arange(d)
    swap = (idx[:, None] == (idx[None, :] ^ 1)).astype(F32)
    return cos, sin, swap


def linear_attention_pallas(q, k, v, rope=None, *, chunk_size=None, initial_state=None, return_state=False,
                            eps=1e-15, interpret=None, max_tile=MAX_TILE):
    """See `sana_jax.kernels.linear_attention`. q, k: (B, N, H, d); v: (B, N, H, d_v); rope: (cos, sin) (N, d).

    ``interpret=None`` runs the TPU interpreter on CPU and compiled Mosaic on TPU (GPU: see `pallas_triton`).
    ``max_tile`` caps the rows per kernel step (a run longer than that is split into several tiles).
    ``eps`` must be > 0: padded rows have a denominator of exactly eps (0 would give NaN gradients).
    """
    _check(q, k, v, rope, chunk_size, initial_state)
    interpret = _resolve_interpret(interpret)
    b, n, h, d = q.shape
    dv = v.shape[-1]
    run = n if chunk_size is None or chunk_size >= n else chunk_size
    runs = -(-n // run)
    tiles_per_run = -(-run // max_tile)
    tile = _round_up(-(-run // tiles_per_run), _ROW_ALIGN)
    padded_run = tiles_per_run * tile
    plan = _Plan(b, h, d, dv, runs, tiles_per_run, tile, rope is not None, float(eps), interpret)

    def layout(x):  # (B, N, H, d) -> (B, H, rows, d)
        return _to_runs(jnp.transpose(x, (0, 2, 1, 3)), 2, run, runs, padded_run)

    tables = None
    if rope is not None:
        cos, sin, swap = _rope_tables(rope, d)
        tables = (_to_runs(cos, 0, run, runs, padded_run), _to_runs(sin, 0, run, runs, padded_run), swap)
    if initial_state is None:
        s0, z0 = jnp.zeros((b, h, dv, d), F32), jnp.zeros((b, h, 1, d), F32)
    else:
        s0, z0 = initial_state[0].astype(F32), initial_state[1].astype(F32)[:, :, None]
    out, s, z = _fused(plan)(layout(q), layout(k), layout(v), tables, s0, z0)
    out = jnp.transpose(_from_runs(out, 2, n, run, runs, padded_run), (0, 2, 1, 3))
    return (out, (s, z[:, :, 0])) if return_state else out
