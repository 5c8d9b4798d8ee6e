"""Tiny random-weight diffusers references: the SANA-Video transformer and each video VAE, saved with
save_pretrained so our loader reads them. Needs the test extras (torch, diffusers); they are imported inside the
builders, so this module imports without them."""

from __future__ import annotations

import numpy as np

from sana_jax.testing.numerics import randomize_
from sana_jax.testing.pipelines import TINY_LTX2, randomize_ltx2_buffers_

# --- the transformer (SanaVideoTransformer3DModel) ---------------------------------------------------------------

TRANSFORMER_TINY = dict(in_channels=16, out_channels=16, num_attention_heads=2, attention_head_dim=12, num_layers=2,
                        num_cross_attention_heads=2, cross_attention_head_dim=12, cross_attention_dim=24,
                        caption_channels=32, mlp_ratio=2.5, dropout=0.0, attention_bias=False, sample_size=30,
                        patch_size=(1, 2, 2), norm_elementwise_affine=False, norm_eps=1e-6,
                        qk_norm="rms_norm_across_heads", rope_max_seq_len=32)


def make_transformer_reference(tmp_path, seed=0, **overrides):
    from diffusers import SanaVideoTransformer3DModel

    cfg = {**TRANSFORMER_TINY, **overrides}
    model = randomize_(SanaVideoTransformer3DModel(**cfg), seed=seed).eval()
    folder = tmp_path / "transformer"
    model.save_pretrained(folder)
    return model, folder


def run_transformer_reference(model, x, t, ctx, mask=None, guidance=None):
    """x channels-last (B, F, H, W, C) -> diffusers channels-first call -> channels-last output."""
    import torch

    with torch.no_grad():
        out = model(torch.from_numpy(x.transpose(0, 4, 1, 2, 3)), torch.from_numpy(ctx), torch.from_numpy(t),
                    guidance=None if guidance is None else torch.from_numpy(guidance),
                    encoder_attention_mask=None if mask is None else torch.from_numpy(mask)).sample
    return out.numpy().transpose(0, 2, 3, 4, 1)


def transformer_inputs(seed, b, f, h, w, c, text_len=7, caption=32):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((b, f, h, w, c), dtype=np.float32)
    ctx = rng.standard_normal((b, text_len, caption), dtype=np.float32)
    t = rng.uniform(0, 1000, size=(b,)).astype(np.float32)
    return x, t, ctx


# --- Wan 2.1 VAE (AutoencoderKLWan) ------------------------------------------------------------------------------

WAN_VAE_TINY = dict(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                    temperal_downsample=[False, True, True])


def make_wan_vae_reference(folder, seed=0, scale=0.5, **config):
    from diffusers import AutoencoderKLWan as ReferenceVAE

    model = randomize_(ReferenceVAE(**config), seed=seed, scale=scale).eval()
    model.save_pretrained(folder)
    return model


# --- LTX-2 video VAE (AutoencoderKLLTX2Video) --------------------------------------------------------------------

# The published layout (spatial / temporal / spatiotemporal x2 downsamplers, non-causal reflect-padded decoder with
# residual depth-to-space upsamplers), narrow and one resnet per block: 32x spatial, 8x temporal.
LTX2_VAE_TINY = TINY_LTX2


def make_ltx2_vae_reference(folder, seed=0, scale=0.5, **config):
    from diffusers import AutoencoderKLLTX2Video as ReferenceVAE

    model = randomize_ltx2_buffers_(randomize_(ReferenceVAE(**config), seed=seed, scale=scale).eval(), seed + 1)
    model.save_pretrained(folder)
    return model


# --- DC-AE (AutoencoderDC) ---------------------------------------------------------------------------------------

# diffusers' own test config (tests/models/autoencoders/test_models_autoencoder_dc.py).
DC_AE_TINY = dict(in_channels=3, latent_channels=4, attention_head_dim=2,
                  encoder_block_types=("ResBlock", "EfficientViTBlock"),
                  decoder_block_types=("ResBlock", "EfficientViTBlock"),
                  encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8),
                  encoder_qkv_multiscales=((), (5,)), decoder_qkv_multiscales=((), (5,)),
                  encoder_layers_per_block=(1, 1), decoder_layers_per_block=[1, 1], downsample_block_type="conv",
                  upsample_block_type="interpolate", decoder_norm_types="rms_norm", decoder_act_fns="silu",
                  scaling_factor=0.41407)


def make_dc_ae_reference(tmp_path, config, seed):
    from diffusers import AutoencoderDC

    model = randomize_(AutoencoderDC(**config), seed=seed).eval()
    folder = tmp_path / "vae"
    model.save_pretrained(folder)
    return model, folder
