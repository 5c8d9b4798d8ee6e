"""Rulebook for the LTX-2 video VAE: diffusers ``AutoencoderKLLTX2Video`` state dict <-> Flax params, both ways.

Every ``LTX2VideoCausalConv3d`` wraps an ``nn.Conv3d`` as ``.conv``; its kernel is (kt, kh, kw, in, out) here.
The resnet shortcut is a plain 1x1x1 ``nn.Conv3d`` (a Dense kernel here) after a ``LayerNorm`` (scale, bias).
The ``latents_mean`` / ``latents_std`` buffers are two top-level params.
"""

from __future__ import annotations

from sana_jax.config import AutoencoderKLLTX2VideoConfig
from sana_jax.weights.rulebook import CONV3D, Layout, Rule, linear

# 1x1x1 Conv3d (out, in, 1, 1, 1) <-> Dense (in, out).
CONV1X1X1 = Layout("conv1x1x1", lambda w: w[:, :, 0, 0, 0].T, lambda w: w.T[:, :, None, None, None])


def _conv(torch: str, flax: str) -> list[Rule]:
    """An ``LTX2VideoCausalConv3d`` at ``torch`` (its Conv3d is ``torch.conv``)."""
    return linear(f"{torch}.conv", flax, layout=CONV3D)


def _resnet(torch: str, flax: str) -> list[Rule]:
    return [*_conv(f"{torch}.conv1", f"{flax}/conv1"), *_conv(f"{torch}.conv2", f"{flax}/conv2"),
            Rule(f"{torch}.norm3.weight", f"{flax}/norm3/scale"), Rule(f"{torch}.norm3.bias", f"{flax}/norm3/bias"),
            *linear(f"{torch}.conv_shortcut", f"{flax}/conv_shortcut", layout=CONV1X1X1)]


def diffusers_rules(config: AutoencoderKLLTX2VideoConfig) -> list[Rule]:
    """diffusers ``AutoencoderKLLTX2Video`` <-> ``sana_jax.models.ltx2_vae.AutoencoderKLLTX2Video`` params."""
    del config  # the key patterns do not depend on the sizes
    down = ("encoder.down_blocks.{i}", "encoder/down_blocks_{i}")
    up = ("decoder.up_blocks.{i}", "decoder/up_blocks_{i}")
    return [
        *_conv("encoder.conv_in", "encoder/conv_in"),
        *_resnet(f"{down[0]}.resnets.{{j}}", f"{down[1]}/resnets_{{j}}"),
        *linear(f"{down[0]}.downsamplers.0.conv", f"{down[1]}/downsamplers_0", layout=CONV3D),    # kind "conv"
        *_conv(f"{down[0]}.downsamplers.0.conv", f"{down[1]}/downsamplers_0/conv"),               # Downsampler3d
        *_resnet("encoder.mid_block.resnets.{j}", "encoder/mid_block/resnets_{j}"),
        *_conv("encoder.conv_out", "encoder/conv_out"),
        *_conv("decoder.conv_in", "decoder/conv_in"),
        *_resnet("decoder.mid_block.resnets.{j}", "decoder/mid_block/resnets_{j}"),
        *_resnet(f"{up[0]}.conv_in", f"{up[1]}/conv_in"),
        *_conv(f"{up[0]}.upsamplers.0.conv", f"{up[1]}/upsamplers_0/conv"),
        *_resnet(f"{up[0]}.resnets.{{j}}", f"{up[1]}/resnets_{{j}}"),
        *_conv("decoder.conv_out", "decoder/conv_out"),
        Rule("latents_mean", "latents_mean"),
        Rule("latents_std", "latents_std"),
    ]
