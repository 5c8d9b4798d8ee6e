"""The Flax Wan2.1 VAE against diffusers' AutoencoderKLWan: random weights, save_pretrained, our loader, fp32.

The reference runs diffusers' own cached frame-by-frame encode/decode (the normal code path); latents are compared
after the same normalisation, computed here in NumPy from the config's latents_mean / latents_std.
"""

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import AutoencoderKLWan as ReferenceVAE

from sana_jax.testing.numerics import rel_err
from sana_jax.testing.references import WAN_VAE_TINY as TINY
from sana_jax.testing.references import make_wan_vae_reference as make_reference
from sana_jax import load_component, save_component
from sana_jax.components import REGISTRY, abstract_params
from sana_jax.config import AutoencoderKLWanConfig, ConfigError
from sana_jax.models.wan_vae import decode_tiled
from sana_jax.weights.io import read_state_dict

WIDE = dict(base_dim=8, decoder_base_dim=6, z_dim=4, dim_mult=[1, 2, 2, 2], num_res_blocks=2,
            temperal_downsample=[False, True, True], latents_mean=[0.1, -0.2, 0.3, -0.4],
            latents_std=[1.5, 0.5, 2.0, 1.0])
WAN21_PARAMS = 126_892_531
TOL = 1e-5


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wan_tiny") / "vae"
    return make_reference(folder, **TINY), load_component(folder)


def _stats(ref):
    return (np.asarray(ref.config.latents_mean, np.float32).reshape(1, 1, 1, 1, -1),
            np.asarray(ref.config.latents_std, np.float32).reshape(1, 1, 1, 1, -1))


def reference_encode(ref, video):
    """video channels-last -> diffusers posterior mean, normalised (mu - mean) / std, channels-last."""
    with torch.no_grad():
        mu = ref.encode(torch.from_numpy(video.transpose(0, 4, 1, 2, 3))).latent_dist.mean.numpy()
    mean, std = _stats(ref)
    return (mu.transpose(0, 2, 3, 4, 1) - mean) / std


def reference_decode(ref, latents):
    """Normalised latents channels-last -> z * std + mean -> diffusers decode (cached path) -> channels-last."""
    mean, std = _stats(ref)
    z = (latents * std + mean).transpose(0, 4, 1, 2, 3)
    with torch.no_grad():
        return ref.decode(torch.from_numpy(np.ascontiguousarray(z))).sample.numpy().transpose(0, 2, 3, 4, 1)


def video(seed, b, f, h, w):
    return np.random.default_rng(seed).uniform(-1, 1, (b, f, h, w, 3)).astype(np.float32)


def latents(seed, b, t, h, w, c):
    return np.random.default_rng(seed).standard_normal((b, t, h, w, c)).astype(np.float32)


def check_parity(ref, ours, x, z, label, expect_clamping=False):
    enc = rel_err(np.asarray(ours.encode(jnp.asarray(x))), reference_encode(ref, x))
    expected = reference_decode(ref, z)
    got = np.asarray(ours.decode(jnp.asarray(z)))
    assert got.shape == expected.shape
    dec = rel_err(got, expected)
    unclamped = float(np.mean(np.abs(expected) < 1.0))
    print(f"\n{label}: encode rel err {enc:.2e}, decode rel err {dec:.2e} ({unclamped:.0%} of outputs unclamped)")
    assert unclamped > 0.2, "most of the decoded video is clamped: the comparison would be vacuous"
    assert (unclamped < 1.0) == expect_clamping
    assert enc <= TOL and dec <= TOL


@pytest.mark.parametrize("b,f,h,w", [
    (1, 9, 16, 16),    # 4k+1 frames, diffusers' own test size
    (1, 13, 16, 16),   # three latent frames
    (1, 1, 16, 16),    # a single frame (image)
    (2, 5, 16, 16),    # batch 2
    (1, 5, 16, 32),    # non-square
])
def test_tiny_config_encode_and_decode_match_diffusers(tiny, b, f, h, w):
    ref, ours = tiny
    x = video(f, b, f, h, w)
    z = latents(f + 100, b, 1 + (f - 1) // 4, h // 8, w // 8, 16)
    check_parity(ref, ours, x, z, f"tiny b{b} f{f} {h}x{w}")


def test_wider_config_matches_diffusers(tmp_path):
    ref = make_reference(tmp_path / "vae", seed=1, scale=1.0, **WIDE)  # larger weights: part of the output clamps
    ours = load_component(tmp_path / "vae")
    check_parity(ref, ours, video(0, 1, 9, 16, 24), latents(1, 1, 3, 2, 3, 4), "wide (base 8, dec base 6, x2 res)",
                 expect_clamping=True)


def _streaming(ours, z, chunk_size):
    fn = jax.jit(lambda p, z: ours.module.apply({"params": p}, z, chunk_size, method="decode_streaming"))
    return np.asarray(fn(ours.params, jnp.asarray(z)))


@pytest.mark.parametrize("chunk_size", [1, 2])
def test_streaming_decode_equals_whole_clip_decode(tiny, chunk_size):
    _, ours = tiny
    z = latents(7, 2, 5, 2, 3, 16)
    whole = np.asarray(ours.decode(jnp.asarray(z)))
    err = rel_err(_streaming(ours, z, chunk_size), whole)
    print(f"\nstreaming chunk {chunk_size} vs whole clip: rel err {err:.2e}")
    assert err <= TOL


def test_decode_chunk_runs_carry_the_cache_like_one_clip(tiny):
    """Runs of uneven length, the first holding frames 0-2, chained through init_cache/decode_chunk."""
    _, ours = tiny
    z = jnp.asarray(latents(8, 1, 6, 2, 2, 16))
    init_cache = jax.jit(lambda p, z: ours.module.apply({"params": p}, z, method="init_cache"))
    decode_chunk = jax.jit(lambda p, z, cache: ours.module.apply({"params": p}, z, cache, "stream",
                                                                 method="decode_chunk"))
    cache = init_cache(ours.params, z)
    assert all(leaf.shape[1] == 2 and not leaf.any() for leaf in jax.tree_util.tree_leaves(cache))
    parts = []
    for start, stop in ((0, 3), (3, 4), (4, 6)):  # the clip's first run takes no state (None)
        part, cache = decode_chunk(ours.params, z[:, start:stop], cache if start else None)
        parts.append(part)
    err = rel_err(np.concatenate(parts, axis=1), np.asarray(ours.decode(z)))
    print(f"\ndecode_chunk runs (3, 1, 2) vs whole clip: rel err {err:.2e}")
    assert err <= TOL


def test_streaming_decode_matches_diffusers(tiny):
    ref, ours = tiny
    z = latents(9, 1, 4, 2, 2, 16)
    err = rel_err(_streaming(ours, z, 1), reference_decode(ref, z))
    print(f"\nstreaming chunk 1 vs diffusers: rel err {err:.2e}")
    assert err <= TOL


def test_streaming_decode_rejects_a_chunk_size_that_does_not_divide(tiny):
    _, ours = tiny
    with pytest.raises(ValueError, match="chunk_size"):
        _streaming(ours, latents(0, 1, 4, 2, 2, 16), 2)


@pytest.mark.slow
@pytest.mark.parametrize("chunk_size", [None, 1])
def test_tiled_decode_matches_diffusers_tiling(tmp_path, chunk_size):
    ref = make_reference(tmp_path / "vae", seed=5, **TINY)
    ours = load_component(tmp_path / "vae")
    z = latents(5, 1, 3, 7, 10, 16)  # 3 x 3 tiles of 4 x 5 latents with stride 3, edge tiles smaller
    untiled = reference_decode(ref, z)
    ref.enable_tiling(tile_sample_min_height=32, tile_sample_min_width=40, tile_sample_stride_height=24,
                      tile_sample_stride_width=24)
    expected = reference_decode(ref, z)
    assert rel_err(expected, untiled) > 1e-3  # the tiles and their blending change the result
    got = np.asarray(decode_tiled(ours, z, tile_sample_min=(32, 40), tile_sample_stride=(24, 24),
                                  chunk_size=chunk_size))
    err = rel_err(got, expected)
    print(f"\ntiled decode (chunk_size={chunk_size}) vs diffusers enable_tiling: rel err {err:.2e}")
    assert got.shape == expected.shape and err <= TOL


def test_tiled_decode_of_a_clip_inside_one_tile_is_the_plain_decode(tiny):
    _, ours = tiny
    z = jnp.asarray(latents(6, 1, 2, 2, 3, 16))
    assert rel_err(decode_tiled(ours, z, tile_sample_min=(32, 32), tile_sample_stride=(24, 24)), ours.decode(z)) <= TOL
    with pytest.raises(ValueError, match="tile_sample_stride"):
        decode_tiled(ours, z, tile_sample_min=(32, 32), tile_sample_stride=(12, 12))


def test_diffusers_to_jax_to_diffusers_is_bit_exact_and_loads_in_diffusers(tmp_path):
    ref = make_reference(tmp_path / "vae", seed=3, **WIDE)
    model = load_component(tmp_path / "vae")
    save_component(model, tmp_path / "jax", format="jax")
    again = load_component(tmp_path / "jax")
    save_component(again, tmp_path / "back", format="diffusers")

    original = read_state_dict(tmp_path / "vae", "diffusion_pytorch_model")
    back = read_state_dict(tmp_path / "back", "diffusion_pytorch_model")
    assert sorted(original) == sorted(back)
    for key in original:
        assert original[key].dtype == back[key].dtype and np.array_equal(original[key], back[key]), key
    with open(tmp_path / "vae" / "config.json") as f1, open(tmp_path / "back" / "config.json") as f2:
        a, b = json.load(f1), json.load(f2)
    assert {k: v for k, v in a.items() if not k.startswith("_")} == \
        {k: v for k, v in b.items() if not k.startswith("_")}

    reloaded = ReferenceVAE.from_pretrained(tmp_path / "back").eval()
    sa, sb = ref.state_dict(), reloaded.state_dict()
    assert sorted(sa) == sorted(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)
    z = latents(4, 1, 2, 2, 2, 4)
    assert np.array_equal(reference_decode(reloaded, z), reference_decode(ref, z))


def test_published_wan21_config_builds_with_its_param_count():
    spec = REGISTRY["AutoencoderKLWan"]
    config = AutoencoderKLWanConfig()
    params = abstract_params(spec, config, spec.build(config))
    count = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(params))
    print(f"\nWan2.1 VAE params: {count:,}")
    assert count == WAN21_PARAMS
    with torch.device("meta"):  # diffusers' own count of the same config (nothing allocated)
        reference = ReferenceVAE(**{k: v for k, v in config.to_dict().items() if not k.startswith("_")})
    assert sum(p.numel() for p in reference.parameters()) == count
    assert params["decoder"]["up_blocks_0"]["upsampler"]["time_conv"]["kernel"].shape == (3, 1, 1, 384, 768)


@pytest.mark.parametrize("shape,match", [
    ((1, 8, 16, 16, 3), r"frames = 8; expected 4k \+ 1"),
    ((1, 5, 12, 16, 3), r"height = 12; expected a positive multiple of 8"),
    ((1, 5, 16, 20, 3), r"width = 20; expected a positive multiple of 8"),
    ((1, 5, 16, 16, 4), r"video: expected shape \(B, F, H, W, 3\)"),
])
def test_encode_rejects_sizes_it_cannot_divide(tiny, shape, match):
    _, ours = tiny
    with pytest.raises(ValueError, match=match):
        ours.encode(jnp.zeros(shape, jnp.float32))


def test_decode_rejects_latents_with_the_wrong_channels(tiny):
    _, ours = tiny
    with pytest.raises(ValueError, match=r"latents: expected shape \(B, T >= 1, h, w, 16\)"):
        ours.decode(jnp.zeros((1, 2, 2, 2, 4), jnp.float32))


@pytest.mark.parametrize("key,value", [("is_residual", True), ("patch_size", 2), ("attn_scales", [1.0])])
def test_unsupported_config_keys_are_named(tmp_path, key, value):
    make_reference(tmp_path / "vae", **TINY)
    config = json.loads((tmp_path / "vae" / "config.json").read_text())
    (tmp_path / "vae" / "config.json").write_text(json.dumps({**config, key: value}))
    with pytest.raises(ConfigError, match=re.escape(f"{key}={value}")):
        load_component(tmp_path / "vae")
