"""The benchmark scripts' own logic: what the memory plan reads from a compiled program."""

import os
import sys

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.memory_plan import weight_copies


def _loop_program(weight_dtype):
    def run(w, x):   # the activations in the weights' dtype: any conversion is XLA's, not the program's
        return jax.lax.fori_loop(0, 4, lambda i, x: jnp.tanh(jnp.dot(x, w)), x)

    w = jax.ShapeDtypeStruct((96, 96), weight_dtype)
    x = jax.ShapeDtypeStruct((8, 96), weight_dtype)
    return jax.jit(run).lower(w, x).compile().as_text()


def test_weight_copies_counts_the_cpus_f32_copy_of_a_bf16_weight_and_nothing_for_an_f32_one():
    assert weight_copies(_loop_program(jnp.bfloat16)) == 96 * 96 * 4
    assert weight_copies(_loop_program(jnp.float32)) == 0
