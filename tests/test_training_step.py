"""A train step sharded over each mesh axis (and a combined mesh) equals the unsharded step."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import numpy as np
import pytest

from sana_jax.training import mesh as mesh_lib
from sana_jax.training.state import init_state, learning_rate, make_optimizer
from sana_jax.training.step import ShardedStep, loss_and_grads, train_step
from sana_jax.training.tasks import make_task
from sana_jax.testing.training import load_config, null_text, random_batch

LATENTS = (8, 8, 8, 4)  # 8 latent frames so the sequence axis can take all 8 devices
TEXT = (8, 16)


def _setup(**overrides):
    config = load_config("tiny_smoke", **{"optim.ema_decay": 0.9, **overrides})
    task = make_task(config, null_text(*TEXT))
    optimizer = make_optimizer(config.optim)
    batch = random_batch(8, LATENTS, *TEXT)
    example = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in batch.items()}
    return config, task, optimizer, batch, example


@functools.lru_cache(maxsize=None)
def _unsharded(combined: bool):
    """Reference: plain jit on one device, no mesh, no logical rules (computed once per objective)."""
    config, task, optimizer, batch, _ = _setup(**(COMBINED if combined else {}))
    state = jax.jit(lambda: nn.meta.unbox(init_state(task, optimizer, batch, config.seed, True)))()
    rng = jax.random.fold_in(state.rng, state.step)
    (loss, _), grads = jax.jit(functools.partial(loss_and_grads, task))(state.params, batch, rng)
    step = jax.jit(functools.partial(train_step, task=task, optimizer=optimizer,
                                     schedule=learning_rate(config.optim), ema_decay=0.9))
    new, metrics = step(state, batch)
    return state, loss, grads, new, metrics


def _close(a, b, what):
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-5,
                                   err_msg=f"{what} {jax.tree_util.keystr(path)}")


# The combined mesh also runs the block-causal (diffusion forcing) + image-to-video objective.
COMBINED = {"objective.block_frames": 2, "objective.i2v_prob": 0.5,
            "objective.block_modes": dict(incremental=0.5, teacher_forcing_clean=0.5)}
MESHES = {
    "data": dict(data=8),
    "fsdp": dict(fsdp=8),
    "tensor": dict(tensor=8),
    "sequence": dict(sequence=8),
    "combined": dict(data=2, fsdp=2, tensor=1, sequence=2),
}


# One axis at a time is the slow tier; the combined mesh (data, fsdp and sequence at once) runs by default.
@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.slow) if name != "combined" else name
                                  for name in MESHES])
def test_sharded_step_equals_unsharded_step(name):
    config, task, optimizer, batch, example = _setup(**(COMBINED if name == "combined" else {}))
    state0, loss, grads, new_ref, metrics_ref = _unsharded(name == "combined")

    mesh = mesh_lib.make_mesh(MESHES[name])
    program = ShardedStep(task, optimizer, learning_rate(config.optim), mesh, mesh_lib.DEFAULT_RULES, example,
                          seed=config.seed, ema_decay=0.9)
    state = program.init()
    _close(state.params, state0.params, "initial params")
    sharded_batch = jax.device_put(batch, program.batch_shardings)
    rng = jax.random.fold_in(state.rng, state.step)
    (s_loss, _), s_grads = program.grads(state.params, sharded_batch, rng)
    np.testing.assert_allclose(float(s_loss), float(loss), rtol=1e-5)
    _close(s_grads, grads, "grad")

    new, metrics = program(state, sharded_batch)
    np.testing.assert_allclose(float(metrics["loss"]), float(metrics_ref["loss"]), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["grad_norm"]), float(metrics_ref["grad_norm"]), rtol=1e-5)
    _close(new.params, new_ref.params, "updated param")
    _close(new.ema_params, new_ref.ema_params, "ema param")
    _close(new.opt_state, new_ref.opt_state, "optimiser state")

    # The step's outputs keep the intended layout, so the next step takes them without resharding or retracing.
    for out, want in zip(jax.tree_util.tree_leaves(new), jax.tree_util.tree_leaves(program.state_shardings)):
        assert out.sharding.is_equivalent_to(want, out.ndim)
    new, _ = program(new, sharded_batch)
    assert program.traces == 1


def test_fsdp_divides_every_embed_param_and_data_replicates_them():
    config, task, optimizer, batch, example = _setup()
    for shape, parts in ((dict(fsdp=8), 8), (dict(data=8), 1)):
        program = ShardedStep(task, optimizer, learning_rate(config.optim), mesh_lib.make_mesh(shape),
                              mesh_lib.DEFAULT_RULES, example, seed=0)
        state = program.init()
        kernel = state.params["transformer_blocks"]["ff"]["conv_inverted"]["kernel"]  # (layers, embed, mlp)
        assert kernel.addressable_shards[0].data.shape == (kernel.shape[0], kernel.shape[1] // parts,
                                                           kernel.shape[2])
        mu = state.opt_state[1][0].mu["transformer_blocks"]["ff"]["conv_inverted"]["kernel"]
        assert mu.addressable_shards[0].data.shape == kernel.addressable_shards[0].data.shape
        assert state.step.sharding.is_fully_replicated


def test_batch_not_divisible_by_the_data_axis_is_an_error_naming_it():
    config, task, optimizer, batch, _ = _setup()
    example = {k: jax.ShapeDtypeStruct((6, *v.shape[1:]), v.dtype) for k, v in batch.items()}
    with pytest.raises(ValueError, match="batch 'latents' axis 0.*size 6.*data"):
        ShardedStep(task, optimizer, learning_rate(config.optim), mesh_lib.make_mesh(dict(data=4, fsdp=2)),
                    mesh_lib.DEFAULT_RULES, example, seed=0)


def test_mesh_needs_exactly_the_devices_it_names():
    with pytest.raises(ValueError, match="needs 16 devices; 8 are available"):
        mesh_lib.make_mesh(dict(data=4, fsdp=4))
    with pytest.raises(ValueError, match="unknown"):
        mesh_lib.make_mesh(dict(pipeline=2))
    assert mesh_lib.make_mesh(dict(data=-1, tensor=2)).shape == {"data": 4, "fsdp": 1, "tensor": 2, "sequence": 1}


def test_published_480p_recipe_builds_abstractly_with_fsdp_over_eight_devices():
    config = load_config("sana_video_2b_480p", **{"data.path": "data"})  # the file leaves the path to the command line
    task = make_task(config, (np.zeros((300, 2304), np.float32), np.ones((300,), np.int32)))
    example = task.example_batch(8, (21, 60, 104, 16), 300)
    optimizer = make_optimizer(config.optim)
    program = ShardedStep(task, optimizer, learning_rate(config.optim), mesh_lib.make_mesh(dict(config.mesh)),
                          mesh_lib.DEFAULT_RULES, example, seed=0)
    count = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(program.abstract.params))
    print(f"SANA-Video 2B 480p: {count:,} trainable params")
    assert count == 2_056_862_144
    assert program.mesh.shape["fsdp"] == 8 and task.module.remat_policy == "full"
    assert task.module.dtype == np.dtype("bfloat16") and task.module.param_dtype == np.dtype("float32")
    leaves = zip(jax.tree_util.tree_leaves(program.abstract.params),
                 jax.tree_util.tree_leaves(program.state_shardings.params))
    sizes = [(int(np.prod(a.shape)), "fsdp" in jax.tree_util.tree_leaves(tuple(s.spec))) for a, s in leaves]
    assert sum(n for n, fsdp in sizes if fsdp) > 0.99 * count  # ZeRO-3: all but norms and small vectors divided
    schedule = learning_rate(config.optim)
    assert float(schedule(0)) == 0.0 and float(schedule(250)) == pytest.approx(2.5e-5)
    assert float(schedule(500)) == pytest.approx(5e-5) and float(schedule(10_000)) == pytest.approx(5e-5)


def test_init_from_a_component_folder_starts_from_its_weights(tmp_path):
    from sana_jax import load_component, save_component
    from sana_jax.components import Component

    config, task, optimizer, batch, example = _setup()
    unscanned = task.module.clone(scan_layers=False)
    flat = nn.meta.unbox(unscanned.init(jax.random.PRNGKey(7), batch["latents"][:1], np.zeros((1,), np.float32),
                                        batch["text_embeds"][:1], batch["text_mask"][:1]))["params"]
    save_component(Component(task.config.class_name, task.config, unscanned, flat), tmp_path / "transformer")
    config.model.init_from = str(tmp_path / "transformer")
    resumed = make_task(config, null_text(*TEXT))
    program = ShardedStep(resumed, optimizer, learning_rate(config.optim), mesh_lib.make_mesh(dict(fsdp=8)),
                          mesh_lib.DEFAULT_RULES, example, seed=0)
    state = program.init()
    got = state.params["transformer_blocks"]["attn1"]["to_q"]["kernel"]
    for i in range(task.config.num_layers):
        np.testing.assert_array_equal(np.asarray(got[i]), flat[f"transformer_blocks_{i}"]["attn1"]["to_q"]["kernel"])
    assert load_component(tmp_path / "transformer").config == task.config


def test_bf16_compute_keeps_fp32_master_params_and_the_fp32_loss():
    losses = {}
    for dtype in ("float32", "bfloat16"):
        config, task, optimizer, batch, example = _setup(**{"model.dtype": dtype})
        state = jax.jit(lambda: nn.meta.unbox(init_state(task, optimizer, batch, config.seed, True)))()
        step = jax.jit(functools.partial(train_step, task=task, optimizer=optimizer,
                                         schedule=learning_rate(config.optim), ema_decay=0.9))
        state, metrics = step(state, batch)
        assert {x.dtype for x in jax.tree_util.tree_leaves(state.params)} == {np.dtype("float32")}
        losses[dtype] = float(metrics["loss"])
    assert losses["bfloat16"] == pytest.approx(losses["float32"], rel=2e-2)


def test_sequence_sharded_forward_moves_only_attention_sums_and_frame_halos():
    """Sharding video frames needs no gather: linear attention all-reduces its (d x d) sums and the FFN's temporal
    conv swaps one frame with each neighbour (collective-permute). An all-gather or all-to-all would mean some
    layer re-lays out the whole sequence."""
    import re

    config, task, optimizer, batch, example = _setup(**{"model.scan_layers": False})
    program = ShardedStep(task, optimizer, learning_rate(config.optim), mesh_lib.make_mesh(dict(sequence=8)),
                          mesh_lib.DEFAULT_RULES, example, seed=0)
    state = program.init()
    with program.context():
        forward = jax.jit(lambda p, b: task.loss(p, b, jax.random.PRNGKey(0))[0],
                          in_shardings=(program.state_shardings.params, program.batch_shardings))
        hlo = forward.lower(state.params, jax.device_put(batch, program.batch_shardings)).compile().as_text()
    kinds = re.findall(r" (all-reduce|all-gather|all-to-all|collective-permute|reduce-scatter)(?:-start)?\(", hlo)
    assert "all-gather" not in kinds and "all-to-all" not in kinds, sorted(set(kinds))
    assert kinds.count("collective-permute") >= 2 * task.config.num_layers and "all-reduce" in kinds


def test_cosine_decay_after_warmup_matches_torch_schedulers():
    """``optim.decay_steps``: warm-up then cosine to 0, against torch's LinearLR + CosineAnnealingLR chained by
    SequentialLR (an independent reference), and 0 past the decay."""
    import torch

    from sana_jax.training import recipes

    optim = recipes.adamw(lr=5e-4, warmup_steps=10, decay_steps=40)
    schedule = learning_rate(optim)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=5e-4)
    warm = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1e-12, end_factor=1.0, total_iters=10)
    cos = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=40, eta_min=0.0)
    chained = torch.optim.lr_scheduler.SequentialLR(opt, [warm, cos], milestones=[10])
    want = []
    for _ in range(50):
        want.append(opt.param_groups[0]["lr"])
        opt.step()
        chained.step()
    got = [float(schedule(k)) for k in range(50)]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-12)
    assert float(schedule(50)) == 0.0 and float(schedule(500)) == 0.0
