"""LongSANA distillation: the DMD gradient against closed-form Gaussian scores, the training rollout against
``pipe.stream(sampler="few_step")``, exact resume and sharding of both new objectives, the long rollout's flat
memory, the resumable ODE-pair command, the student's export as a block-causal transformer folder."""

from __future__ import annotations

import functools
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sana_jax.components import load_component
from sana_jax.pipeline import SanaVideoPipeline
from sana_jax.pipeline.stream import block_sizes
from sana_jax.testing.pipelines import build_tiny_pipeline
from sana_jax.testing.training import distill_config, null_text, random_batch, tiny_dit_folder, tiny_prompt_cache
from sana_jax.training import distill
from sana_jax.training import mesh as mesh_lib
from sana_jax.training.config import TrainingConfigError, read_training_config
from sana_jax.training.export import export_run, restore_params
from sana_jax.training.state import init_state, learning_rate
from sana_jax.training.step import ShardedStep, loss_and_grads, train_step
from sana_jax.training.tasks import make_task
from sana_jax.training.trainer import train

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return tiny_dit_folder(tmp_path_factory.mktemp("teacher") / "transformer", seed=5)


# -- DMD against closed-form scores ----------------------------------------------------------------------------------

def _gaussian_x0(mean, var):
    """E[x0 | x_t] for x0 ~ N(mean, var I), x_t = (1 - s) x0 + s eps: the exact denoiser of Gaussian data."""
    def x0(xt, t):
        s = (t / 1000.0)[:, None, None, None, None]
        gain = (1 - s) * var / ((1 - s) ** 2 * var + s ** 2)
        return mean + gain * (xt - (1 - s) * mean)
    return x0


def _velocity(x0_fn):
    def v(xt, t):
        s = (t / 1000.0)[:, None, None, None, None]
        return (xt - x0_fn(xt, t)) / s
    return v


def test_dmd_generator_gradient_on_gaussians_equals_the_analytic_gradient():
    """Generator x = theta + z, z ~ N(0, I): its samples are N(theta, I) and the fake score is that Gaussian's
    exact denoiser; the real score is CFG over two Gaussians. With equal variances the denoisers differ by a
    constant: x0_fake - x0_real = (theta - mu_real) s^2 / ((1 - s)^2 + s^2), so the gradient of the DMD loss in
    theta is that over the normaliser mean|x - x0_real|, times the weight, over B * N."""
    rng = np.random.default_rng(0)
    shape = (3, 2, 2, 2, 4)
    theta = jnp.asarray(rng.normal(size=shape[1:]), jnp.float32)
    mu_c, mu_u = (jnp.asarray(rng.normal(size=shape[1:]), jnp.float32) for _ in range(2))
    w = 3.0
    mu_real = mu_u + w * (mu_c - mu_u)
    z, eps = (jnp.asarray(rng.normal(size=shape), jnp.float32) for _ in range(2))
    t = jnp.asarray([50.0, 500.0, 930.0])
    weight = jnp.ones((1, 2, 1, 1, 1)).at[:, 0].set(0.0)   # frame 0: context, not scored

    def real(xt, tt):  # CFG of two exact denoisers, as velocities
        u, c = _velocity(_gaussian_x0(mu_u, 1.0))(xt, tt), _velocity(_gaussian_x0(mu_c, 1.0))(xt, tt)
        return u + w * (c - u)

    def loss(th):
        return distill.dmd_generator_loss(th + z, eps, t, real, _velocity(_gaussian_x0(th, 1.0)), weight)

    got = jax.grad(loss)(theta)

    x = theta + z
    s = (t / 1000.0)[:, None, None, None, None]
    xt = (1 - s) * x + s * eps
    x0_real = _gaussian_x0(mu_real, 1.0)(xt, t)
    norm = jnp.sum(jnp.abs(x - x0_real) * weight, axis=(1, 2, 3, 4), keepdims=True) / (shape[2] * shape[3] * shape[4])
    diff = (theta - mu_real) * s ** 2 / ((1 - s) ** 2 + s ** 2)
    want = jnp.sum(diff / norm * weight, axis=0) / (shape[0] * shape[2] * shape[3] * shape[4])
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-7)


def test_dmd_descent_moves_a_gaussian_generator_onto_the_real_mean():
    mu = jnp.asarray([2.0, -1.0, 0.5, 3.0]).reshape(1, 1, 1, 4)
    theta = jnp.zeros((1, 1, 1, 4))
    key = jax.random.key(0)

    @jax.jit
    def step(theta, key):
        kz, ke, kt = jax.random.split(key, 3)
        z = jax.random.normal(kz, (8, 1, 1, 1, 4))
        t = distill.dmd_timesteps(kt, 8, 5.0, 20.0, 980.0)
        g = jax.grad(lambda th: distill.dmd_generator_loss(
            th + z, jax.random.normal(ke, z.shape), t, _velocity(_gaussian_x0(mu, 1.0)),
            _velocity(_gaussian_x0(th, 1.0)), jnp.ones((1, 1, 1, 1, 1))))(theta)
        return theta - 2.0 * g

    for i in range(300):
        theta = step(theta, jax.random.fold_in(key, i))
    np.testing.assert_allclose(np.asarray(theta), np.asarray(mu), atol=0.1)


def test_dmd_timesteps_follow_the_shifted_grid_clipped():
    t = np.asarray(distill.dmd_timesteps(jax.random.key(1), 20000, 5.0, 20.0, 980.0))
    assert t.min() == 20.0 and t.max() == 980.0
    u = np.arange(1000) / 1000
    grid = np.clip(1000 * 5 * u / (1 + 4 * u), 20, 980)
    assert np.abs(t[:, None] - grid[None]).min(axis=1).max() < 1e-3   # every draw is a grid point
    np.testing.assert_allclose((t == 980.0).mean(), (grid == 980).mean(), atol=0.01)   # ~9% clip at 980


# -- the rollout is the stream ---------------------------------------------------------------------------------------

def test_training_rollout_equals_pipe_stream_few_step(tmp_path):
    build_tiny_pipeline(tmp_path / "pipe", seed=3)
    pipe = SanaVideoPipeline.from_pretrained(tmp_path / "pipe")
    shape = pipe.latent_shape(1, 32, 32, 29)  # 8 latent frames
    blocks = block_sizes(shape[1], 3)
    embeds, mask = pipe._conditioning("a red circle", "", False, 1, None, None, 300)
    streamed = [x for x, _ in pipe._streamer.run(embeds, mask, latent_shape=shape, blocks=blocks, seed=4,
                                                 sampler="few_step", schedule=None, guidance_scale=1.0, cfg=False,
                                                 image_latents=None)]
    last = 3
    module, params = pipe.transformer.module, pipe.transformer.params
    rolled = jax.jit(lambda p: distill.rollout(module, p, jax.random.key(4), embeds, mask, shape=shape,
                                               blocks=blocks, exits=jnp.full((len(blocks),), last),
                                               timesteps=(1000, 960, 889, 727)))(params)
    np.testing.assert_allclose(np.asarray(rolled), np.concatenate(streamed, axis=1), rtol=0, atol=1e-5)

    # An earlier exit step returns that step's prediction: the exit-0 sample is x0 predicted from pure noise.
    first = jax.jit(lambda p: distill.rollout(module, p, jax.random.key(4), embeds, mask, shape=shape,
                                              blocks=blocks[:1], exits=jnp.zeros((1,), jnp.int32),
                                              timesteps=(1000, 960, 889, 727)))(params)
    noise = jax.random.normal(jax.random.fold_in(jax.random.fold_in(jax.random.key(4), 0), 1_000_000),
                              (1, blocks[0], *shape[2:]))
    from sana_jax.models.transformer import init_cache
    cache = init_cache(pipe.transformer.config, 1, shape[2] // 2, shape[3] // 2, module.dtype)
    v, _ = module.apply({"params": params}, noise, jnp.full((1, blocks[0]), 1000.0), embeds, mask, cache=cache,
                        frame_offset=0)
    np.testing.assert_allclose(np.asarray(first), np.asarray(noise - v), rtol=0, atol=1e-5)


def test_rollout_gradient_flows_through_the_exit_step_only(teacher):
    """Exit step 1 of one block: the gradient is that of the step-1 prediction from x_1, where x_1 (the step-0
    prediction re-noised) is a constant — computed here by hand from the model."""
    task = make_task(distill_config("self_forcing", teacher), null_text(8, 16))
    module = task.module
    params = nn.meta.unbox(task.init(jax.random.PRNGKey(0), task.minimal_batch()))["generator"]
    batch = random_batch(2, (3, 4, 4, 4), 8, 16)
    embeds, mask = batch["text_embeds"], batch["text_mask"]
    shape = batch["latents"].shape
    key = jax.random.key(7)

    got = jax.grad(lambda p: jnp.sum(distill.rollout(module, p, key, embeds, mask, shape=shape, blocks=(3,),
                                                     exits=jnp.asarray([1]), timesteps=(1000, 960, 889, 727)) ** 2)
                   )(params)

    from sana_jax.models.transformer import init_cache
    cache = init_cache(module.config, 2, 2, 2, module.dtype)
    bkey = jax.random.fold_in(key, 0)

    def v(p, x, t):
        return module.apply({"params": p}, x, jnp.full(x.shape[:2], t), embeds, mask, cache=cache, frame_offset=0)[0]
    noise = jax.random.normal(jax.random.fold_in(bkey, 1_000_000), shape)
    x0 = noise - 1.0 * v(params, noise, 1000.0)
    x1 = 0.04 * x0 + 0.96 * jax.random.normal(jax.random.fold_in(bkey, 0), shape)
    want = jax.grad(lambda p: jnp.sum((x1 - 0.96 * v(p, x1, 960.0)) ** 2))(params)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-2, atol=2e-4,
                                   err_msg=jax.tree_util.keystr(path))
    assert any(np.abs(np.asarray(a)).max() > 0 for a in jax.tree_util.tree_leaves(got))


# -- whole runs: exact resume, export --------------------------------------------------------------------------------

def _losses(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return {row["step"]: row["loss"] for row in map(json.loads, f)}


@pytest.fixture(scope="module")
def ode_cache(tmp_path_factory, teacher):
    from sana_jax.training.ode_pairs import generate

    root = tmp_path_factory.mktemp("ode")
    prompts = tiny_prompt_cache(root / "prompts", count=8)
    generate(teacher, prompts, str(root / "pairs"), clips=16, block_frames=2, guidance=3.0, steps_per_level=2,
             batch_size=4, records_per_shard=8, progress=False)
    return str(root / "pairs"), prompts


# slow: the trainer's exact resume is in the default tier with the DiT objective (test_training_run.py), the ODE
# pairs' resume here (test_ode_pairs_resumed_after_an_interruption_equal_an_uninterrupted_run)
@pytest.mark.slow
@pytest.mark.parametrize("task", ["self_forcing", "ode_init"])
def test_twenty_steps_equal_ten_then_resume_then_ten_bit_for_bit(tmp_path, teacher, ode_cache, task):
    extra = {"log_every": 1, "checkpoint_every": 10, "batch_size": 8}
    if task == "ode_init":
        extra["data.path"] = ode_cache[0]
    else:
        extra["objective.generator_every"] = 3
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(distill_config(task, teacher, total_steps=20, **extra), str(straight), progress=False)
    assert train(distill_config(task, teacher, total_steps=10, **extra), str(resumed), progress=False)["step"] == 10
    assert train(distill_config(task, teacher, total_steps=20, **extra), str(resumed), progress=False)["step"] == 20
    a, b = _losses(straight), _losses(resumed)
    assert sorted(a) == sorted(b) == list(range(1, 21))
    assert all(a[s] == b[s] for s in a), {s: (a[s], b[s]) for s in a if a[s] != b[s]}
    for x, y in zip(jax.tree_util.tree_leaves(jax.device_get(restore_params(straight, ema=True)[1])),
                    jax.tree_util.tree_leaves(jax.device_get(restore_params(resumed, ema=True)[1]))):
        np.testing.assert_array_equal(x, y)

    if task == "self_forcing":  # the generator moved only on its turns; the teacher never
        with open(os.path.join(straight, "metrics.jsonl")) as f:
            rows = [json.loads(r) for r in f]
        assert [r["generator_step"] for r in rows[:6]] == [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]
        out = tmp_path / "student"
        export_run(str(straight), str(out), ema=True)
        student = load_component(out)
        assert student.class_name == "SanaVideoCausalTransformer3DModel"
        with open(out / "config.json") as f:
            assert json.load(f)["_class_name"] == "SanaVideoCausalTransformer3DModel"
        got = jax.tree_util.tree_leaves(student.params)
        want = jax.tree_util.tree_leaves(jax.device_get(restore_params(straight, ema=True)[1]))
        for x, y in zip(got, want):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_the_teacher_stays_frozen_and_the_critic_learns(tmp_path, teacher):
    config = distill_config("self_forcing", teacher)
    task = make_task(config, null_text(8, 16))
    optimizer = task.optimizer()
    batch = random_batch(4, (5, 4, 4, 4), 8, 16)
    state = jax.jit(lambda: nn.meta.unbox(init_state(task, optimizer, batch, 0, True)))()
    step = jax.jit(functools.partial(train_step, task=task, optimizer=optimizer,
                                     schedule=learning_rate(config.optim), ema_decay=0.9))
    before = jax.device_get(state.params)
    state, m0 = step(state, batch)             # step 0: the generator's turn
    mid = jax.device_get(state.params)
    state, m1 = step(state, batch)             # step 1: critic only
    after = jax.device_get(state.params)

    def changed(a, b):
        return any(not np.array_equal(x, y)
                   for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))
    assert float(m0["generator_step"]) == 1.0 and float(m1["generator_step"]) == 0.0
    assert changed(before["generator"], mid["generator"]) and not changed(mid["generator"], after["generator"])
    assert changed(before["critic"], mid["critic"]) and changed(mid["critic"], after["critic"])
    assert not changed(before["teacher"], after["teacher"])


# -- sharding, memory ------------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("long", [0, 3])
def test_sharded_self_forcing_step_equals_unsharded(teacher, long):
    config = distill_config("self_forcing", teacher, **{"objective.long_rollout_blocks": long})
    task = make_task(config, null_text(8, 16))
    optimizer = task.optimizer()
    batch = random_batch(8, (5, 4, 4, 4), 8, 16)
    example = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in batch.items()}
    state0 = jax.jit(lambda: nn.meta.unbox(init_state(task, optimizer, batch, config.seed, True)))()
    rng = jax.random.fold_in(state0.rng, state0.step)
    (loss, _), grads = jax.jit(functools.partial(loss_and_grads, task))(state0.params, batch, rng, 0)
    ref, ref_metrics = jax.jit(functools.partial(train_step, task=task, optimizer=optimizer,
                                                 schedule=learning_rate(config.optim), ema_decay=0.9))(state0, batch)

    mesh = mesh_lib.make_mesh(dict(data=2, fsdp=2, tensor=2, sequence=1))
    program = ShardedStep(task, optimizer, learning_rate(config.optim), mesh, mesh_lib.DEFAULT_RULES, example,
                          seed=config.seed, ema_decay=0.9)
    state = program.init()
    sharded = jax.device_put(batch, program.batch_shardings)
    (s_loss, _), s_grads = program.grads(state.params, sharded, rng, 0)
    np.testing.assert_allclose(float(s_loss), float(loss), rtol=1e-5)
    new, metrics = program(state, sharded)
    np.testing.assert_allclose(float(metrics["loss"]), float(ref_metrics["loss"]), rtol=1e-5)
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(new.params), jax.tree_util.tree_leaves(ref.params)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-5,
                                   err_msg=jax.tree_util.keystr(path))
    for x, y in zip(jax.tree_util.tree_leaves(s_grads), jax.tree_util.tree_leaves(grads)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-5)
    program(new, sharded)
    assert program.traces == 1


@pytest.mark.slow
def test_long_rollout_step_memory_does_not_grow_with_the_rollout_length(teacher):
    def temp_bytes(blocks):
        config = distill_config("self_forcing", teacher, **{"objective.long_rollout_blocks": blocks})
        task = make_task(config, null_text(8, 16))
        optimizer = task.optimizer()
        batch = random_batch(2, (5, 4, 4, 4), 8, 16)
        state = jax.eval_shape(lambda: nn.meta.unbox(init_state(task, optimizer, batch, 0, True)))
        step = jax.jit(functools.partial(train_step, task=task, optimizer=optimizer,
                                         schedule=learning_rate(config.optim)))
        return step.lower(state, batch).compile().memory_analysis().temp_size_in_bytes

    assert temp_bytes(2) == temp_bytes(40)


# -- the ODE pairs ---------------------------------------------------------------------------------------------------

def test_ode_pairs_resumed_after_an_interruption_equal_an_uninterrupted_run(tmp_path, teacher, ode_cache,
                                                                           monkeypatch):
    from sana_jax.training import ode_pairs
    from sana_jax.training.data.latent_cache import LatentCacheExamples, read_metadata

    pairs, prompts = ode_cache
    out = tmp_path / "pairs"
    calls = {"n": 0}
    from sana_jax.training.data import latent_cache

    real_write = latent_cache.LatentCacheWriter.write

    def failing_write(self, **kw):  # interrupt after the first shard and a half
        calls["n"] += 1
        if calls["n"] == 13:
            raise KeyboardInterrupt
        return real_write(self, **kw)

    with monkeypatch.context() as patch:
        patch.setattr(latent_cache.LatentCacheWriter, "write", failing_write)
        with pytest.raises(KeyboardInterrupt):
            ode_pairs.generate(teacher, prompts, str(out), clips=16, block_frames=2, guidance=3.0, steps_per_level=2,
                               batch_size=4, records_per_shard=8, progress=False)
    assert not out.exists() and (tmp_path / "pairs.partial").is_dir()
    with pytest.raises(ValueError, match="other settings"):
        ode_pairs.generate(teacher, prompts, str(out), clips=16, block_frames=2, guidance=4.0, steps_per_level=2,
                           batch_size=4, records_per_shard=8, progress=False)
    ode_pairs.generate(teacher, prompts, str(out), clips=16, block_frames=2, guidance=3.0, steps_per_level=2,
                       batch_size=4, records_per_shard=8, progress=False)
    assert not (tmp_path / "pairs.partial").exists()
    meta = read_metadata(out)
    assert meta["count"] == 16 and meta["latent_shape"] == [5, 5, 4, 4, 4]
    a, b = LatentCacheExamples(pairs), LatentCacheExamples(out)
    for i in range(16):
        x, y = a.record(i), b.record(i)
        assert x["caption"] == y["caption"]
        np.testing.assert_array_equal(x["latents"], y["latents"])
    # Index 0 of each trajectory is the stream's initial noise of each block; the end is the teacher's sample.
    first = a.record(0)["latents"]
    key = jax.random.fold_in(jax.random.key(0), 0)
    noise = jax.random.normal(jax.random.fold_in(jax.random.fold_in(key, 0), 1_000_000), (4, 3, 4, 4, 4))
    np.testing.assert_array_equal(first[0, :3], np.asarray(noise)[0])


# -- config ----------------------------------------------------------------------------------------------------------

def test_config_errors_name_the_key(teacher):
    config = distill_config("self_forcing", teacher, **{"objective.min_timestep": 990.0})
    with pytest.raises(TrainingConfigError, match="objective.min_timestep"):
        read_training_config(config)
    from sana_jax.testing.training import load_config
    from sana_jax.training import recipes
    dit = load_config("tiny_smoke")
    dit.critic_optim = recipes.adamw()
    with pytest.raises(TrainingConfigError, match="critic_optim: a section of task self_forcing"):
        read_training_config(dit)
    config = distill_config("self_forcing", teacher)
    config.objective.dmd_shfit = 5.0
    with pytest.raises(TrainingConfigError, match="nearest valid key is objective.dmd_shift"):
        read_training_config(config)


def test_a_teacher_pipeline_folder_takes_a_fine_tuned_transformer_and_keeps_the_rest(tmp_path):
    """``shapes.build teacher``: the teacher folder with another DiT in it (JAX format), every other part and its
    sample defaults as they were; a block-causal student's transformer is refused."""
    from sana_jax.components import Component, save_component
    from sana_jax.shapes.build import build_teacher

    build_tiny_pipeline(tmp_path / "teacher", seed=2)
    with open(tmp_path / "teacher" / "sample_defaults.json", "w") as f:
        json.dump({"steps": 20, "guidance": 6.0}, f)
    teacher = load_component(tmp_path / "teacher" / "transformer")
    tuned = jax.tree_util.tree_map(lambda a: a * 0.5, teacher.params)
    save_component(Component(teacher.class_name, teacher.config, teacher.module, tuned), tmp_path / "tuned")
    build_teacher(str(tmp_path / "teacher"), str(tmp_path / "tuned"), str(tmp_path / "out"))
    loaded = load_component(tmp_path / "out" / "transformer")
    for a, b in zip(jax.tree_util.tree_leaves(loaded.params), jax.tree_util.tree_leaves(tuned)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with open(tmp_path / "out" / "sample_defaults.json") as f:
        assert json.load(f) == {"steps": 20, "guidance": 6.0}
    for part in ("text_encoder", "vae", "tokenizer", "scheduler"):
        assert sorted(os.listdir(tmp_path / "out" / part)) == sorted(os.listdir(tmp_path / "teacher" / part))
    causal = distill._causal(teacher.config)
    save_component(Component(causal.class_name, causal, teacher.module, teacher.params), tmp_path / "student_t")
    with pytest.raises(ValueError, match="student_t: a SanaVideoCausalTransformer3DModel; expected a teacher DiT"):
        build_teacher(str(tmp_path / "teacher"), str(tmp_path / "student_t"), str(tmp_path / "bad"))
    assert not (tmp_path / "bad").exists()


def test_a_student_pipeline_folder_streams_with_few_step_defaults(tmp_path):
    """``shapes.build student``: the teacher pipeline's parts with the block-causal student transformer; it loads,
    streams by default (a block-causal checkpoint) with its few-step sample_defaults, and refuses a non-causal
    transformer."""
    from sana_jax.components import Component, save_component
    from sana_jax.config import SanaVideoCausalTransformerConfig
    from sana_jax.pipeline.sample import check_request, merge_defaults
    from sana_jax.shapes.build import build_student

    build_tiny_pipeline(tmp_path / "teacher", seed=2)
    teacher = load_component(tmp_path / "teacher" / "transformer")
    with pytest.raises(ValueError, match="SanaVideoCausalTransformer3DModel"):
        build_student(str(tmp_path / "teacher"), str(tmp_path / "teacher" / "transformer"), str(tmp_path / "bad"))
    causal = distill._causal(teacher.config)
    assert isinstance(causal, SanaVideoCausalTransformerConfig) and causal.num_layers == teacher.config.num_layers
    save_component(Component(causal.class_name, causal, teacher.module, teacher.params), tmp_path / "student_t")
    out = tmp_path / "student"
    build_student(str(tmp_path / "teacher"), str(tmp_path / "student_t"), str(out))
    with open(out / "model_index.json") as f:
        assert json.load(f)["transformer"] == ["diffusers", "SanaVideoCausalTransformer3DModel"]
    defaults = merge_defaults(str(out), steps=None, guidance=None)
    assert (defaults["steps"], defaults["guidance"], defaults["sampler"]) == (4, 1.0, "few_step")
    assert check_request(str(out), None, {"height": 32, "width": 32, "frames": 9, "num_inference_steps": 4,
                                          "guidance_scale": 1.0, "block_frames": 2, "sampler": "few_step"})
    pipe = SanaVideoPipeline.from_pretrained(out, scan_layers=False)   # per-layer params, as the teacher's
    chunks = list(pipe.stream("a red circle", frames=9, block_frames=1, height=32, width=32, seed=0))
    assert np.concatenate(chunks, axis=1).shape == (1, 9, 32, 32, 3)
    for a, b in zip(jax.tree_util.tree_leaves(pipe.transformer.params), jax.tree_util.tree_leaves(teacher.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("context", [True, False])
def test_long_rollout_window_layouts(teacher, context):
    """The scored window of a long rollout: after one clean context frame (pinned for the scores, unscored), or the
    window's blocks alone as a clip of their own."""
    config = distill_config("self_forcing", teacher, **{"objective.long_rollout_blocks": 3,
                                                        "objective.window_context": context})
    task = make_task(config, null_text(8, 16))
    blocks, pin, long, most = task.clip_layout((2, 5, 4, 4, 4))
    assert long and pin == context and most == 1 + 3 + 2
    assert blocks == ((3, 2) if context else (2, 2))
    params = nn.meta.unbox(task.init(jax.random.PRNGKey(0), task.minimal_batch()))
    batch = random_batch(2, (5, 4, 4, 4), 8, 16)
    x = jax.eval_shape(lambda p: task.samples(p["generator"], jax.random.key(0), batch["text_embeds"],
                                              batch["text_mask"], batch["latents"].shape), params)
    assert x.shape == (2, 5 if context else 4, 4, 4, 4)
    (loss, aux), _ = jax.eval_shape(lambda p: loss_and_grads(task, p, batch, jax.random.key(1), 0), params)
    assert loss.shape == () and set(aux) >= {"dmd", "critic"}
