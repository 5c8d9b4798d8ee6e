"""Pallas GPU linear attention (Triton lowering): the op of `sana_jax.kernels.linear_attention` as four kernels.

The GPU backend lowers through Pallas' Triton path, so it runs on every CUDA GPU Triton supports (Ampere, Ada,
Hopper, Blackwell); on Hopper it does not use wgmma/TMA explicitly (Triton picks the instructions). A Mosaic-GPU
(warpgroup) version is not written.

The kernels read q, k, v in place in their (B, N, H, d) layout (no transposes, no padded copies): each program
loads a tile of T token rows of one head with masked loads, so any N, any run length and any head dim work (the
tile's width is rounded up to a power of two inside the kernel, as Triton requires). The head dim is taken as
d/2 interleaved pairs — the even and the odd members are loaded as two (T, d/2) halves — so interleaved RoPE is
elementwise: R(x)_e = x_e cos - x_o sin, R(x)_o = x_o cos + x_e sin, and every state is kept as its even and odd
column halves (S_e, S_o: d_v x d/2 each).

Tokens form runs (the C tokens of one block-causal run, or all N when bidirectional). With S_j, z_j the state seen
by run j (initial state plus runs 0..j):
  1. `_state_kernel`   grid (B*H, runs, splits): each program sums (S, z) over its share of one run's tiles.
     XLA adds the splits and takes the cumulative sum over runs (runs x d_v x d numbers).
  2. `_output_kernel`  grid (B*H, runs, tiles): out = R(φQ) S_jᵀ / (φQ·z_j + eps).
Backward (dNum = dOut / den, dDen = -Σ_i dOut_i out_i / den):
  3. `_query_grad_kernel` grid (B*H, runs, splits): dφQ = Rᵀ(dNum S_j) + dDen z_j per tile, and the share's
     dS = Σ dNumᵀ R(φQ), dz = Σ dDen φQ. A key of run j feeds runs j..last, so its gradient state is
     G_j = dS_final + Σ_{i≥j} dS_i (XLA: reverse cumulative sum over runs).
  4. `_key_grad_kernel` grid (B*H, runs, tiles): dV = R(φK) G_jᵀ, dφK = Rᵀ(V G_j) + g_j.
ReLU passes gradient where the input is > 0 (as `jax.nn.relu`).

Precision: the sums, the denominator and the division are fp32. The matrix products' operands (``matmul``): "tf32"
(default: fp32 operands on the tensor cores as TF32, ~1e-3 relative per product), "fp32" (exact fp32 FMAs, slow)
or "bf16" (operands rounded to bf16: twice TF32's tensor-core rate). Interpret mode computes all three on the CPU
(bf16 still rounds).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from sana_jax.kernels.linear_attention._vjp import fused_op
from sana_jax.kernels.linear_attention.reference import _check

F32 = jnp.float32
# Default ((tile rows, warps) forward, (tile rows, warps) backward) by the inputs' bytes per element, as measured on
# an H200 (jax 0.11.2; benchmarks/results/linear_attention_h200.md). 2-byte inputs: the sweep's fastest; 128-row
# backward tiles need 288 KiB of shared memory (227 KiB there). 4-byte inputs: 128-row forward tiles overflow it
# too, so the configuration compiled and checked with fp32 inputs (64 / 4 everywhere).
DEFAULT_TILES = {2: ((128, 8), (64, 8)), 4: ((64, 4), (64, 4))}
_MIN_DIM = 16                  # Triton's smallest matrix-unit operand side
# Matrix-product operands: (dtype, precision). Triton runs fp32 DEFAULT as TF32 and HIGHEST as exact fp32 FMAs.
MATMUL = {"tf32": (F32, jax.lax.Precision.DEFAULT), "fp32": (F32, jax.lax.Precision.HIGHEST),
          "bf16": (jnp.bfloat16, jax.lax.Precision.DEFAULT)}


def _pow2(x: int, minimum: int = _MIN_DIM) -> int:
    return max(minimum, 1 << (max(int(x), 1) - 1).bit_length())


class _Plan:
    """Static shapes of one call."""

    def __init__(self, b, n, h, d2, dv, run, runs, tile, splits, has_rope, eps, matmul, interpret, warps):
        self.b, self.n, self.h, self.d2, self.dv = b, n, h, d2, dv
        self.run, self.runs, self.tile = run, runs, tile
        self.tiles = -(-run // tile)                       # tiles per run
        self.splits = splits
        self.share = -(-self.tiles // splits)              # tiles per split (the last may run past the run)
        self.D2, self.DV = _pow2(d2), _pow2(dv)
        self.has_rope, self.eps, self.matmul = has_rope, eps, matmul
        self.interpret, self.warps = interpret, warps

    def call(self, kernel, out_shape, grid, **kw):
        return pl.pallas_call(
            functools.partial(kernel, p=self, **kw), out_shape=out_shape, grid=grid, interpret=self.interpret,
            compiler_params=pltriton.CompilerParams(num_warps=self.warps, num_stages=2))


# ----------------------------------------------------------------------------------------------- in-kernel math

def _mm(p, a, b, contract):
    """a, b 2-D; contract = (axis of a, axis of b); fp32 result."""
    dtype, precision = MATMUL[p.matmul]
    return jax.lax.dot_general(a.astype(dtype), b.astype(dtype), ((contract[:1], contract[1:]), ((), ())),
                               precision=precision, preferred_element_type=F32)


def _tile_rows(p, run, tile):
    """Row indices of one tile of a run and their mask. Masked rows and columns index past the array's end (row
    N, column d/2 or d_v): no access reaches them on GPU, and the interpreter drops such writes (a clamped index
    would write a masked lane's old value over a valid one)."""
    local = tile * p.tile + jnp.arange(p.tile, dtype=jnp.int32)
    rows = run * p.run + local
    valid = (local < p.run) & (rows < p.n)
    return jnp.where(valid, rows, p.n), valid


def _bh(p):
    bh = pl.program_id(0)
    return jax.lax.div(bh, p.h), jax.lax.rem(bh, p.h)


def _load_pairs(p, ref, b, h, rows, valid):
    """(even, odd) halves (T, D2) in fp32 of a (B, N, H, d/2, 2) ref; zeros outside."""
    c = jnp.arange(p.D2, dtype=jnp.int32)
    mask = valid[:, None] & (c < p.d2)[None, :]
    return tuple(pltriton.load(ref.at[b, rows[:, None], h, c[None, :], i], mask=mask, other=0).astype(F32)
                 for i in (0, 1))


def _rows_ref(p, ref, b, h, rows, valid):
    """Index and mask of a (T, DV) tile of a (B, N, H, d_v) ref."""
    c = jnp.arange(p.DV, dtype=jnp.int32)
    mask = valid[:, None] & (c < p.dv)[None, :]
    return ref.at[b, rows[:, None], h, c[None, :]], mask


def _load_rows(p, ref, b, h, rows, valid):
    at, mask = _rows_ref(p, ref, b, h, rows, valid)
    return pltriton.load(at, mask=mask, other=0).astype(F32)


def _store_pairs(p, ref, b, h, rows, valid, even, odd):
    c = jnp.arange(p.D2, dtype=jnp.int32)
    mask = valid[:, None] & (c < p.d2)[None, :]
    for i, x in enumerate((even, odd)):
        pltriton.store(ref.at[b, rows[:, None], h, c[None, :], i], x.astype(ref.dtype), mask=mask)


def _tables(p, cos_ref, sin_ref, rows, valid):
    if not p.has_rope:
        return None
    c = jnp.arange(p.D2, dtype=jnp.int32)
    mask = valid[:, None] & (c < p.d2)[None, :]
    return tuple(pltriton.load(t.at[rows[:, None], c[None, :]], mask=mask, other=0) for t in (cos_ref, sin_ref))


def _rope(xe, xo, tables):
    if tables is None:
        return xe, xo
    cos, sin = tables
    return xe * cos - xo * sin, xo * cos + xe * sin


def _rope_t(ye, yo, tables):
    if tables is None:
        return ye, yo
    cos, sin = tables
    return ye * cos + yo * sin, yo * cos - ye * sin


def _state_idx(p, r, which, *lead):
    """Index of a padded (…, 2, DV, D2) state block (``which`` 0 = even, 1 = odd columns)."""
    i = jnp.arange(p.DV, dtype=jnp.int32)[:, None]
    j = jnp.arange(p.D2, dtype=jnp.int32)[None, :]
    return (pl.program_id(0), r, *lead, which, i, j)


def _vec_idx(p, r, which, *lead):
    return (pl.program_id(0), r, *lead, which, jnp.arange(p.D2, dtype=jnp.int32))


def _load_state(p, s_ref, z_ref, r):
    return (s_ref[_state_idx(p, r, 0)], s_ref[_state_idx(p, r, 1)], z_ref[_vec_idx(p, r, 0)], z_ref[_vec_idx(p, r, 1)])


def _attend(p, qe, qo, tables, state):
    """(R(φq) halves, out, den) for loaded fp32 q halves."""
    se, so, ze, zo = state
    qfe, qfo = jnp.maximum(qe, 0.0), jnp.maximum(qo, 0.0)
    qre, qro = _rope(qfe, qfo, tables)
    den = jnp.sum(qfe * ze[None, :], axis=1) + jnp.sum(qfo * zo[None, :], axis=1) + p.eps
    num = _mm(p, qre, se, (1, 1)) + _mm(p, qro, so, (1, 1))
    return (qfe, qfo), (qre, qro), num / den[:, None], den


# ------------------------------------------------------------------------------------------------------ kernels

def _state_kernel(k_ref, v_ref, cos_ref, sin_ref, s_ref, z_ref, *, p):
    b, h = _bh(p)
    r, split = pl.program_id(1), pl.program_id(2)

    def body(t, acc):
        se, so, ze, zo = acc
        rows, valid = _tile_rows(p, r, split * p.share + t)
        ke, ko = _load_pairs(p, k_ref, b, h, rows, valid)
        v = _load_rows(p, v_ref, b, h, rows, valid)
        kfe, kfo = jnp.maximum(ke, 0.0), jnp.maximum(ko, 0.0)
        kre, kro = _rope(kfe, kfo, _tables(p, cos_ref, sin_ref, rows, valid))
        return (se + _mm(p, v, kre, (0, 0)), so + _mm(p, v, kro, (0, 0)),
                ze + jnp.sum(kfe, axis=0), zo + jnp.sum(kfo, axis=0))

    zs, zv = jnp.zeros((p.DV, p.D2), F32), jnp.zeros((p.D2,), F32)
    se, so, ze, zo = jax.lax.fori_loop(0, p.share, body, (zs, zs, zv, zv))
    for which, (s, z) in enumerate(((se, ze), (so, zo))):
        s_ref[_state_idx(p, r, which, split)] = s
        z_ref[_vec_idx(p, r, which, split)] = z


def _output_kernel(q_ref, cos_ref, sin_ref, s_ref, z_ref, o_ref, *, p):
    b, h = _bh(p)
    r = pl.program_id(1)
    rows, valid = _tile_rows(p, r, pl.program_id(2))
    qe, qo = _load_pairs(p, q_ref, b, h, rows, valid)
    _, _, out, _ = _attend(p, qe, qo, _tables(p, cos_ref, sin_ref, rows, valid), _load_state(p, s_ref, z_ref, r))
    at, mask = _rows_ref(p, o_ref, b, h, rows, valid)
    pltriton.store(at, out.astype(o_ref.dtype), mask=mask)


def _query_grad_kernel(q_ref, do_ref, cos_ref, sin_ref, s_ref, z_ref, dq_ref, ds_ref, dz_ref, *, p):
    b, h = _bh(p)
    r, split = pl.program_id(1), pl.program_id(2)
    state = _load_state(p, s_ref, z_ref, r)
    se, so, ze, zo = state

    def body(t, acc):
        dse, dso, dze, dzo = acc
        rows, valid = _tile_rows(p, r, split * p.share + t)
        tables = _tables(p, cos_ref, sin_ref, rows, valid)
        qe, qo = _load_pairs(p, q_ref, b, h, rows, valid)
        (qfe, qfo), (qre, qro), out, den = _attend(p, qe, qo, tables, state)
        do = _load_rows(p, do_ref, b, h, rows, valid)
        dnum = do / den[:, None]
        dden = -jnp.sum(do * out, axis=1) / den
        dqe, dqo = _rope_t(_mm(p, dnum, se, (1, 0)), _mm(p, dnum, so, (1, 0)), tables)
        dqe = jnp.where(qe > 0, dqe + dden[:, None] * ze[None, :], 0.0)
        dqo = jnp.where(qo > 0, dqo + dden[:, None] * zo[None, :], 0.0)
        _store_pairs(p, dq_ref, b, h, rows, valid, dqe, dqo)
        return (dse + _mm(p, dnum, qre, (0, 0)), dso + _mm(p, dnum, qro, (0, 0)),
                dze + jnp.sum(dden[:, None] * qfe, axis=0), dzo + jnp.sum(dden[:, None] * qfo, axis=0))

    zs, zv = jnp.zeros((p.DV, p.D2), F32), jnp.zeros((p.D2,), F32)
    dse, dso, dze, dzo = jax.lax.fori_loop(0, p.share, body, (zs, zs, zv, zv))
    for which, (s, z) in enumerate(((dse, dze), (dso, dzo))):
        ds_ref[_state_idx(p, r, which, split)] = s
        dz_ref[_vec_idx(p, r, which, split)] = z


def _key_grad_kernel(k_ref, v_ref, cos_ref, sin_ref, gs_ref, gz_ref, dk_ref, dv_ref, *, p):
    b, h = _bh(p)
    r = pl.program_id(1)
    rows, valid = _tile_rows(p, r, pl.program_id(2))
    tables = _tables(p, cos_ref, sin_ref, rows, valid)
    ge, go, gze, gzo = _load_state(p, gs_ref, gz_ref, r)
    ke, ko = _load_pairs(p, k_ref, b, h, rows, valid)
    v = _load_rows(p, v_ref, b, h, rows, valid)
    kre, kro = _rope(jnp.maximum(ke, 0.0), jnp.maximum(ko, 0.0), tables)
    dv = _mm(p, kre, ge, (1, 1)) + _mm(p, kro, go, (1, 1))
    at, mask = _rows_ref(p, dv_ref, b, h, rows, valid)
    pltriton.store(at, dv.astype(dv_ref.dtype), mask=mask)
    dke, dko = _rope_t(_mm(p, v, ge, (1, 0)), _mm(p, v, go, (1, 0)), tables)
    dke = jnp.where(ke > 0, dke + gze[None, :], 0.0)
    dko = jnp.where(ko > 0, dko + gzo[None, :], 0.0)
    _store_pairs(p, dk_ref, b, h, rows, valid, dke, dko)


# ------------------------------------------------------------------------------------------------ pallas_calls

def _state_shapes(p, *lead):
    bh = p.b * p.h
    return (jax.ShapeDtypeStruct((bh, p.runs, *lead, 2, p.DV, p.D2), F32),
            jax.ShapeDtypeStruct((bh, p.runs, *lead, 2, p.D2), F32))


def _to_split(p, s, z):
    """(S (B, H, dv, d), z (B, H, d)) -> padded halves (B*H, 2, DV, D2), (B*H, 2, D2)."""
    s = jnp.moveaxis(s.reshape(p.b * p.h, p.dv, p.d2, 2), -1, 1)
    z = jnp.moveaxis(z.reshape(p.b * p.h, p.d2, 2), -1, 1)
    return (jnp.pad(s, ((0, 0), (0, 0), (0, p.DV - p.dv), (0, p.D2 - p.d2))),
            jnp.pad(z, ((0, 0), (0, 0), (0, p.D2 - p.d2))))


def _from_split(p, s, z):
    """Inverse of `_to_split` (leading axis B*H)."""
    s = jnp.moveaxis(s[:, :, :p.dv, :p.d2], 1, -1).reshape(p.b, p.h, p.dv, 2 * p.d2)
    z = jnp.moveaxis(z[:, :, :p.d2], 1, -1).reshape(p.b, p.h, 2 * p.d2)
    return s, z


def _forward(p, q, k, v, tables, s0, z0):
    """q, k: (B, N, H, d/2, 2); v: (B, N, H, dv); s0, z0 split-padded. Returns out and the per-run states S_j."""
    cos, sin = tables
    s_part, z_part = p.call(_state_kernel, _state_shapes(p, p.splits), (p.b * p.h, p.runs, p.splits))(k, v, cos, sin)
    s_runs = jnp.cumsum(s_part.sum(2), axis=1) + s0[:, None]
    z_runs = jnp.cumsum(z_part.sum(2), axis=1) + z0[:, None]
    out = p.call(_output_kernel, jax.ShapeDtypeStruct((p.b, p.n, p.h, p.dv), q.dtype),
                 (p.b * p.h, p.runs, p.tiles))(q, cos, sin, s_runs, z_runs)
    return out, s_runs, z_runs


def _backward(p, q, k, v, tables, s_runs, z_runs, d_out, d_s, d_z):
    cos, sin = tables
    dq, ds_part, dz_part = p.call(
        _query_grad_kernel, (jax.ShapeDtypeStruct(q.shape, q.dtype), *_state_shapes(p, p.splits)),
        (p.b * p.h, p.runs, p.splits))(q, d_out, cos, sin, s_runs, z_runs)

    def suffix_sum(x, final):  # G_j = final + Σ_{i ≥ j} x_i
        return jnp.flip(jnp.cumsum(jnp.flip(x, 1), axis=1), 1) + final[:, None]

    g_s, g_z = suffix_sum(ds_part.sum(2), d_s), suffix_sum(dz_part.sum(2), d_z)
    dk, dv = p.call(
        _key_grad_kernel, (jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)),
        (p.b * p.h, p.runs, p.tiles))(k, v, cos, sin, g_s, g_z)
    return dq, dk, dv, g_s[:, 0], g_z[:, 0]


def _fused(plan, backward_plan):
    """(q, k, v, tables, s0, z0) -> (out, S_final, z_final) in the split layout, with the hand-written backward
    (its own tile rows and warps: the per-run states between the passes do not depend on the tiling)."""
    return fused_op(functools.partial(_forward, plan), functools.partial(_backward, backward_plan),
                    lambda x: x[:, -1])


# ------------------------------------------------------------------------------------------------- public entry

def _default_splits(p_programs: int, tiles: int, interpret) -> int:
    """Enough programs for the reduction kernels to fill the GPU (about two per multiprocessor)."""
    if interpret:
        return min(tiles, 2)
    cores = getattr(jax.devices()[0], "core_count", None) or 132
    return max(1, min(tiles, math.ceil(2 * cores / p_programs)))


def linear_attention_pallas_gpu(q, k, v, rope=None, *, chunk_size=None, initial_state=None, return_state=False,
                                eps=1e-15, interpret=None, tile=None, splits=None, matmul="tf32", num_warps=None,
                                backward_tile=None, backward_num_warps=None):
    """See `sana_jax.kernels.linear_attention`. q, k: (B, N, H, d); v: (B, N, H, d_v); rope: (cos, sin) (N, d).

    ``interpret=None`` compiles through Triton on GPU and runs the Pallas interpreter elsewhere (tests).
    ``tile``, ``num_warps``: token rows per kernel step (a power of two >= 16) and warps per program;
    ``backward_tile``, ``backward_num_warps``: the same for the two gradient kernels (defaults: ``DEFAULT_TILES``
    by q's bytes per element). ``splits``: programs sharing one run's (S, z) sums (default: enough to fill the GPU).
    ``matmul``: "tf32" | "fp32" | "bf16", the matrix products' operands (module docstring). ``eps`` must be > 0:
    masked rows have a denominator of exactly eps.
    """
    _check(q, k, v, rope, chunk_size, initial_state)
    (fwd_tile, fwd_warps), (bwd_tile, bwd_warps) = DEFAULT_TILES[4 if jnp.dtype(q.dtype).itemsize > 2 else 2]
    tile = fwd_tile if tile is None else tile
    num_warps = fwd_warps if num_warps is None else num_warps
    backward_tile = bwd_tile if backward_tile is None else backward_tile
    backward_num_warps = bwd_warps if backward_num_warps is None else backward_num_warps
    for name, value in (("tile", tile), ("backward_tile", backward_tile)):
        if not isinstance(value, int) or value < _MIN_DIM or value & (value - 1):
            raise ValueError(f"{name} must be a power of two >= {_MIN_DIM}; got {value!r}")
    if matmul not in MATMUL:
        raise ValueError(f"matmul must be one of {tuple(MATMUL)}; got {matmul!r}")
    if interpret is None:
        interpret = jax.default_backend() != "gpu"
    b, n, h, d = q.shape
    dv = v.shape[-1]
    if d % 2:  # no RoPE (checked): a zero column is exact (ReLU(0) = 0 adds nothing to S, z or the denominator)
        q, k = (jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, 1))) for x in (q, k))
        if initial_state is not None:
            initial_state = (jnp.pad(initial_state[0], ((0, 0), (0, 0), (0, 0), (0, 1))),
                             jnp.pad(initial_state[1], ((0, 0), (0, 0), (0, 1))))
    d2 = q.shape[-1] // 2
    run = n if chunk_size is None or chunk_size >= n else chunk_size
    runs = -(-n // run)
    plans = []
    for t, warps in ((tile, num_warps), (backward_tile, backward_num_warps)):
        tiles = -(-run // t)
        split = _default_splits(b * h * runs, tiles, interpret) if splits is None else splits
        if not (isinstance(split, int) and 1 <= split <= tiles):
            raise ValueError(f"splits must be an int in [1, {tiles}] (tiles per run at tile {t}); got {splits!r}")
        plans.append(_Plan(b, n, h, d2, dv, run, runs, t, split, rope is not None, float(eps), matmul,
                           interpret, warps))
    p = plans[0]

    if rope is not None:
        cos, sin = (t.astype(F32) for t in rope)
        tables = (cos[:, 0::2], sin[:, 1::2])           # per pair, as `apply_interleaved_rope` reads them
    else:
        tables = (jnp.zeros((1, 1), F32),) * 2          # unread
    if initial_state is None:
        s0, z0 = jnp.zeros((b * h, 2, p.DV, p.D2), F32), jnp.zeros((b * h, 2, p.D2), F32)
    else:
        s0, z0 = _to_split(p, initial_state[0].astype(F32), initial_state[1].astype(F32))
    pairs = lambda x: x.reshape(b, n, h, d2, 2)  # noqa: E731  (a free reshape)
    out, s, z = _fused(*plans)(pairs(q), pairs(k), v, tables, s0, z0)
    if not return_state:
        return out
    s, z = _from_split(p, s, z)
    return out, (s[..., :d], z[..., :d])
