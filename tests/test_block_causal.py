"""Block-causal Linear DiT: whole sequence at once == block by block with a carried constant-size state
== an explicit-mask float64 reference; one block == the bidirectional model (and so diffusers)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sana_jax.testing.numerics import rel_err
from sana_jax import load_component
from sana_jax.models.transformer import init_cache
from sana_jax.testing.references import make_transformer_reference as make_reference
from sana_jax.testing.references import run_transformer_reference as run_reference
from sana_jax.testing.references import transformer_inputs as inputs

BLOCKS = (3, 2, 2)  # the first block absorbs the remainder, as in streaming generation


def _per_block_timesteps(b, blocks, seed):
    """Non-decreasing noise level per block (diffusion forcing), constant within a block: (B, F')."""
    rng = np.random.default_rng(seed)
    values = np.sort(rng.uniform(0, 1000, size=(b, len(blocks))), axis=1).astype(np.float32)
    return np.repeat(values, blocks, axis=1)


def _run_blockwise(model, x, t, ctx, mask, blocks):
    b = x.shape[0]
    pt, ph, pw = model.config.patch
    cache = init_cache(model.config, b, x.shape[2] // ph, x.shape[3] // pw)
    outs, start = [], 0
    step = jax.jit(lambda p, xb, tb, off, c: model.module.apply(p, xb, tb, jnp.asarray(ctx), jnp.asarray(mask),
                                                               cache=c, frame_offset=off))
    for size in blocks:
        out, cache = step({"params": model.params}, jnp.asarray(x[:, start:start + size]),
                          jnp.asarray(t[:, start:start + size]), jnp.int32(start), cache)
        outs.append(np.asarray(out))
        start += size
    return np.concatenate(outs, axis=1), cache


@pytest.mark.parametrize("scan", [False, True])
def test_whole_sequence_equals_block_by_block_with_carried_state(tmp_path, scan):
    _, folder = make_reference(tmp_path, seed=11)
    model = load_component(folder, scan_layers=scan)
    x, _, ctx = inputs(11, 2, sum(BLOCKS), 4, 6, 16)
    mask = np.ones((2, 7), np.float32)
    mask[1, 5:] = 0
    t = _per_block_timesteps(2, BLOCKS, 11)
    whole = np.asarray(model(jnp.asarray(x), jnp.asarray(t), jnp.asarray(ctx), jnp.asarray(mask),
                             block_sizes=BLOCKS))
    blockwise, _ = _run_blockwise(model, x, t, ctx, mask, BLOCKS)
    assert rel_err(blockwise, whole) <= 1e-5
    # Causality: the first block does not see the later ones; and the later ones do see the first.
    bidirectional = np.asarray(model(jnp.asarray(x), jnp.asarray(t), jnp.asarray(ctx), jnp.asarray(mask)))
    assert rel_err(whole[:, 3:], bidirectional[:, 3:]) > 1e-3
    x2 = x.copy()
    x2[:, 3:] += 1.0
    changed = np.asarray(model(jnp.asarray(x2), jnp.asarray(t), jnp.asarray(ctx), jnp.asarray(mask),
                               block_sizes=BLOCKS))
    np.testing.assert_array_equal(changed[:, :3], whole[:, :3])


def test_one_block_is_the_bidirectional_model_and_matches_diffusers(tmp_path):
    ref_model, folder = make_reference(tmp_path, seed=12)
    model = load_component(folder)
    x, t, ctx = inputs(12, 1, 4, 4, 4, 16)
    ref = run_reference(ref_model, x, t, ctx)
    t_frames = np.repeat(t[:, None], 4, axis=1)
    whole = np.asarray(model(jnp.asarray(x), jnp.asarray(t), jnp.asarray(ctx), block_sizes=(4,)))
    assert rel_err(whole, ref) <= 1e-5
    mask = np.ones((1, ctx.shape[1]), np.float32)
    blockwise, _ = _run_blockwise(model, x, t_frames, ctx, mask, (4,))
    assert rel_err(blockwise, ref) <= 1e-5


def test_carried_state_size_does_not_depend_on_the_number_of_blocks(tmp_path):
    _, folder = make_reference(tmp_path, seed=13)
    model = load_component(folder, scan_layers=True)
    x, _, ctx = inputs(13, 1, 8, 4, 4, 16)
    mask = np.ones((1, 7), np.float32)
    t = _per_block_timesteps(1, (2, 2, 2, 2), 13)
    shapes = []
    for blocks in [(2,), (2, 2, 2, 2)]:
        n = sum(blocks)
        _, cache = _run_blockwise(model, x[:, :n], t[:, :n], ctx, mask, blocks)
        shapes.append(jax.tree_util.tree_map(lambda a: (a.shape, str(a.dtype)), cache))
    assert shapes[0] == shapes[1]
    start = init_cache(model.config, 1, 2, 2)
    assert jax.tree_util.tree_map(lambda a: (a.shape, str(a.dtype)), start) == shapes[0]


def test_block_sizes_must_cover_the_frames(tmp_path):
    _, folder = make_reference(tmp_path, seed=14)
    model = load_component(folder)
    x, t, ctx = inputs(14, 1, 4, 4, 4, 16)
    with pytest.raises(ValueError, match="block_sizes"):
        model(jnp.asarray(x), jnp.asarray(t), jnp.asarray(ctx), block_sizes=(2, 1))


@pytest.mark.parametrize("per_frame", [False, True])
def test_block_causal_matches_explicit_mask_float64_reference(tmp_path, per_frame):
    import torch

    from sana_jax.testing.block_causal_reference import block_causal_reference

    ref_model, folder = make_reference(tmp_path, seed=15)
    model = load_component(folder)
    x, t, ctx = inputs(15, 2, sum(BLOCKS), 4, 6, 16, text_len=9)
    mask = np.ones((2, 9), np.float32)
    mask[0, 6:] = 0
    if per_frame:
        t = _per_block_timesteps(2, BLOCKS, 15)
    with torch.no_grad():
        ref = block_causal_reference(ref_model, torch.from_numpy(x.transpose(0, 4, 1, 2, 3)),
                                     torch.from_numpy(ctx), torch.from_numpy(t), torch.from_numpy(mask),
                                     list(BLOCKS)).numpy().transpose(0, 2, 3, 4, 1)
    ours = np.asarray(model(jnp.asarray(x), jnp.asarray(t), jnp.asarray(ctx), jnp.asarray(mask),
                            block_sizes=BLOCKS))
    blockwise, _ = _run_blockwise(model, x, t if per_frame else np.repeat(t[:, None], x.shape[1], 1), ctx, mask,
                                  BLOCKS)
    assert rel_err(ours, ref) <= 1e-5
    assert rel_err(blockwise, ref) <= 1e-5
    # The reference is not the bidirectional model: the test can tell the two apart.
    bidirectional = np.asarray(model(jnp.asarray(x), jnp.asarray(t), jnp.asarray(ctx), jnp.asarray(mask)))
    assert rel_err(bidirectional, ref) > 1e-4
