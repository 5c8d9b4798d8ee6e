"""The Pallas linear attention (TPU interpreter on CPU) against a float64 NumPy formula and the XLA reference."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax._src.pallas.mosaic.interpret import interpret_pallas_call
from jax.experimental.pallas import tpu as pltpu

from sana_jax.kernels.linear_attention.pallas_mosaic_tpu import linear_attention_pallas
from sana_jax.kernels.linear_attention.reference import linear_attention_xla
from sana_jax.testing.linear_attention import assert_matches_references, make_inputs, numpy_reference
from sana_jax.testing.linear_attention import run_with_state as _run
from sana_jax.testing.numerics import rel_err


# (seed, B, N, H, d, d_v, chunk_size, rope, initial_state, max_tile): odd N, chunks not dividing N, runs split
# into several tiles (max_tile < run), chunk_size >= N (one run).
CASES = [  # seed, batch, N, heads, d, d_v, chunk_size, rope, initial state, max tile rows
    (0, 2, 37, 2, 8, 8, None, False, True, 16),
    (2, 2, 45, 2, 16, 12, 20, True, True, 16),
    (3, 3, 23, 1, 8, 16, 7, True, False, 512),
]


@pytest.mark.parametrize("case", CASES)
def test_forward_state_and_vjp_match_float64_numpy_and_xla(case):
    *shape, max_tile = case
    assert_matches_references(linear_attention_pallas, *shape, max_tile=max_tile)


def test_output_cotangent_alone_matches_xla_without_state():
    """return_state=False: only the output's cotangent flows; the state's zero cotangent is handled."""
    q, k, v, tables, _ = make_inputs(5, 2, 29, 2, 8, 8, rope=True, initial_state=False)
    def loss_p(q, k, v):
        return jnp.sum(jnp.sin(linear_attention_pallas(q, k, v, tables, chunk_size=6)))

    def loss_x(q, k, v):
        return jnp.sum(jnp.sin(linear_attention_xla(q, k, v, tables, chunk_size=6)))

    for g, gx in zip(jax.grad(loss_p, (0, 1, 2))(q, k, v), jax.grad(loss_x, (0, 1, 2))(q, k, v)):
        assert rel_err(g, gx) < 1e-5


def test_bf16_inputs_accumulate_in_fp32():
    q, k, v, tables, state = make_inputs(6, 2, 33, 2, 16, 16, rope=True, initial_state=True, dtype=jnp.bfloat16)
    out, (s, z) = _run(linear_attention_pallas, q, k, v, tables, 8, state)
    out_x = _run(linear_attention_xla, q, k, v, tables, 8, state)[0]
    out_np, (s_np, _) = numpy_reference(q, k, v, tables, 8, state, 1e-15)
    assert out.dtype == jnp.bfloat16 and s.dtype == jnp.float32
    # bf16 output rounding (2^-9) is the only loss: sums and the state are fp32.
    assert rel_err(out, out_np) < 5e-3
    assert rel_err(out, out_x) < 5e-3
    assert rel_err(s, s_np) < 1e-5
    grads = jax.grad(lambda q, k, v: jnp.sum(linear_attention_pallas(q, k, v, tables, chunk_size=8)
                                             .astype(jnp.float32)), (0, 1, 2))(q, k, v)
    grads_x = jax.grad(lambda q, k, v: jnp.sum(linear_attention_xla(q, k, v, tables, chunk_size=8)
                                               .astype(jnp.float32)), (0, 1, 2))(q, k, v)
    for g, gx in zip(grads, grads_x):
        assert g.dtype == jnp.bfloat16
        assert rel_err(g, gx) < 1e-2


def test_no_races_or_uninitialized_reads_under_tpu_interpreter(monkeypatch):
    detectors = []

    class RecordingRaceDetection(interpret_pallas_call.RaceDetectionState):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            detectors.append(self)

    # Each pallas_call makes its own detector; keep them all, not only the last one left in the module.
    monkeypatch.setattr(interpret_pallas_call, "RaceDetectionState", RecordingRaceDetection)
    q, k, v, tables, state = make_inputs(7, 2, 21, 2, 8, 8, rope=True, initial_state=True)
    params = pltpu.InterpretParams(detect_races=True, uninitialized_memory="nan")
    try:
        with pltpu.force_tpu_interpret_mode(params):
            def loss(q, k, v, s0, z0):
                out, (s, z) = _run(linear_attention_pallas, q, k, v, tables, 4, (s0, z0), max_tile=16)
                return jnp.sum(out ** 2) + jnp.sum(s) + jnp.sum(z)

            value, grads = jax.value_and_grad(loss, (0, 1, 2, 3, 4))(q, k, v, *state)
            jax.block_until_ready(grads)
    finally:
        pltpu.reset_tpu_interpret_mode_state()
    assert len(detectors) >= 4  # two forward and two backward kernels ran
    assert not any(det.races_found for det in detectors)
    # "nan" fills uninitialised buffers: a read of one would poison the results.
    assert np.isfinite(float(value)) and all(np.isfinite(np.asarray(g)).all() for g in grads)


def test_argument_errors_and_gpu_refusal(monkeypatch):
    q, k, v, _, _ = make_inputs(8, 1, 8, 1, 8, 8, rope=False, initial_state=False)
    with pytest.raises(ValueError, match="same shape"):
        linear_attention_pallas(q, k[:, :4], v)
    with pytest.raises(ValueError, match="chunk_size"):
        linear_attention_pallas(q, k, v, chunk_size=0)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    with pytest.raises(NotImplementedError, match="Mosaic-TPU kernel; on GPU"):
        linear_attention_pallas(q, k, v)


def test_generic_hlo_interpreter_matches_xla():
    """interpret=True (the backend-independent interpreter) runs the same kernels."""
    q, k, v, tables, state = make_inputs(9, 2, 17, 1, 8, 8, rope=True, initial_state=True)
    out, (s, z) = _run(linear_attention_pallas, q, k, v, tables, 6, state, interpret=True)
    out_x, (s_x, z_x) = _run(linear_attention_xla, q, k, v, tables, 6, state)
    for got, ref in ((out, out_x), (s, s_x), (z, z_x)):
        assert rel_err(got, ref) < 1e-5
