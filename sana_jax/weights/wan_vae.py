"""Rulebook for the Wan2.1 video VAE: diffusers ``AutoencoderKLWan`` state dict <-> Flax params, both directions.

Every ``WanCausalConv3d`` (3x3x3, the (3,1,1) time convs, the 1x1x1 shortcut / quant convs) keeps its 5-D kernel
as (kt, kh, kw, in, out); the per-frame Conv2d of the resamplers is (kh, kw, in, out); the attention's 1x1 Conv2d
are Dense kernels; ``WanRMS_norm.gamma`` (C, 1, 1, 1) or (C, 1, 1) is (C,).
"""

from __future__ import annotations

from sana_jax.config import AutoencoderKLWanConfig
from sana_jax.weights.rulebook import CONV1X1, CONV3D, Layout, Rule, linear

# Conv2d (out, in, kh, kw) <-> (kh, kw, in, out).
CONV2D = Layout("conv2d", lambda w: w.transpose(2, 3, 1, 0), lambda w: w.transpose(3, 2, 0, 1))
# WanRMS_norm gamma of the 3-D (C, 1, 1, 1) and image (C, 1, 1) variants <-> (C,).
GAMMA3D = Layout("gamma3d", lambda w: w.reshape(-1), lambda w: w.reshape(-1, 1, 1, 1))
GAMMA2D = Layout("gamma2d", lambda w: w.reshape(-1), lambda w: w.reshape(-1, 1, 1))


def _conv3d(torch: str, flax: str) -> list[Rule]:
    return linear(torch, flax, layout=CONV3D)


def _residual(torch: str, flax: str) -> list[Rule]:
    return [
        Rule(f"{torch}.norm1.gamma", f"{flax}/norm1/gamma", GAMMA3D),
        Rule(f"{torch}.norm2.gamma", f"{flax}/norm2/gamma", GAMMA3D),
        *_conv3d(f"{torch}.conv1", f"{flax}/conv1"),
        *_conv3d(f"{torch}.conv2", f"{flax}/conv2"),
        *_conv3d(f"{torch}.conv_shortcut", f"{flax}/conv_shortcut"),
    ]


def _attention(torch: str, flax: str) -> list[Rule]:
    return [
        Rule(f"{torch}.norm.gamma", f"{flax}/norm/gamma", GAMMA2D),
        *linear(f"{torch}.to_qkv", f"{flax}/to_qkv", layout=CONV1X1),
        *linear(f"{torch}.proj", f"{flax}/proj", layout=CONV1X1),
    ]


def _resample(torch: str, flax: str) -> list[Rule]:
    return [*linear(f"{torch}.resample.1", f"{flax}/resample", layout=CONV2D),
            *_conv3d(f"{torch}.time_conv", f"{flax}/time_conv")]


def _mid_block(torch: str, flax: str) -> list[Rule]:
    return [*_residual(f"{torch}.resnets.{{j}}", f"{flax}/resnets_{{j}}"),
            *_attention(f"{torch}.attentions.{{j}}", f"{flax}/attentions_{{j}}")]


def diffusers_rules(config: AutoencoderKLWanConfig) -> list[Rule]:
    """diffusers ``AutoencoderKLWan`` state dict <-> Flax params of ``sana_jax.models.wan_vae.AutoencoderKLWan``.

    The encoder's ``down_blocks`` is one flat list of residual and resample layers; their key names differ, so one
    pattern per kind covers every index (the loader checks each key against the config's shapes).
    """
    del config  # the key patterns do not depend on the sizes
    down = "encoder.down_blocks.{i}", "encoder/down_blocks_{i}"
    return [
        *_conv3d("encoder.conv_in", "encoder/conv_in"),
        *_residual(*down), *_resample(*down),
        *_mid_block("encoder.mid_block", "encoder/mid_block"),
        Rule("encoder.norm_out.gamma", "encoder/norm_out/gamma", GAMMA3D),
        *_conv3d("encoder.conv_out", "encoder/conv_out"),
        *_conv3d("quant_conv", "quant_conv"),
        *_conv3d("post_quant_conv", "post_quant_conv"),
        *_conv3d("decoder.conv_in", "decoder/conv_in"),
        *_mid_block("decoder.mid_block", "decoder/mid_block"),
        *_residual("decoder.up_blocks.{i}.resnets.{j}", "decoder/up_blocks_{i}/resnets_{j}"),
        *_resample("decoder.up_blocks.{i}.upsamplers.0", "decoder/up_blocks_{i}/upsampler"),
        Rule("decoder.norm_out.gamma", "decoder/norm_out/gamma", GAMMA3D),
        *_conv3d("decoder.conv_out", "decoder/conv_out"),
    ]
