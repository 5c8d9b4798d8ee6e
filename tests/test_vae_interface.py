"""Every video VAE behind one interface (what the pipeline and the block streamer call, and nothing else):
``spatial_ratio``, ``temporal_ratio``, ``latent_channels``, ``encode``, ``decode``, ``init_stream_state`` and
``decode_chunk(latents, state, mode)`` -> (video, state). The ratios are checked against what encode and decode
actually do to shapes, and runs streamed through ``decode_chunk`` ("stream" ..., then "last") against the whole
clip decoded at once. The small configs are the ones each VAE's parity tests build."""

import jax.numpy as jnp
import numpy as np
import pytest

from sana_jax import _compile, load_component
from sana_jax.testing.numerics import rel_err
from sana_jax.testing.references import (DC_AE_TINY, LTX2_VAE_TINY, WAN_VAE_TINY, make_dc_ae_reference,
                                         make_ltx2_vae_reference, make_wan_vae_reference)

INTERFACE = ("spatial_ratio", "temporal_ratio", "latent_channels", "encode", "decode", "init_stream_state",
             "decode_chunk")


def _wan(tmp_path):
    make_wan_vae_reference(tmp_path / "vae", **WAN_VAE_TINY)
    return tmp_path / "vae", (2, 2)


def _ltx2(tmp_path):
    make_ltx2_vae_reference(tmp_path / "vae", **LTX2_VAE_TINY)
    return tmp_path / "vae", (2, 2)


def _dc_ae(tmp_path):
    _, folder = make_dc_ae_reference(tmp_path, DC_AE_TINY, seed=0)
    return folder, (4, 4)


@pytest.mark.parametrize("build", [_wan, _ltx2, _dc_ae], ids=["wan", "ltx2", "dc_ae"])
def test_every_vae_exposes_the_interface_and_its_streamed_decode_equals_the_whole_decode(tmp_path, build):
    folder, (h, w) = build(tmp_path)
    vae = load_component(folder)
    module = vae.module
    assert all(hasattr(module, name) for name in INTERFACE), [n for n in INTERFACE if not hasattr(module, n)]
    s, t, c = module.spatial_ratio, module.temporal_ratio, module.latent_channels
    frames = 4  # latent frames

    video = np.random.default_rng(0).uniform(-1, 1, (1, 1 + t * (frames - 1), h * s, w * s, 3)).astype(np.float32)
    assert vae.encode(jnp.asarray(video)).shape == (1, frames, h, w, c)
    z = jnp.asarray(np.random.default_rng(1).standard_normal((1, frames, h, w, c)).astype(np.float32))
    # compiled as the pipeline's and the component's VAE programs are (`_compile`'s VAE options), so that the
    # component's clamped decode can be checked against it bit for bit
    decode_chunk = _compile.jit(lambda p, z, state, mode: module.apply({"params": p}, z, state, mode,
                                                                       method="decode_chunk"),
                                vae=True, static_argnums=3)
    whole, _ = decode_chunk(vae.params, z, None, "whole")
    assert whole.shape == video.shape
    assert np.array_equal(np.asarray(vae.decode(z)), np.clip(np.asarray(whole), -1, 1)) or \
        np.array_equal(np.asarray(vae.decode(z)), np.asarray(whole))

    parts, state = [], module.init_stream_state()
    for start, stop, mode in ((0, 1, "stream"), (1, 3, "stream"), (3, frames, "last")):
        part, state = decode_chunk(vae.params, z[:, start:stop], state, mode)
        parts.append(part)
    err = rel_err(np.concatenate(parts, axis=1), np.asarray(whole))
    print(f"\n{type(module).__name__}: runs {[p.shape[1] for p in parts]} frames vs whole clip: rel err {err:.2e}")
    assert err <= 1e-5
