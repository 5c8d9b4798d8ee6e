"""The Flax DC-AE against diffusers' AutoencoderDC: random weights, save_pretrained, our loader, fp32 parity."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import AutoencoderDC

from sana_jax.testing.numerics import rel_err
from sana_jax.testing.references import DC_AE_TINY as TINY
from sana_jax.testing.references import make_dc_ae_reference as make_reference
from sana_jax import load_component, save_component
from sana_jax._io import write_safetensors
from sana_jax.components import REGISTRY, abstract_params
from sana_jax.config import SANA_DC_AE_F32C32, AutoencoderDCConfig, ConfigError
from sana_jax.weights.dc_ae import diffusers_rules
from sana_jax.weights.io import read_state_dict
from sana_jax.weights.rulebook import WeightMappingError, check_against, flatten, torch_to_flax

# The structure of the published DC-AE in/mix configs at a small width: pixel (un)shuffle, a first stage with no
# layers (conv_in / conv_out become a down / up block), per-block norm and act lists, two attention scales.
WIDE = dict(in_channels=3, latent_channels=8, attention_head_dim=8,
            encoder_block_types=("ResBlock", "ResBlock", "EfficientViTBlock"),
            decoder_block_types=("ResBlock", "ResBlock", "EfficientViTBlock"),
            encoder_block_out_channels=(8, 16, 32), decoder_block_out_channels=(8, 16, 32),
            encoder_layers_per_block=(0, 1, 2), decoder_layers_per_block=(0, 2, 2),
            encoder_qkv_multiscales=((), (), (3, 5)), decoder_qkv_multiscales=((), (), (5,)),
            downsample_block_type="pixel_unshuffle", upsample_block_type="pixel_shuffle",
            decoder_norm_types=("rms_norm", "rms_norm", "rms_norm"), decoder_act_fns=("relu", "gelu", "silu"),
            decoder_conv_act_fn="silu", scaling_factor=0.3189)
# The published SANA spelling "Conv", both shortcuts off, SANA's own act lists.
NO_SHORTCUTS = {**TINY, "downsample_block_type": "Conv", "encoder_out_shortcut": False, "decoder_in_shortcut": False,
                "decoder_act_fns": ["relu", "silu"], "decoder_conv_act_fn": "relu"}


def images(seed, shape):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def reference_encode(model, x):
    """Channels-last images -> diffusers latents * scaling_factor, channels-last."""
    with torch.no_grad():
        z = model.encode(torch.from_numpy(x.transpose(0, 3, 1, 2))).latent * model.config.scaling_factor
    return z.numpy().transpose(0, 2, 3, 1)


def reference_decode(model, z):
    with torch.no_grad():
        x = model.decode(torch.from_numpy(z.transpose(0, 3, 1, 2)) / model.config.scaling_factor).sample
    return x.numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize("config,shape,seed", [
    pytest.param(TINY, (2, 32, 32, 3), 0, id="diffusers_test_config"),
    pytest.param(TINY, (1, 16, 24, 3), 1, id="diffusers_test_config_nonsquare"),
    pytest.param(WIDE, (2, 16, 24, 3), 2, id="pixel_shuffle_per_block_lists_two_scales"),
    # The deepest map is 2x2 = 4 <= attention_head_dim 8: diffusers' quadratic attention path.
    pytest.param(WIDE, (1, 8, 8, 3), 3, id="quadratic_attention_tiny_map"),
    pytest.param(NO_SHORTCUTS, (2, 8, 12, 3), 4, id="no_shortcuts_Conv_act_lists"),
])
def test_encode_and_decode_match_diffusers(tmp_path, config, shape, seed):
    ref_model, folder = make_reference(tmp_path, config, seed)
    x = images(seed, shape)
    ref_z = reference_encode(ref_model, x)
    ref_x = reference_decode(ref_model, ref_z)
    model = load_component(folder)
    z = np.asarray(model.encode(jnp.asarray(x)))
    f = 2 ** (len(config["encoder_block_out_channels"]) - 1)
    assert z.shape == (shape[0], shape[1] // f, shape[2] // f, config["latent_channels"]) == ref_z.shape
    err_z = rel_err(z, ref_z)
    err_x = rel_err(np.asarray(model.decode(jnp.asarray(ref_z))), ref_x)
    print(f"latents rel err {err_z:.2e}, images rel err {err_x:.2e}")
    assert err_z <= 1e-5 and err_x <= 1e-5
    # __call__ is decode(encode(x)): init builds both halves.
    np.testing.assert_allclose(np.asarray(model(jnp.asarray(x))), np.asarray(model.decode(jnp.asarray(z))),
                               rtol=1e-6, atol=1e-6)


def test_video_is_coded_frame_by_frame_like_diffusers_per_frame(tmp_path):
    ref_model, folder = make_reference(tmp_path, TINY, seed=5)
    video = images(5, (2, 3, 8, 12, 3))  # (B, F, H, W, C)
    ref_z = np.stack([reference_encode(ref_model, video[:, t]) for t in range(3)], axis=1)
    ref_x = np.stack([reference_decode(ref_model, ref_z[:, t]) for t in range(3)], axis=1)
    model = load_component(folder)
    z = np.asarray(model.encode(jnp.asarray(video)))
    x = np.asarray(model.decode(jnp.asarray(ref_z)))
    assert z.shape == (2, 3, 4, 6, 4) and x.shape == video.shape
    err_z, err_x = rel_err(z, ref_z), rel_err(x, ref_x)
    print(f"video latents rel err {err_z:.2e}, frames rel err {err_x:.2e}")
    assert err_z <= 1e-5 and err_x <= 1e-5


@pytest.mark.parametrize("config", [pytest.param(TINY, id="tiny"), pytest.param(WIDE, id="wide")])
def test_diffusers_to_jax_to_diffusers_is_bit_exact_and_loads_in_diffusers(tmp_path, config):
    ref_model, folder = make_reference(tmp_path, config, seed=6)
    save_component(load_component(folder), tmp_path / "jax", format="jax")
    save_component(load_component(tmp_path / "jax"), tmp_path / "back", format="diffusers")

    original = read_state_dict(folder, "diffusion_pytorch_model")
    back = read_state_dict(tmp_path / "back", "diffusion_pytorch_model")
    assert sorted(original) == sorted(back)
    for key in original:
        assert original[key].dtype == back[key].dtype and np.array_equal(original[key], back[key]), key
    a = json.loads((folder / "config.json").read_text())
    b = json.loads((tmp_path / "back" / "config.json").read_text())
    def public(d):
        return {k: v for k, v in d.items() if not k.startswith("_")}

    assert public(a) == public(b)

    reloaded = AutoencoderDC.from_pretrained(tmp_path / "back").eval()
    sa, sb = ref_model.state_dict(), reloaded.state_dict()
    assert sorted(sa) == sorted(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)
    x = images(6, (1, 8, 8, 3))
    assert rel_err(reference_encode(reloaded, x), reference_encode(ref_model, x)) <= 1e-6


def test_bfloat16_compute_stays_close_to_fp32_reference(tmp_path):
    ref_model, folder = make_reference(tmp_path, TINY, seed=7)
    x = images(7, (1, 16, 16, 3))
    ref_z = reference_encode(ref_model, x)
    model = load_component(folder, dtype="bfloat16")
    z = model.encode(jnp.asarray(x))
    assert z.dtype == jnp.bfloat16
    assert rel_err(np.asarray(z, np.float32), ref_z) < 5e-2


def test_published_sana_f32c32_builds_abstractly_with_diffusers_parameter_count():
    spec = REGISTRY["AutoencoderDC"]
    params = flatten(abstract_params(spec, SANA_DC_AE_F32C32, spec.build(SANA_DC_AE_F32C32)))
    count = sum(int(np.prod(v.shape)) for v in params.values())
    assert count == 312_250_275

    config = {k: v for k, v in SANA_DC_AE_F32C32.to_dict().items() if not k.startswith("_")}
    with torch.device("meta"):
        reference = AutoencoderDC(**config)
    assert sum(p.numel() for p in reference.parameters()) == count
    # Every diffusers tensor maps onto exactly one of our params with the right shape, and nothing is left over.
    shapes = {k: np.broadcast_to(np.zeros((), np.float32), tuple(v.shape)) for k, v in reference.state_dict().items()}
    rules = diffusers_rules(SANA_DC_AE_F32C32)
    check_against(torch_to_flax(shapes, rules), {k: v.shape for k, v in params.items()}, rules, source="meta")


def test_published_config_json_round_trips(tmp_path):
    SANA_DC_AE_F32C32.to_json_file(tmp_path / "config.json")
    assert AutoencoderDCConfig.from_json_file(tmp_path / "config.json") == SANA_DC_AE_F32C32
    assert AutoencoderDC.load_config(tmp_path)["downsample_block_type"] == "Conv"


@pytest.mark.parametrize("shape,match", [
    ((1, 10, 16, 3), r"images: height and width must be multiples of 4 \(the spatial compression ratio\); got 10 x 16"),
    ((1, 2, 16, 16, 4), r"images must be channels-last \(B, H, W, 3\) images or \(B, F, H, W, 3\) video"),
    ((16, 16, 3), r"images must be channels-last"),
])
def test_bad_images_name_the_argument(tmp_path, shape, match):
    _, folder = make_reference(tmp_path, WIDE, seed=8)
    model = load_component(folder)
    with pytest.raises(ValueError, match=match):
        model.encode(jnp.zeros(shape))


def test_bad_latents_name_the_argument(tmp_path):
    _, folder = make_reference(tmp_path, TINY, seed=8)
    model = load_component(folder)
    with pytest.raises(ValueError, match=r"latents must be channels-last \(B, H, W, 4\)"):
        model.decode(jnp.zeros((1, 4, 4, 3)))


@pytest.mark.parametrize("key,value", [
    ("decoder_norm_types", ["batch_norm", "rms_norm"]),
    ("decoder_act_fns", "relu6"),
    ("decoder_conv_act_fn", "tanh"),
    ("downsample_block_type", "avg_pool"),
    ("upsample_block_type", "bilinear"),
    ("encoder_block_types", ["ResBlock", "EViTS5_GLU"]),
    ("decoder_layers_per_block", [1, 1, 1]),
])
def test_unsupported_option_values_are_named(tmp_path, key, value):
    data = {**json.loads(json.dumps(TINY)), "_class_name": "AutoencoderDC", key: value}
    spec = REGISTRY["AutoencoderDC"]
    with pytest.raises(ConfigError, match=key):
        spec.build(AutoencoderDCConfig.from_dict(data))


def test_missing_and_misshaped_tensors_are_named_in_pytorch_layout(tmp_path):
    _, folder = make_reference(tmp_path, TINY, seed=9)
    state = read_state_dict(folder, "diffusion_pytorch_model")
    key = "decoder.up_blocks.1.0.attn.to_qkv_multiscale.0.proj_out.weight"
    write_safetensors(folder / "diffusion_pytorch_model.safetensors", {k: v for k, v in state.items() if k != key})
    with pytest.raises(WeightMappingError, match=rf"missing.*{key} \(expected shape \(24, 2, 1, 1\)\)"):
        load_component(folder)
    bad = {**state, "encoder.down_blocks.1.0.attn.to_qkv_multiscale.0.proj_in.weight": np.zeros((24, 1, 3, 3),
                                                                                                   np.float32)}
    write_safetensors(folder / "diffusion_pytorch_model.safetensors", bad)
    with pytest.raises(WeightMappingError, match=r"proj_in\.weight has shape \(24, 1, 3, 3\).*\(24, 1, 5, 5\)"):
        load_component(folder)
