"""The flow-matching objective against the original recipe's formulas (written out here independently)."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import numpy as np
import pytest

from sana_jax.training import objective as fm
from sana_jax.training.tasks import make_task
from sana_jax.testing.training import load_config, null_text, random_batch

LATENTS = (8, 4, 4, 4)
TEXT = (8, 16)


def _task(**overrides):
    config = load_config("tiny_smoke", **overrides)
    return make_task(config, null_text(*TEXT))


def _inputs(task, batch_size=4, seed=0):
    batch = random_batch(batch_size, LATENTS, *TEXT, seed=seed)
    return batch, jax.tree_util.tree_map(np.asarray, task.model_inputs(batch, jax.random.PRNGKey(seed)))


@pytest.mark.parametrize("shift", [1.0, 3.0, 7.0])
def test_flow_sigma_grid_matches_the_linear_flow_formula(shift):
    sigmas, timesteps = fm.flow_sigmas(shift)
    for i in range(1000):  # sigma_i = 1 - linspace(1, 0.001, 1000)_i (about 0.001 i), shifted; int(1000 sigma')
        base = 1.0 - (0.001 if i == 999 else 1.0 + i * ((0.001 - 1.0) / 999))
        shifted = shift * base / (1 + (shift - 1) * base)
        assert sigmas[i] == pytest.approx(shifted, abs=1e-7) and abs(base - 0.001 * i) < 1e-12
        assert timesteps[i] == math.floor(shifted * 1000)
    assert sigmas[0] == 0 and sigmas[-1] == pytest.approx(shift * 0.999 / (1 + (shift - 1) * 0.999))


def test_logit_normal_indices_follow_the_logit_normal_law():
    idx = np.asarray(fm.logit_normal_indices(jax.random.PRNGKey(0), (200_000,), mean=0.5, std=1.2))
    assert idx.min() >= 0 and idx.max() <= 999
    ks = np.arange(0, 999, 37)
    empirical = np.array([(idx <= k).mean() for k in ks])
    logit = np.log((ks + 1) / 1000) - np.log1p(-(ks + 1) / 1000)  # P(i <= k) = P(u < (k + 1) / 1000)
    analytic = 0.5 * (1 + np.vectorize(math.erf)((logit - 0.5) / (1.2 * math.sqrt(2))))
    assert np.max(np.abs(empirical - analytic)) < 0.01


def test_model_inputs_lie_on_the_shifted_flow_path():
    task = _task()
    sigmas, timesteps = fm.flow_sigmas(3.0)
    batch, inp = _inputs(task, batch_size=16)
    x0 = batch["latents"]
    for b in range(16):
        diff, target = inp["x_t"][b] - x0[b], inp["target"][b]
        sigma = float(np.sum(diff * target) / np.sum(target * target))
        np.testing.assert_allclose(diff, sigma * target, atol=1e-5)        # x_t = x0 + sigma (eps - x0)
        i = int(np.argmin(np.abs(sigmas - sigma)))
        assert abs(sigmas[i] - sigma) < 1e-5
        assert inp["timestep"][b] == timesteps[i]                          # the model sees the integer map
    noise = inp["target"] + x0
    assert abs(noise.std() - 1) < 0.1 and abs(noise.mean()) < 0.1
    assert inp["timestep"].shape == (16,) and np.all(inp["weight"] == 1)


def test_image_to_video_pins_a_clean_first_frame_and_does_not_score_it():
    task = _task(**{"objective.i2v_prob": 1.0})
    batch, inp = _inputs(task)
    np.testing.assert_array_equal(inp["x_t"][:, 0], batch["latents"][:, 0])
    assert inp["timestep"].shape == (4, LATENTS[0])
    assert np.all(inp["timestep"][:, 0] == 0) and np.all(inp["timestep"][:, 1:] > 0)
    assert np.all(inp["weight"][:, 0] == 0) and np.all(inp["weight"][:, 1:] == 1)


@pytest.mark.parametrize("mode", ["incremental", "same_t", "teacher_forcing_clean"])
def test_block_causal_timesteps_are_constant_per_block_and_non_decreasing(mode):
    task = _task(**{"objective.block_frames": 2, "objective.block_modes": {mode: 1.0}})
    assert task.block_sizes(LATENTS[0]) == (2, 2, 2, 2)
    _, inp = _inputs(task, batch_size=64)
    t = inp["timestep"]
    assert t.shape == (64, 8)
    np.testing.assert_array_equal(t[:, 0::2], t[:, 1::2])                   # one timestep per block
    assert np.all(np.diff(t, axis=1) >= 0)                                    # earlier blocks are cleaner
    if mode == "same_t":
        assert np.all(t == t[:, :1])
    if mode == "teacher_forcing_clean":
        clean = t == 0
        assert clean.any() and not clean.all(axis=1).any()                   # a prefix, never every block
        np.testing.assert_array_equal(inp["weight"][:, :, 0, 0, 0] == 0, clean)


def test_block_modes_are_drawn_with_their_probabilities():
    idx = np.asarray(fm.block_indices(jax.random.PRNGKey(0), 4000, 4, {"same_t": 0.25, "uniform": 0.75}))
    constant = np.all(idx == idx[:, :1], axis=1).mean()
    assert abs(constant - 0.25) < 0.03  # uniform draws are almost never all equal
    with pytest.raises(ValueError, match="unknown"):
        fm.block_indices(jax.random.PRNGKey(0), 2, 2, {"sorted": 1.0})


@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_caption_dropout_replaces_the_text_with_the_null_conditioning(p):
    task = _task(**{"objective.caption_dropout": p})
    batch = random_batch(1000, (1, 2, 2, 4), *TEXT)
    inp = task.model_inputs(batch, jax.random.PRNGKey(1))
    null_embeds, null_mask = null_text(*TEXT)
    dropped = np.all(np.asarray(inp["text_embeds"]) == null_embeds, axis=(1, 2))
    kept = np.all(np.asarray(inp["text_embeds"]) == batch["text_embeds"], axis=(1, 2))
    assert np.all(dropped ^ kept)
    np.testing.assert_array_equal(np.asarray(inp["text_mask"])[dropped], np.broadcast_to(null_mask, (dropped.sum(), 8)))
    assert abs(dropped.mean() - p) < 0.05


def test_loss_is_the_masked_mean_squared_error_of_the_velocity():
    task = _task(**{"objective.i2v_prob": 0.5})
    batch = random_batch(4, LATENTS, *TEXT)
    params = nn.meta.unbox(task.init(jax.random.PRNGKey(0), batch))
    rng = jax.random.PRNGKey(3)
    loss, _ = task.loss(params, batch, rng)
    inp = task.model_inputs(batch, rng)
    v = np.asarray(task.module.apply({"params": params}, inp["x_t"], inp["timestep"], inp["text_embeds"],
                                     inp["text_mask"]), np.float64)
    w = np.broadcast_to(np.asarray(inp["weight"], np.float64), v.shape)
    err = (v - np.asarray(inp["target"], np.float64)) ** 2
    per_sample = (err * w).reshape(4, -1).sum(1) / w.reshape(4, -1).sum(1)
    assert float(loss) == pytest.approx(per_sample.mean(), rel=1e-5)
    assert np.asarray(inp["weight"])[:, 0].min() == 0  # some sample is image-to-video here
