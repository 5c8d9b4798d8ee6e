"""The Wan autoencoder's decoder fine-tune for long decodes (``objective.decoder_window``): latents as the encoder
makes them in short windows (checked against diffusers' encoder), the encoder frozen, config errors."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from sana_jax.testing.training import load_config
from sana_jax.training.config import TrainingConfigError, read_training_config
from sana_jax.training.export import restore_params
from sana_jax.training.tasks import AutoencoderTask
from sana_jax.training.trainer import train

TINY = dict(base_dim=4, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1, attn_scales=[],
            temperal_downsample=[False, True, True], latents_mean=[0.0] * 4, latents_std=[1.0] * 4)


def _config(tmp_path, **overrides):
    from diffusers import AutoencoderKLWan

    torch.manual_seed(0)
    AutoencoderKLWan(**TINY).save_pretrained(tmp_path / "vae")   # random weights in the diffusers folder format
    config = load_config("demo_autoencoder", total_steps=2, checkpoint_every=2, log_every=1, batch_size=8,
                         **{"data.height": 16, "data.width": 16, "data.frames": 25, "objective.decoder_window": 3,
                            "model.init_from": str(tmp_path / "vae"), **overrides})
    return config


def test_window_latents_are_the_encoders_latents_of_short_windows(tmp_path):
    from diffusers import AutoencoderKLWan

    task = AutoencoderTask.from_config(read_training_config(_config(tmp_path)))
    reference = AutoencoderKLWan.from_pretrained(tmp_path / "vae").eval()
    x = np.random.default_rng(0).uniform(-1, 1, (2, 25, 16, 16, 3)).astype(np.float32)   # 7 latent frames
    params = task.init(jax.random.key(0), {"video": jnp.asarray(x)})
    k, starts = 3, 5                                    # windows of 3 latent frames (9 frames) start at 0..4
    with torch.no_grad():
        want = np.stack([reference.encode(torch.from_numpy(np.transpose(x[:, 4 * s:4 * s + 9], (0, 4, 1, 2, 3))))
                         .latent_dist.mean.numpy().transpose(0, 2, 3, 4, 1) for s in range(starts)], axis=1)
    seen = set()
    for seed in range(6):
        got = np.asarray(task.window_latents(params, jnp.asarray(x), jax.random.key(seed)))
        assert got.shape == (2, 7, 2, 2, 4)
        np.testing.assert_allclose(got[:, 0], want[:, 0, 0], atol=1e-5)
        for b in range(2):
            for t in range(1, 7):
                # the latent frame is one window's frame j (1..k-1), that window starting at t - j inside the clip
                errors = {j: np.abs(got[b, t] - want[b, t - j, j]).max() for j in range(1, k) if 0 <= t - j < starts}
                j, error = min(errors.items(), key=lambda item: item[1])
                assert error < 1e-5, (b, t, errors)
                seen.add((t, j))
    assert {(2, 1), (2, 2), (4, 1), (4, 2)} <= seen       # both positions are drawn where both windows exist
    assert (6, 2) in seen and (6, 1) not in seen           # the last frame only from the last window


def test_decoder_window_run_trains_the_decoder_alone(tmp_path):
    config = _config(tmp_path)
    train(config, str(tmp_path / "run"), progress=False)
    with open(tmp_path / "run" / "metrics.jsonl") as f:
        assert all(np.isfinite(json.loads(line)["loss"]) for line in f)
    from sana_jax import load_component

    start = load_component(tmp_path / "vae").params
    _, trained, _ = restore_params(str(tmp_path / "run"))
    moved = {name: max(float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in
                       zip(jax.tree_util.tree_leaves(trained[name]), jax.tree_util.tree_leaves(start[name])))
             for name in trained}
    assert moved["encoder"] == 0.0 and moved["quant_conv"] == 0.0, moved
    assert moved["decoder"] > 0.0 and moved["post_quant_conv"] > 0.0, moved


@pytest.mark.parametrize("overrides, message", [
    ({"data.frames": 9}, "data.frames=9: objective.decoder_window=3 needs clips longer than the window"),
    ({"objective.decoder_window": 1}, "objective.decoder_window=1: expected 0 (off) or >= 2"),
    ({"model.class_name": "AutoencoderDC"}, "objective.decoder_window=3: a causal video autoencoder's option"),
])
def test_decoder_window_config_errors_name_the_key(tmp_path, overrides, message):
    with pytest.raises(TrainingConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_training_config(_config(tmp_path, **overrides))
