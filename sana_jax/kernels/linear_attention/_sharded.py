"""Linear attention under ``shard_map``: batch and heads split across devices, and tokens split along a sequence
axis with only the (d_v x d) and (d,) sums crossing devices.

A Pallas kernel is opaque to XLA's partitioner, so under ``jax.jit`` with sharded inputs it must run per device
inside ``shard_map``; the XLA implementation gains the same explicit communication. With tokens sharded over
``sequence_axis`` (device i holds the i-th contiguous slice):

- bidirectional: every device sums its tokens' (S, z), one ``psum`` makes the global sums, and each device
  computes its outputs from them;
- block-causal: runs of C tokens must not straddle devices (N / devices a multiple of C); device i starts from the
  sum of the states of devices 0 .. i-1 (an all-gather of one (S, z) per device, then a masked sum).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec as P


def _present(mesh: Mesh, axes, size: int) -> tuple[str, ...] | None:
    """The mesh axes (of ``axes``) that split a dimension of ``size``: absent and size-1 axes dropped, and the
    trailing ones that would not divide it evenly (a batch of 1 while params are created) left unsplit."""
    kept, parts = [], 1
    for a in axes or ():
        if a in mesh.shape and mesh.shape[a] > 1 and size % (parts * mesh.shape[a]) == 0:
            kept.append(a)
            parts *= mesh.shape[a]
    return tuple(kept) or None


def sharded_linear_attention(attend, q, k, v, rope=None, *, mesh: Mesh, batch_axes=("data", "fsdp"),
                             head_axes=("tensor",), sequence_axis: str | None = "sequence", chunk_size=None,
                             initial_state=None, return_state=False, eps=1e-15):
    """``attend``(q, k, v, rope, chunk_size=, initial_state=, return_state=True, eps=) run per device.

    q, k: (B, N, H, d), v: (B, N, H, d_v) laid out as P(batch_axes, sequence_axis, head_axes, None); rope tables
    (N, d) as P(sequence_axis, None); the state (S (B, H, d_v, d), z (B, H, d)) as P(batch_axes, head_axes).
    Batch and head mesh axes that are absent, of size 1 or do not divide the dimension leave it unsplit; the token
    axis must divide. Returns what ``linear_attention`` returns.
    """
    bat, hed = _present(mesh, batch_axes, q.shape[0]), _present(mesh, head_axes, q.shape[2])
    seq = sequence_axis if sequence_axis in mesh.shape and mesh.shape[sequence_axis] > 1 else None
    n = q.shape[1]
    if seq is not None:
        parts = mesh.shape[seq]
        if n % parts:
            raise ValueError(f"N = {n} tokens must divide evenly over the {parts} devices of mesh axis {seq!r}")
        if chunk_size is not None and (n // parts) % chunk_size:
            raise ValueError(f"block-causal runs of chunk_size={chunk_size} must not straddle devices: "
                             f"N / {parts} = {n // parts} tokens per device is not a multiple of it")
    tokens, table = P(bat, seq, hed, None), P(seq, None)
    state_specs = (P(bat, hed, None, None), P(bat, hed, None))
    b, _, h, d = q.shape
    dv = v.shape[-1]
    if initial_state is None:
        initial_state = (jnp.zeros((b, h, dv, d), jnp.float32), jnp.zeros((b, h, d), jnp.float32))
    has_rope = rope is not None

    def local(q, k, v, s0, z0, *tables):
        rope_local = tables if has_rope else None
        nl = q.shape[1]
        if seq is None:
            return attend(q, k, v, rope_local, chunk_size=chunk_size, initial_state=(s0, z0), return_state=True,
                          eps=eps)
        zeros = (jnp.zeros_like(s0), jnp.zeros_like(z0))
        _, (s_mine, z_mine) = attend(q, k, v, rope_local, chunk_size=nl, initial_state=zeros, return_state=True,
                                     eps=eps)
        if chunk_size is None:
            # All of the sequence's sums, of which this device's own are added back by the op's in-run sum.
            s_all, z_all = jax.lax.psum((s_mine, z_mine), seq)
            before = (s0 + s_all - s_mine, z0 + z_all - z_mine)
            out, _ = attend(q, k, v, rope_local, chunk_size=nl, initial_state=before, return_state=True, eps=eps)
            return out, (s0 + s_all, z0 + z_all)
        # Block-causal: start from the states of the devices before this one.
        s_each, z_each = jax.lax.all_gather((s_mine, z_mine), seq)        # (devices, ...)
        mine = jax.lax.axis_index(seq)
        earlier = (jnp.arange(s_each.shape[0]) < mine).astype(jnp.float32)
        before = (s0 + jnp.tensordot(earlier, s_each, 1), z0 + jnp.tensordot(earlier, z_each, 1))
        out, _ = attend(q, k, v, rope_local, chunk_size=chunk_size, initial_state=before, return_state=True,
                        eps=eps)
        return out, (s0 + jnp.sum(s_each, 0), z0 + jnp.sum(z_each, 0))

    in_specs = (tokens, tokens, tokens, *state_specs) + ((table, table) if has_rope else ())
    fn = jax.shard_map(local, mesh=mesh, in_specs=in_specs, out_specs=(tokens, state_specs), check_vma=False)
    args = (q, k, v, *initial_state) + (tuple(rope) if has_rope else ())
    out, state = fn(*args)
    return (out, state) if return_state else out

