"""linear_attention (XLA) against a float64 NumPy formula written token by token from the definition."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sana_jax.testing.linear_attention import token_reference
from sana_jax.testing.numerics import rel_err
from sana_jax.kernels import linear_attention
from sana_jax.nn import VideoRope


def _inputs(seed, b, n, h, d):
    ks = jax.random.split(jax.random.key(seed), 3)
    return tuple(jax.random.normal(kk, (b, n, h, d), jnp.float32) for kk in ks)


def _rope(n, d):
    # A real (F, H, W) grid whose flattened length is n: (n, 1, 1) keeps every position distinct in time.
    return VideoRope(d, max_len=max(n, 8))((n, 1, 1))


@pytest.mark.parametrize("b,n,h,d", [(1, 7, 1, 8), (2, 33, 3, 12), (2, 20, 2, 14)])
@pytest.mark.parametrize("use_rope", [False, True])
def test_bidirectional_equals_float64_reference(b, n, h, d, use_rope):
    q, k, v = _inputs(n, b, n, h, d)
    rope = _rope(n, d) if use_rope else None
    out, (s, z) = linear_attention(q, k, v, rope, return_state=True)
    ref, s_ref, z_ref = token_reference(q, k, v, *(rope or (None, None)))
    assert rel_err(out, ref) < 1e-5
    assert rel_err(s, s_ref) < 1e-5 and rel_err(z, z_ref) < 1e-5


@pytest.mark.parametrize("n,chunk", [(24, 8), (23, 8), (10, 3), (9, 1), (5, 16)])
def test_block_causal_scan_equals_masked_reference(n, chunk):
    b, h, d = 2, 2, 10
    q, k, v = _inputs(100 + n, b, n, h, d)
    rope = _rope(n, d)
    out, (s, z) = linear_attention(q, k, v, rope, chunk_size=chunk, return_state=True)
    ref, s_ref, z_ref = token_reference(q, k, v, *rope, chunk_size=chunk)
    assert rel_err(out, ref) < 1e-5
    assert rel_err(s, s_ref) < 1e-5 and rel_err(z, z_ref) < 1e-5


def test_block_causal_from_initial_state_equals_reference_and_continues_a_split_sequence():
    b, n, h, d, chunk = 2, 18, 2, 8, 6
    q, k, v = _inputs(7, b, n, h, d)
    rope = _rope(n, d)
    full, (s_full, z_full) = linear_attention(q, k, v, rope, chunk_size=chunk, return_state=True)
    # Run the first 12 tokens, then the last 6 from the carried state: the same as the whole sequence at once.
    first, state = linear_attention(q[:, :12], k[:, :12], v[:, :12], tuple(t[:12] for t in rope), chunk_size=chunk,
                                    return_state=True)
    second, (s2, z2) = linear_attention(q[:, 12:], k[:, 12:], v[:, 12:], tuple(t[12:] for t in rope),
                                        chunk_size=chunk, initial_state=state, return_state=True)
    np.testing.assert_allclose(np.concatenate([first, second], 1), full, rtol=1e-5, atol=1e-6)
    assert rel_err(s2, s_full) < 1e-6 and rel_err(z2, z_full) < 1e-6
    # And against float64 with a random (not carried) initial state.
    s0 = jax.random.uniform(jax.random.key(1), (b, h, d, d))
    z0 = jax.random.uniform(jax.random.key(2), (b, h, d))
    out, (s, z) = linear_attention(q, k, v, rope, chunk_size=chunk, initial_state=(s0, z0), return_state=True)
    ref, s_ref, z_ref = token_reference(q, k, v, *rope, chunk_size=chunk, s0=s0, z0=z0)
    assert rel_err(out, ref) < 1e-5 and rel_err(s, s_ref) < 1e-5 and rel_err(z, z_ref) < 1e-5


def test_bf16_inputs_keep_fp32_sums_and_return_bf16():
    q, k, v = _inputs(3, 1, 40, 2, 8)
    out = linear_attention(q.astype(jnp.bfloat16), k.astype(jnp.bfloat16), v.astype(jnp.bfloat16))
    assert out.dtype == jnp.bfloat16
    ref, _, _ = token_reference(*(np.asarray(a.astype(jnp.bfloat16), np.float32) for a in (q, k, v)))
    assert rel_err(np.asarray(out, np.float32), ref) < 1e-2  # bf16 output rounding only


@pytest.mark.parametrize("kwargs,match", [
    (dict(chunk_size=0), "chunk_size"),
    (dict(implementation="cuda"), "implementation"),
    (dict(initial_state=(np.zeros((1, 1, 8, 8)), np.zeros((1, 2, 8)))), "initial_state"),
])
def test_bad_arguments_are_named(kwargs, match):
    q, k, v = _inputs(0, 1, 4, 1, 8)
    with pytest.raises(ValueError, match=match):
        linear_attention(q, k, v, **kwargs)


def test_auto_picks_xla_on_cpu_and_pallas_only_when_asked():
    from sana_jax.kernels.linear_attention import resolve

    assert resolve("auto") == "xla" and resolve("pallas") == "pallas" and resolve("xla") == "xla"
    assert resolve("auto", block_causal=True) == "xla"
