"""The Flax LTX-2 video VAE against diffusers' AutoencoderKLLTX2Video: random weights and random latents_mean /
latents_std buffers, save_pretrained, our loader, fp32.

Latents are compared after the pipeline's normalisation (posterior mean - latents_mean) / latents_std, computed
here in NumPy from the reference's buffers; decoded videos before clamping.
"""

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import AutoencoderKLLTX2Video as ReferenceVAE

from sana_jax import _compile
from sana_jax.testing.numerics import rel_err
from sana_jax.testing.references import LTX2_VAE_TINY as TINY
from sana_jax.testing.references import make_ltx2_vae_reference as make_reference
from sana_jax import load_component, save_component
from sana_jax.components import REGISTRY, abstract_params
from sana_jax.config import LTX2_VIDEO_VAE, AutoencoderKLLTX2VideoConfig, ConfigError
from sana_jax.weights.io import read_state_dict

# The other branches: "conv" / "temporal" / "spatial" downsamplers, a causal zero-padded decoder with a
# spatiotemporal, a non-residual temporal and a spatial upsampler (factor 1), a resnet conv_in that changes width,
# replicate padding in the encoder, two resnets per block, patch 2: 8x spatial, 4x temporal.
VARIANT = dict(latent_channels=4, block_out_channels=(4, 8, 16), down_block_types=("LTX2VideoDownBlock3D",) * 3,
               layers_per_block=(2, 1, 1, 1), downsample_type=("conv", "temporal", "spatial"),
               spatio_temporal_scaling=True, decoder_block_out_channels=(8, 8, 16),
               decoder_layers_per_block=(1, 1, 2, 1), decoder_spatio_temporal_scaling=True,
               upsample_type=("spatiotemporal", "temporal", "spatial"), upsample_residual=(True, False, True),
               upsample_factor=(1, 1, 1), decoder_inject_noise=False, patch_size=2, decoder_causal=True,
               encoder_spatial_padding_mode="replicate", decoder_spatial_padding_mode="zeros",
               spatial_compression_ratio=8, temporal_compression_ratio=4)
TOL = 1e-5


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ltx2_tiny") / "vae"
    return make_reference(folder, **TINY), load_component(folder)


def _stats(ref):
    return ref.latents_mean.numpy().reshape(1, 1, 1, 1, -1), ref.latents_std.numpy().reshape(1, 1, 1, 1, -1)


def reference_encode(ref, video):
    """video channels-last -> diffusers posterior mode, normalised (mean - latents_mean) / latents_std."""
    with torch.no_grad():
        mu = ref.encode(torch.from_numpy(video.transpose(0, 4, 1, 2, 3))).latent_dist.mode().numpy()
    mean, std = _stats(ref)
    return (mu.transpose(0, 2, 3, 4, 1) - mean) / std


def reference_decode(ref, latents):
    """Normalised latents channels-last -> z * std + mean -> diffusers decode -> channels-last, not clamped."""
    mean, std = _stats(ref)
    z = np.ascontiguousarray((latents * std + mean).transpose(0, 4, 1, 2, 3))
    with torch.no_grad():
        return ref.decode(torch.from_numpy(z)).sample.numpy().transpose(0, 2, 3, 4, 1)


def video(seed, b, f, h, w):
    return np.random.default_rng(seed).uniform(-1, 1, (b, f, h, w, 3)).astype(np.float32)


def latents(seed, b, t, h, w, c):
    return np.random.default_rng(seed).standard_normal((b, t, h, w, c)).astype(np.float32)


def _decode_raw(ours, z):
    # compiled as the component's own methods are at top level (`_compile`'s VAE options), so that the clamped
    # `ours.decode` can be checked against it bit for bit
    fn = _compile.jit(lambda p, z: ours.module.apply({"params": p}, z, None, "whole", False,
                                                     method="decode_chunk")[0], vae=True)
    return np.asarray(fn(ours.params, jnp.asarray(z)))


def check_parity(ref, ours, x, z, label):
    enc = rel_err(np.asarray(ours.encode(jnp.asarray(x))), reference_encode(ref, x))
    expected = reference_decode(ref, z)
    got = _decode_raw(ours, z)
    assert got.shape == expected.shape
    dec = rel_err(got, expected)
    clamped = np.asarray(ours.decode(jnp.asarray(z)))
    print(f"\n{label}: encode rel err {enc:.2e}, decode rel err {dec:.2e}")
    assert enc <= TOL and dec <= TOL
    assert np.array_equal(clamped, np.clip(got, -1, 1))


@pytest.mark.parametrize("b,f,h,w", [
    (1, 17, 64, 64),   # three latent frames
    (2, 9, 64, 96),    # batch 2, non-square
    (1, 1, 64, 64),    # a single frame (image)
])
def test_tiny_published_layout_encode_and_decode_match_diffusers(tiny, b, f, h, w):
    ref, ours = tiny
    x = video(f, b, f, h, w)
    z = latents(f + 100, b, 1 + (f - 1) // 8, h // 32, w // 32, 8)
    check_parity(ref, ours, x, z, f"tiny b{b} f{f} {h}x{w}")


def test_variant_branches_match_diffusers(tmp_path):
    ref = make_reference(tmp_path / "vae", seed=2, **VARIANT)
    ours = load_component(tmp_path / "vae")
    assert (ours.config.spatial_ratio, ours.config.temporal_ratio) == (8, 4)
    check_parity(ref, ours, video(0, 1, 9, 16, 24), latents(1, 1, 3, 2, 3, 4), "variant (conv down, causal dec)")


def _streaming(ours, z, chunk_size):
    fn = jax.jit(lambda p, z: ours.module.apply({"params": p}, z, chunk_size, method="decode_streaming"))
    return np.asarray(fn(ours.params, jnp.asarray(z)))


@pytest.mark.parametrize("frames,chunk_size", [(13, 1), (15, 3), (4, 5)])
def test_streaming_decode_equals_whole_clip_decode(tiny, frames, chunk_size):
    """Runs from the first latent frame on: unrolled while frames cross the non-causal layers, then scanned, then
    the last run with the remainder and the held-back frames (a clip shorter than one run: that run alone)."""
    _, ours = tiny
    z = latents(7, 1, frames, 2, 2, 8)
    whole = np.asarray(ours.decode(jnp.asarray(z)))
    got = _streaming(ours, z, chunk_size)
    err = rel_err(got, whole)
    print(f"\nstreaming {frames} latent frames in runs of {chunk_size} vs whole clip: rel err {err:.2e}")
    assert got.shape == whole.shape and err <= TOL


def test_streaming_decode_of_a_causal_decoder_equals_whole_clip(tmp_path):
    make_reference(tmp_path / "vae", seed=3, **VARIANT)
    ours = load_component(tmp_path / "vae")
    z = latents(3, 2, 6, 2, 2, 4)
    err = rel_err(_streaming(ours, z, 2), np.asarray(ours.decode(jnp.asarray(z))))
    assert err <= TOL


def test_decode_chunk_runs_chain_like_one_clip(tiny):
    """Single-frame runs from the start: nothing comes out until a frame has crossed every non-causal layer, then
    8 frames per latent frame; a last run of 0 frames flushes the rest."""
    _, ours = tiny
    z = jnp.asarray(latents(8, 1, 11, 2, 2, 8))
    fn = jax.jit(lambda p, z, state, mode: ours.module.apply({"params": p}, z, state, mode, True,
                                                             method="decode_chunk"),
                 static_argnums=3)
    parts, state = [], None
    for i in range(11):
        part, state = fn(ours.params, z[:, i:i + 1], state, "stream")
        parts.append(part)
    part, _ = fn(ours.params, z[:, 11:], state, "last")
    parts.append(part)
    lengths = [p.shape[1] for p in parts]
    assert lengths[0] == 0 and lengths[-2] == 8 and lengths[-1] > 8 and sum(lengths) == 81
    err = rel_err(np.concatenate(parts, axis=1), np.asarray(ours.decode(z)))
    print(f"\ndecode_chunk runs of 1 latent frame -> {lengths} video frames vs whole clip: rel err {err:.2e}")
    assert err <= TOL


def test_diffusers_to_jax_to_diffusers_is_bit_exact_and_loads_in_diffusers(tmp_path):
    ref = make_reference(tmp_path / "vae", seed=4, **VARIANT)
    model = load_component(tmp_path / "vae")
    save_component(model, tmp_path / "jax", format="jax")
    save_component(load_component(tmp_path / "jax"), tmp_path / "back", format="diffusers")

    original = read_state_dict(tmp_path / "vae", "diffusion_pytorch_model")
    back = read_state_dict(tmp_path / "back", "diffusion_pytorch_model")
    assert sorted(original) == sorted(back) and "latents_std" in back
    for key in original:
        assert original[key].dtype == back[key].dtype and np.array_equal(original[key], back[key]), key
    with open(tmp_path / "vae" / "config.json") as f1, open(tmp_path / "back" / "config.json") as f2:
        a, b = json.load(f1), json.load(f2)
    public = {k: v for k, v in b.items() if not k.startswith("_")}
    assert {k: v for k, v in a.items() if not k.startswith("_")} == public
    reloaded = ReferenceVAE.from_pretrained(tmp_path / "back").eval()
    sa, sb = ref.state_dict(), reloaded.state_dict()
    assert sorted(sa) == sorted(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_published_ltx2_config_builds_with_diffusers_param_count():
    """The LTX-2 VAE as diffusers' converter configures it: abstract init only (no weights allocated)."""
    spec = REGISTRY["AutoencoderKLLTX2Video"]
    config = AutoencoderKLLTX2VideoConfig.from_dict(json.loads(json.dumps(LTX2_VIDEO_VAE.to_dict())))
    params = abstract_params(spec, config, spec.build(config))
    flat = jax.tree_util.tree_leaves_with_path(params)
    # diffusers counts parameters(), not the latents_mean / latents_std buffers.
    count = sum(int(np.prod(x.shape)) for path, x in flat if "latents_" not in jax.tree_util.keystr(path))
    kwargs = {k: v for k, v in LTX2_VIDEO_VAE.to_dict().items() if not k.startswith("_")}
    with torch.device("meta"):
        reference = ReferenceVAE(**kwargs)
    expected = sum(p.numel() for p in reference.parameters())
    print(f"\nLTX-2 video VAE params: {count:,} (diffusers {expected:,})")
    assert count == expected
    assert (config.spatial_ratio, config.temporal_ratio, config.latent_channels) == (32, 8, 128)
    assert params["decoder"]["up_blocks_0"]["upsamplers_0"]["conv"]["kernel"].shape == (3, 3, 3, 1024, 4096)


@pytest.mark.parametrize("shape,match", [
    ((1, 8, 64, 64, 3), r"frames = 8; expected 8k \+ 1"),
    ((1, 9, 48, 64, 3), r"height = 48; expected a positive multiple of 32"),
    ((1, 9, 64, 64, 4), r"video: expected shape \(B, F, H, W, 3\)"),
])
def test_encode_rejects_sizes_it_cannot_divide(tiny, shape, match):
    _, ours = tiny
    with pytest.raises(ValueError, match=match):
        ours.encode(jnp.zeros(shape, jnp.float32))


def test_decode_rejects_latents_with_the_wrong_channels(tiny):
    _, ours = tiny
    with pytest.raises(ValueError, match=r"latents: expected shape \(B, T >= 1, h, w, 8\)"):
        ours.decode(jnp.zeros((1, 2, 2, 2, 4), jnp.float32))
    with pytest.raises(ValueError, match="mode='first'"):
        ours.module.apply({"params": ours.params}, jnp.zeros((1, 2, 2, 2, 8)), None, "first",
                          method="decode_chunk")


@pytest.mark.parametrize("key,value", [("timestep_conditioning", True), ("decoder_inject_noise", True),
                                       ("decoder_spatial_padding_mode", "mirror")])
def test_unsupported_config_values_are_named(tmp_path, key, value):
    make_reference(tmp_path / "vae", **TINY)
    config = json.loads((tmp_path / "vae" / "config.json").read_text())
    (tmp_path / "vae" / "config.json").write_text(json.dumps({**config, key: value}))
    with pytest.raises(ConfigError, match=re.escape(f"{key}={value!r}")):
        load_component(tmp_path / "vae")
