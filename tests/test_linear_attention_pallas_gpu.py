"""The Pallas GPU (Triton) linear attention, run by the Pallas interpreter on CPU, against the float64
token-by-token definition and the XLA op; its Triton lowering for CUDA (no GPU needed to lower); the DiT and the
shard_map wrapper with it."""

from __future__ import annotations

import importlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from sana_jax.testing.linear_attention import assert_matches_references, make_inputs, numpy_reference
from sana_jax.testing.linear_attention import run_with_state as _run
from sana_jax.testing.numerics import rel_err
from sana_jax.kernels.linear_attention.pallas_triton import linear_attention_pallas_gpu
from sana_jax.kernels.linear_attention._sharded import sharded_linear_attention
from sana_jax.kernels.linear_attention.reference import linear_attention_xla

# The package (its parent re-exports the function of the same name).
la = importlib.import_module("sana_jax.kernels.linear_attention")

# (seed, B, N, H, d, d_v, chunk_size, rope, initial state, tile, backward tile, splits): odd N; runs of several
# tiles shared by several programs (with tiles past the run's end); chunks not dividing N; d_v != d; odd d without
# RoPE (padded pair); one run (chunk >= N); backward tiled unlike the forward.
CASES = [
    (0, 2, 37, 2, 8, 8, None, False, True, 16, 16, 2),
    (1, 2, 45, 2, 16, 12, 20, True, True, 16, 32, None),
    (2, 1, 100, 2, 6, 5, None, True, False, 16, 16, 3),
    (3, 3, 23, 1, 8, 16, 7, True, False, 16, 16, 1),
    (4, 1, 50, 1, 7, 9, 64, False, True, 32, 16, None),
]


@pytest.mark.parametrize("case", CASES)
def test_forward_state_and_vjp_match_float64_numpy_and_xla(case):
    *shape, tile, backward_tile, splits = case
    assert_matches_references(linear_attention_pallas_gpu, *shape, tile=tile, backward_tile=backward_tile,
                              splits=splits, interpret=True)


def test_bf16_inputs_and_bf16_products():
    """bf16 in and out: fp32 sums lose only the output rounding; bf16 products add operand rounding."""
    q, k, v, tables, state = make_inputs(6, 2, 33, 2, 16, 16, rope=True, initial_state=True, dtype=jnp.bfloat16)
    out_np, (s_np, _) = numpy_reference(q, k, v, tables, 8, state, 1e-15)
    for matmul, bound in (("tf32", 5e-3), ("bf16", 2e-2)):
        out, (s, _) = _run(linear_attention_pallas_gpu, q, k, v, tables, 8, state, matmul=matmul, interpret=True)
        assert out.dtype == jnp.bfloat16 and s.dtype == jnp.float32
        assert rel_err(out, out_np) < bound, matmul
    grads = jax.grad(lambda q, k, v: jnp.sum(linear_attention_pallas_gpu(q, k, v, tables, chunk_size=8,
                                                                         interpret=True).astype(jnp.float32)),
                     (0, 1, 2))(q, k, v)
    grads_x = jax.grad(lambda q, k, v: jnp.sum(linear_attention_xla(q, k, v, tables, chunk_size=8)
                                               .astype(jnp.float32)), (0, 1, 2))(q, k, v)
    for g, gx in zip(grads, grads_x):
        assert g.dtype == jnp.bfloat16
        assert rel_err(g, gx) < 1e-2


@pytest.mark.parametrize("chunk_size", [None, 300])
def test_lowers_through_pallas_triton_for_cuda(chunk_size):
    """Forward and backward at the published head dim pass Pallas' Triton lowering (what a GPU compiles next)."""
    b, n, h, d = 1, 1000, 2, 112
    q = jnp.zeros((b, n, h, d), jnp.bfloat16)
    rope = (jnp.zeros((n, d)), jnp.zeros((n, d)))

    def loss(q, k, v):
        out = linear_attention_pallas_gpu(q, k, v, rope, chunk_size=chunk_size, interpret=False, splits=2)
        return jnp.sum(out.astype(jnp.float32))

    lowered = jax.jit(jax.value_and_grad(loss, (0, 1, 2))).trace(q, q, q).lower(lowering_platforms=("cuda",))
    text = lowered.as_text()
    assert text.count("custom_call @__gpu$xla.gpu.triton") == 4, "the two forward and two backward Triton kernels"


def test_argument_errors():
    q, k, v, _, _ = make_inputs(8, 1, 40, 1, 8, 8, rope=False, initial_state=False)
    with pytest.raises(ValueError, match="tile must be a power of two"):
        linear_attention_pallas_gpu(q, k, v, tile=48)
    with pytest.raises(ValueError, match="backward_tile must be a power of two"):
        linear_attention_pallas_gpu(q, k, v, backward_tile=8)
    with pytest.raises(ValueError, match=r"splits must be an int in \[1, 3\]"):
        linear_attention_pallas_gpu(q, k, v, tile=16, backward_tile=16, splits=4)
    with pytest.raises(ValueError, match="matmul must be one of"):
        linear_attention_pallas_gpu(q, k, v, matmul="fp16")
    with pytest.raises(ValueError, match="same shape"):
        linear_attention_pallas_gpu(q, k[:, :4], v)


def test_pallas_kernel_picks_the_triton_kernel_on_gpu(monkeypatch):
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert la.pallas_kernel() is linear_attention_pallas_gpu
    # As timed on an H200: Triton for block-causal calls, XLA for bidirectional ones.
    assert la.resolve("auto", block_causal=True) == "pallas"
    assert la.resolve("auto") == la.resolve("auto", block_causal=False) == "xla"
    assert la.resolve("xla", block_causal=True) == "xla"


def test_transformer_forward_and_gradients_with_the_gpu_kernel_equal_xla(monkeypatch):
    """The DiT's "pallas" attention routed to the Triton kernel (interpreted): same outputs and gradients."""
    from sana_jax.training.step import loss_and_grads
    from sana_jax.training.tasks import make_task
    from sana_jax.testing.training import load_config, null_text, random_batch

    def interpreted(*a, **kw):
        return linear_attention_pallas_gpu(*a, interpret=True, **kw)

    monkeypatch.setattr(la, "pallas_kernel", lambda: interpreted)
    tasks = {impl: make_task(load_config("tiny_smoke", **{"model.attention_implementation": impl,
                                                          "model.scan_layers": False,
                                                          "objective.block_frames": 2}), null_text(8, 16))
             for impl in ("xla", "pallas")}
    batch = random_batch(2, (4, 8, 8, 4), 8, 16)
    params = nn.meta.unbox(tasks["xla"].init(jax.random.PRNGKey(0), batch))
    got = {impl: jax.jit(lambda p, b, task=task: loss_and_grads(task, p, b, jax.random.PRNGKey(1)))(params, batch)
           for impl, task in tasks.items()}
    assert float(got["pallas"][0][0]) == pytest.approx(float(got["xla"][0][0]), rel=1e-5)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got["pallas"][1]),
                            jax.tree_util.tree_leaves(got["xla"][1])):
        assert rel_err(a, b) < 1e-5, jax.tree_util.keystr(path)


def test_sequence_sharded_gpu_kernel_equals_unsharded_op():
    rng = np.random.default_rng(0)
    b, n, h, d = 2, 64, 4, 8
    q, k, v = (rng.normal(size=(b, n, h, d)).astype(np.float32) for _ in range(3))
    theta = rng.uniform(0, 3, size=(n, d // 2)).repeat(2, axis=1)
    rope = (np.cos(theta).astype(np.float32), np.sin(theta).astype(np.float32))
    want = linear_attention_xla(q, k, v, rope, chunk_size=4)
    mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "sequence"))
    tok = NamedSharding(mesh, P("data", "sequence", None, None))
    q, k, v = (jax.device_put(x, tok) for x in (q, k, v))

    def attend(*a, **kw):
        return linear_attention_pallas_gpu(*a, interpret=True, **kw)

    out = jax.jit(lambda q, k, v: sharded_linear_attention(attend, q, k, v, rope, mesh=mesh, chunk_size=4))(q, k, v)
    assert rel_err(out, want) < 1e-5
