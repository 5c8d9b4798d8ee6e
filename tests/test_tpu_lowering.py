"""TPU readiness without a TPU: the Mosaic linear-attention kernel's forward and backward, and the sharded DiT
training step that runs it, lower for TPU on this CPU (what a TPU compiles next). Pallas reads the TPU generation
from `tpu_info.get_device_kind()`; the tests report a TPU v5p there and a TPU default backend to the kernel's own
choice of interpret mode, and lower with ``lowering_platforms=("tpu",)``."""

from __future__ import annotations


import jax
import jax.numpy as jnp
import pytest
from jax._src.pallas.mosaic import tpu_info

from sana_jax.kernels.linear_attention.pallas_mosaic_tpu import linear_attention_pallas
from sana_jax.testing.training import load_config, null_text, random_batch
from sana_jax.training import mesh as mesh_lib
from sana_jax.training.state import learning_rate, make_optimizer
from sana_jax.training.step import ShardedStep
from sana_jax.training.tasks import make_task

KERNEL = "tpu_custom_call"


@pytest.fixture
def as_tpu(monkeypatch):
    """Trace as on a TPU v5p: the kernel compiles (no interpreter) and Pallas sizes its tiles for that chip."""
    monkeypatch.setattr(tpu_info, "get_device_kind", lambda: "TPU v5p")
    monkeypatch.setattr(tpu_info, "get_num_device_cores", lambda: 1)
    monkeypatch.setattr(jax, "default_backend", lambda: "tpu")


# (tokens, block-causal run): the published 480p (21 x 30 x 52 latents, blocks of 3 latent frames) and 720p
# (11 x 22 x 40, LTX-2 VAE) layouts, block-causal and bidirectional; head dim 112 (2240 = 20 x 112)
LAYOUTS = [(32_760, 3 * 30 * 52), (32_760, None), (9_680, 3 * 22 * 40), (9_680, None)]


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
@pytest.mark.parametrize("tokens,run", LAYOUTS)
def test_the_kernel_lowers_for_tpu_forward_and_backward(as_tpu, tokens, run, dtype):
    d = 112
    q = jax.ShapeDtypeStruct((1, tokens, 2, d), dtype)
    rope = (jax.ShapeDtypeStruct((tokens, d), jnp.float32),) * 2

    def loss(q, k, v, rope):
        return jnp.sum(linear_attention_pallas(q, k, v, rope, chunk_size=run).astype(jnp.float32))

    forward = jax.jit(loss).trace(q, q, q, rope).lower(lowering_platforms=("tpu",)).as_text()
    backward = jax.jit(jax.grad(loss, (0, 1, 2))).trace(q, q, q, rope).lower(lowering_platforms=("tpu",)).as_text()
    assert forward.count(KERNEL) == 2, "the state and output kernels"
    assert backward.count(KERNEL) == 4, "forward's two, the query-gradient and key-gradient kernels"


def test_the_sharded_training_step_with_the_kernel_lowers_for_tpu(as_tpu):
    """batch over data, heads over tensor, frames over sequence (8 devices): the whole step (loss, gradients,
    AdamW, the kernel per device in shard_map) lowers for TPU with the kernel compiled in every layer."""
    config = load_config("tiny_smoke", **{"model.attention_implementation": "pallas", "model.scan_layers": False})
    task = make_task(config, null_text(8, 16))
    example = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in random_batch(8, (4, 8, 8, 4), 8, 16).items()}
    mesh = mesh_lib.make_mesh(dict(data=2, tensor=2, sequence=2))
    program = ShardedStep(task, make_optimizer(config.optim), learning_rate(config.optim), mesh,
                          mesh_lib.DEFAULT_RULES, example, seed=0)
    batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=program.batch_shardings[k])
             for k, v in example.items()}
    with program.context():
        traced = program._step.trace(program.abstract_sharded(), batch)
        text = traced.lower(lowering_platforms=("tpu",)).as_text()
    kernels = str(traced.jaxpr).count("pallas_call[")
    layers = sum(name.startswith("transformer_blocks_") for name in program.abstract.params)
    print(f"\n{kernels} Pallas kernels in the step's program ({layers} layers), {text.count(KERNEL)} Mosaic calls")
    assert layers >= 2 and kernels >= 4 * layers, "each layer's forward and backward kernels"
    assert text.count(KERNEL) == kernels, "every kernel compiled for TPU, none interpreted"
