"""Linear attention under shard_map on 8 simulated devices equals the unsharded op: batch, heads and tokens split."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from sana_jax.testing.numerics import rel_err
from sana_jax.kernels.linear_attention import linear_attention_xla
from sana_jax.kernels.linear_attention.pallas_mosaic_tpu import linear_attention_pallas
from sana_jax.kernels.linear_attention._sharded import sharded_linear_attention

MESHES = {
    "sequence": {"sequence": 8},
    "batch_heads_sequence": {"data": 2, "tensor": 2, "sequence": 2},
    "batch_heads": {"data": 2, "tensor": 4},
}


def _mesh(shape):
    names = tuple(shape)
    return Mesh(np.array(jax.devices()).reshape(tuple(shape.values())), names)


def _inputs(b=2, n=64, h=4, d=8, seed=0):
    rng = np.random.default_rng(seed)
    q, k, v = (rng.normal(size=(b, n, h, d)).astype(np.float32) for _ in range(3))
    theta = rng.uniform(0, 3, size=(n, d // 2)).repeat(2, axis=1)
    rope = (np.cos(theta).astype(np.float32), np.sin(theta).astype(np.float32))
    state = (rng.uniform(0, 1, size=(b, h, d, d)).astype(np.float32),
             rng.uniform(0, 1, size=(b, h, d)).astype(np.float32))
    return q, k, v, rope, state


CASES = [(name, chunk, "xla") for name in MESHES for chunk in (None, 4)]
CASES += [("sequence", 4, "pallas"), ("batch_heads_sequence", None, "pallas")]  # the kernel per device


@pytest.mark.parametrize("name, chunk_size, impl", CASES)
def test_sharded_op_equals_the_unsharded_op(name, chunk_size, impl):
    q, k, v, rope, state = _inputs()
    want, (s_want, z_want) = linear_attention_xla(q, k, v, rope, chunk_size=chunk_size, initial_state=state,
                                                  return_state=True)
    mesh = _mesh(MESHES[name])
    seq = "sequence" if "sequence" in mesh.shape else None
    tok = NamedSharding(mesh, P(("data",) if "data" in mesh.shape else None, seq,
                                "tensor" if "tensor" in mesh.shape else None, None))
    q, k, v = (jax.device_put(x, tok) for x in (q, k, v))
    attend = linear_attention_xla if impl == "xla" else linear_attention_pallas
    fn = jax.jit(lambda q, k, v, rope, state: sharded_linear_attention(
        attend, q, k, v, rope, mesh=mesh, chunk_size=chunk_size, initial_state=state,
        return_state=True))
    out, (s, z) = fn(q, k, v, rope, state)
    assert rel_err(out, want) < 1e-5 and rel_err(s, s_want) < 1e-6 and rel_err(z, z_want) < 1e-6
    assert out.sharding.is_equivalent_to(tok, 4)


def test_runs_straddling_devices_are_refused():
    q, k, v, rope, _ = _inputs(n=48)
    with pytest.raises(ValueError, match="must not straddle devices.*6 tokens per device"):
        sharded_linear_attention(linear_attention_xla, q, k, v, rope, mesh=_mesh({"sequence": 8}), chunk_size=4)
