"""The Linear DiT with the Pallas linear-attention kernel (interpret mode on CPU) equals the XLA implementation:
forward (bidirectional, block-causal, block by block with a cache), training gradients, and a sharded step."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import numpy as np
import pytest

from sana_jax.testing.numerics import rel_err
from sana_jax.models.transformer import init_cache
from sana_jax.training import mesh as mesh_lib
from sana_jax.training.state import learning_rate, make_optimizer
from sana_jax.training.step import ShardedStep, loss_and_grads
from sana_jax.training.tasks import make_task
from sana_jax.testing.training import load_config, null_text, random_batch

LATENTS = (4, 8, 8, 4)
TEXT = (8, 16)


def _tasks(**overrides):
    made = {}
    for impl in ("xla", "pallas"):
        config = load_config("tiny_smoke", **{"model.attention_implementation": impl, "model.scan_layers": False,
                                              **overrides})
        made[impl] = make_task(config, null_text(*TEXT))
    return made


@pytest.mark.parametrize("blocks", [None, (2, 2)])
def test_transformer_forward_with_pallas_equals_xla(blocks):
    tasks = _tasks()
    batch = random_batch(2, LATENTS, *TEXT)
    params = nn.meta.unbox(tasks["xla"].init(jax.random.PRNGKey(0), batch))
    t = np.array([[300.0, 300.0, 700.0, 700.0], [10.0, 10.0, 990.0, 990.0]], np.float32)
    outs = {impl: np.asarray(task.module.apply({"params": params}, batch["latents"], t, batch["text_embeds"],
                                               batch["text_mask"], block_sizes=blocks))
            for impl, task in tasks.items()}
    assert rel_err(outs["pallas"], outs["xla"]) < 1e-5


def test_block_by_block_with_a_cache_with_pallas_equals_xla():
    tasks = _tasks()
    batch = random_batch(1, LATENTS, *TEXT)
    params = nn.meta.unbox(tasks["xla"].init(jax.random.PRNGKey(0), batch))
    results = {}
    for impl, task in tasks.items():
        cache = init_cache(task.config, 1, 4, 4)
        outs = []
        for start in (0, 2):
            out, cache = task.module.apply({"params": params}, batch["latents"][:, start:start + 2],
                                           np.array([500.0], np.float32), batch["text_embeds"], batch["text_mask"],
                                           cache=cache, frame_offset=start)
            outs.append(np.asarray(out))
        results[impl] = (np.concatenate(outs, 1), jax.tree_util.tree_map(np.asarray, cache))
    assert rel_err(results["pallas"][0], results["xla"][0]) < 1e-5
    for a, b in zip(jax.tree_util.tree_leaves(results["pallas"][1]), jax.tree_util.tree_leaves(results["xla"][1])):
        assert rel_err(a, b) < 1e-5


def test_training_gradients_with_pallas_equal_xla():
    tasks = _tasks(**{"objective.block_frames": 2, "objective.i2v_prob": 0.5})
    batch = random_batch(2, LATENTS, *TEXT)
    params = nn.meta.unbox(tasks["xla"].init(jax.random.PRNGKey(0), batch))
    got = {impl: jax.jit(functools.partial(loss_and_grads, task))(params, batch, jax.random.PRNGKey(1))
           for impl, task in tasks.items()}
    assert float(got["pallas"][0][0]) == pytest.approx(float(got["xla"][0][0]), rel=1e-5)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got["pallas"][1]),
                            jax.tree_util.tree_leaves(got["xla"][1])):
        assert rel_err(a, b) < 1e-5, jax.tree_util.keystr(path)


@pytest.mark.slow
def test_sharded_step_with_pallas_under_shard_map_equals_xla():
    """batch over data, heads over tensor, frames over sequence: the kernel runs per device in shard_map."""
    tasks = _tasks()
    batch = random_batch(8, LATENTS, *TEXT)
    example = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in batch.items()}
    config = load_config("tiny_smoke")
    mesh = mesh_lib.make_mesh(dict(data=2, tensor=2, sequence=2))
    grads = {}
    for impl, task in tasks.items():
        program = ShardedStep(task, make_optimizer(config.optim), learning_rate(config.optim), mesh,
                              mesh_lib.DEFAULT_RULES, example, seed=0)
        state = program.init()
        (loss, _), g = program.grads(state.params, jax.device_put(batch, program.batch_shardings),
                                     jax.random.PRNGKey(2))
        grads[impl] = (float(loss), jax.device_get(g))
    assert grads["pallas"][0] == pytest.approx(grads["xla"][0], rel=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(grads["pallas"][1]), jax.tree_util.tree_leaves(grads["xla"][1])):
        assert rel_err(a, b) < 1e-5
