"""ReLU linear attention with RoPE on the numerator: bidirectional or block-causal with a carried state.

For head h and token n (φ = ReLU, R = RoPE on interleaved pairs):

    S = Σ_m v_m ⊗ R(φ(k_m))        (d_v × d, fp32)     z = Σ_m φ(k_m)       (d, fp32)
    out_n = S · R(φ(q_n)) / (z · φ(q_n) + eps)

Bidirectional (``chunk_size=None``) sums over all N tokens. Block-causal (``chunk_size=C``) sums over every
token in the same run of C tokens and all earlier runs, starting from ``initial_state``.
State layout: S (B, H, d_v, d) with S[b, h, i, j] = Σ v[i]·R(φ(k))[j]; z (B, H, d).
"""

from __future__ import annotations

import jax

from sana_jax.kernels.linear_attention._sharded import sharded_linear_attention
from sana_jax.kernels.linear_attention.reference import linear_attention_xla

IMPLEMENTATIONS = ("auto", "xla", "pallas")


def resolve(implementation: str, block_causal: bool = False) -> str:
    """"auto": the Pallas kernel on TPU; XLA on CPU (where Pallas only interprets); on GPU the Triton kernel for
    block-causal calls and XLA for bidirectional ones — as timed on an H200 (benchmarks/results/
    linear_attention_h200.md): block-causal, Triton is 2.3-2.4x faster forward and 1.7-1.9x forward+backward;
    bidirectional, the forwards tie and XLA's backward is 1.2-1.3x faster."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation={implementation!r}; expected one of {IMPLEMENTATIONS}")
    if implementation == "auto":
        backend = jax.default_backend()
        return "pallas" if backend == "tpu" or (backend == "gpu" and block_causal) else "xla"
    return implementation


def pallas_kernel():
    """The backend's Pallas function (signature of `linear_attention` without ``implementation``): the Triton
    kernel on GPU, else the Mosaic-TPU kernel (compiled on TPU, the TPU interpreter on CPU)."""
    if jax.default_backend() == "gpu":
        from sana_jax.kernels.linear_attention.pallas_triton import linear_attention_pallas_gpu

        return linear_attention_pallas_gpu
    from sana_jax.kernels.linear_attention.pallas_mosaic_tpu import linear_attention_pallas

    return linear_attention_pallas


def linear_attention(q, k, v, rope=None, *, chunk_size=None, initial_state=None, return_state=False,
                     eps=1e-15, implementation="auto"):
    """q, k, v: (B, N, H, d) with q, k before ReLU; rope: (cos, sin) tables (N, d) or None.

    Returns out (B, N, H, d_v) in q's dtype, and with ``return_state=True`` also the final (S, z).
    ``implementation="pallas"`` on CPU runs the TPU kernel in Pallas interpret mode (for tests).
    """
    if resolve(implementation, block_causal=chunk_size is not None) == "pallas":
        return pallas_kernel()(q, k, v, rope, chunk_size=chunk_size, initial_state=initial_state,
                               return_state=return_state, eps=eps)
    return linear_attention_xla(q, k, v, rope, chunk_size=chunk_size, initial_state=initial_state,
                                return_state=return_state, eps=eps)


__all__ = ["linear_attention", "linear_attention_xla", "pallas_kernel", "resolve", "sharded_linear_attention"]
