"""The Flax Linear DiT against diffusers' SanaVideoTransformer3DModel: random weights, save_pretrained, our loader."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sana_jax.testing.numerics import rel_err
from sana_jax.testing.references import TRANSFORMER_TINY as TINY
from sana_jax.testing.references import make_transformer_reference as make_reference
from sana_jax.testing.references import run_transformer_reference as run_reference
from sana_jax.testing.references import transformer_inputs as inputs
from sana_jax import load_component
from sana_jax.weights.rulebook import flatten, stack_layers


def run_ours(folder, x, t, ctx, mask=None, guidance=None, **options):
    model = load_component(folder, **options)
    return np.asarray(model(jnp.asarray(x), jnp.asarray(t), jnp.asarray(ctx),
                            None if mask is None else jnp.asarray(mask),
                            None if guidance is None else jnp.asarray(guidance)))


@pytest.mark.parametrize("scan", [False, True])
def test_tiny_config_matches_diffusers(tmp_path, scan):
    ref_model, folder = make_reference(tmp_path)
    x, t, ctx = inputs(0, 1, 3, 8, 8, 16)
    ref = run_reference(ref_model, x, t, ctx)
    assert rel_err(run_ours(folder, x, t, ctx, scan_layers=scan), ref) <= 1e-5


@pytest.mark.parametrize("scan", [False, True])
def test_batch2_padded_text_mask_nonsquare_matches_diffusers(tmp_path, scan):
    ref_model, folder = make_reference(tmp_path, seed=1)
    x, t, ctx = inputs(1, 2, 3, 6, 10, 16, text_len=9)
    mask = np.ones((2, 9), np.float32)
    mask[0, 6:] = 0
    mask[1, 3:] = 0
    ref = run_reference(ref_model, x, t, ctx, mask)
    assert rel_err(run_ours(folder, x, t, ctx, mask, scan_layers=scan), ref) <= 1e-5
    # The mask matters: ignoring it gives another answer.
    assert rel_err(run_reference(ref_model, x, t, ctx), ref) > 1e-3


@pytest.mark.parametrize("scan", [False, True])
def test_per_frame_timesteps_match_diffusers_per_token_form(tmp_path, scan):
    ref_model, folder = make_reference(tmp_path, seed=2)
    x, _, ctx = inputs(2, 2, 4, 4, 6, 16)
    t_frames = np.array([[0.0, 700.0, 700.0, 700.0], [0.0, 35.5, 35.5, 35.5]], np.float32)  # the i2v form
    # diffusers takes one timestep per token: (B, F', H', W') flattened.
    t_tokens = np.broadcast_to(t_frames[:, :, None, None], (2, 4, 2, 3)).copy()
    ref = run_reference(ref_model, x, t_tokens, ctx)
    assert rel_err(run_ours(folder, x, t_frames, ctx, scan_layers=scan), ref) <= 1e-5


@pytest.mark.parametrize("scan", [False, True])
def test_patch_1x1x1_with_128_channels_matches_diffusers(tmp_path, scan):
    ref_model, folder = make_reference(tmp_path, seed=3, in_channels=128, out_channels=128, patch_size=(1, 1, 1))
    x, t, ctx = inputs(3, 1, 3, 4, 5, 128)
    ref = run_reference(ref_model, x, t, ctx)
    assert rel_err(run_ours(folder, x, t, ctx, scan_layers=scan), ref) <= 1e-5


@pytest.mark.parametrize("scan", [False, True])
def test_guidance_embeds_matches_diffusers(tmp_path, scan):
    ref_model, folder = make_reference(tmp_path, seed=4, guidance_embeds=True)
    x, t, ctx = inputs(4, 2, 2, 4, 4, 16)
    g = np.array([4.5, 0.7], np.float32)
    ref = run_reference(ref_model, x, t, ctx, guidance=g)
    assert rel_err(run_ours(folder, x, t, ctx, guidance=g, scan_layers=scan), ref) <= 1e-5


@pytest.mark.parametrize("scan", [False, True])
def test_uneven_rope_split_matches_diffusers(tmp_path, scan):
    # head dim 14 splits into t/h/w = 6/4/4; 3 layers and 7 heads x 14 = 98 wide.
    ref_model, folder = make_reference(tmp_path, seed=5, num_attention_heads=7, attention_head_dim=14,
                                       num_cross_attention_heads=2, cross_attention_head_dim=49,
                                       cross_attention_dim=98, num_layers=3, mlp_ratio=3.0)
    x, t, ctx = inputs(5, 1, 5, 6, 4, 16)
    ref = run_reference(ref_model, x, t, ctx)
    assert rel_err(run_ours(folder, x, t, ctx, scan_layers=scan), ref) <= 1e-5


def test_original_numerics_floor_timesteps_and_use_eps_1e8(tmp_path):
    ref_model, folder = make_reference(tmp_path, seed=6)
    x, _, ctx = inputs(6, 2, 2, 4, 4, 16)
    t = np.array([999.875, 250.5], np.float32)
    floored = run_reference(ref_model, x, np.floor(t), ctx)
    ours = run_ours(folder, x, t, ctx, original_numerics=True)
    assert rel_err(ours, floored) <= 1e-5
    assert rel_err(run_ours(folder, x, t, ctx), floored) > 1e-4  # the flag is what made the difference


def test_remat_and_scan_give_the_same_gradients_as_unrolled(tmp_path):
    _, folder = make_reference(tmp_path, seed=7)
    x, t, ctx = inputs(7, 1, 2, 4, 4, 16)
    args = (jnp.asarray(x), jnp.asarray(t), jnp.asarray(ctx))

    def grads(**options):
        m = load_component(folder, **options)
        def loss(p):
            return jnp.sum(m.module.apply({"params": p}, *args) ** 2)

        return flatten(jax.grad(loss)(m.params))

    plain = grads()
    scanned = grads(scan_layers=True, remat_policy="full")
    stacked = stack_layers(plain, "transformer_blocks", TINY["num_layers"])
    assert set(stacked) == set(scanned)
    for key in stacked:
        assert rel_err(scanned[key], stacked[key]) <= 1e-5, key


def test_bfloat16_compute_stays_close_to_fp32_reference(tmp_path):
    ref_model, folder = make_reference(tmp_path, seed=8)
    x, t, ctx = inputs(8, 1, 2, 4, 4, 16)
    ref = run_reference(ref_model, x, t, ctx)
    out = run_ours(folder, x, t, ctx, dtype="bfloat16")
    assert out.dtype == jnp.bfloat16
    assert rel_err(out.astype(np.float32), ref) < 5e-2


@pytest.mark.parametrize("bad,match", [
    (dict(x=(1, 3, 7, 8, 16)), "divisible by patch_size"),
    (dict(x=(1, 3, 8, 8, 4)), "channels-last"),
    (dict(t=(1, 5)), "timestep"),
    (dict(ctx=(1, 7, 31)), "encoder_hidden_states"),
])
def test_bad_inputs_name_the_argument(tmp_path, bad, match):
    _, folder = make_reference(tmp_path)
    m = load_component(folder)
    x = jnp.zeros(bad.get("x", (1, 3, 8, 8, 16)))
    t = jnp.zeros(bad.get("t", (1,)))
    ctx = jnp.zeros(bad.get("ctx", (1, 7, 32)))
    with pytest.raises(ValueError, match=match):
        m(x, t, ctx)


@pytest.mark.parametrize("scan", [False, True])
def test_every_param_carries_logical_axis_names(scan):
    import flax.linen as nn

    from sana_jax.components import REGISTRY
    from sana_jax.config import SanaVideoTransformerConfig

    cfg = SanaVideoTransformerConfig(**{**TINY, "patch_size": tuple(TINY["patch_size"])})
    spec = REGISTRY[cfg.class_name]
    boxed = jax.eval_shape(lambda: spec.build(cfg, scan_layers=scan).init(jax.random.key(0),
                                                                           *spec.example_inputs(cfg)))["params"]
    leaves = jax.tree_util.tree_leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert leaves and all(isinstance(x, nn.LogicallyPartitioned) for x in leaves)
    for leaf in leaves:
        assert len(leaf.names) == leaf.value.ndim
    block_names = {leaf.names[0] for path, leaf in jax.tree_util.tree_flatten_with_path(
        boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))[0] if "transformer_blocks" in str(path[0])}
    if scan:
        assert block_names == {"layers"}
    else:
        assert "layers" not in block_names
    assert "embed" in {n for leaf in leaves for n in leaf.names}
