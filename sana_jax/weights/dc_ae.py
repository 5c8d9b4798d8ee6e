"""Rulebook for the DC-AE (diffusers ``AutoencoderDC``) state dict <-> Flax params, both directions.

Stage ``i``'s ``j``-th module is ``encoder.down_blocks.{i}.{j}`` / ``decoder.up_blocks.{i}.{j}`` in diffusers and
``encoder/down_blocks_{i}_{j}`` / ``decoder/up_blocks_{i}_{j}`` here; which rules a stage uses (ResBlock,
EfficientViT block, down/up conv) follows from the config, and the loader checks every key and shape against it.
"""

from __future__ import annotations

from sana_jax.config import AutoencoderDCConfig
from sana_jax.weights.rulebook import CONV1X1, DEPTHWISE2D, IDENTITY, LINEAR, Layout, Rule, linear

# Conv2d (out, in / groups, kh, kw) <-> Flax conv kernel (kh, kw, in / groups, out); the grouped 1x1 keeps it too.
CONV2D = Layout("conv2d", lambda w: w.transpose(2, 3, 1, 0), lambda w: w.transpose(3, 2, 0, 1))


def _norm(torch: str, flax: str) -> list[Rule]:
    """diffusers RMSNorm with bias: ``weight`` is our ``scale``."""
    return [Rule(f"{torch}.weight", f"{flax}/scale", IDENTITY), Rule(f"{torch}.bias", f"{flax}/bias", IDENTITY)]


def _stage_rules(t: str, f: str) -> list[Rule]:
    """Every module a stage slot ``t`` (torch prefix) / ``f`` (Flax prefix) can hold."""
    return [
        # ResBlock
        *linear(f"{t}.conv1", f"{f}/conv1", layout=CONV2D),
        *linear(f"{t}.conv2", f"{f}/conv2", bias=False, layout=CONV2D),
        *_norm(f"{t}.norm", f"{f}/norm"),
        # DCDownBlock2d / DCUpBlock2d
        *linear(f"{t}.conv", f"{f}/conv", layout=CONV2D),
        # EfficientViTBlock: multi-scale linear attention ...
        *[r for n in "qkv" for r in linear(f"{t}.attn.to_{n}", f"{f}/attn/to_{n}", bias=False)],
        Rule(f"{t}.attn.to_qkv_multiscale.{{s}}.proj_in.weight", f"{f}/attn/to_qkv_multiscale_{{s}}/proj_in/kernel",
             DEPTHWISE2D),
        Rule(f"{t}.attn.to_qkv_multiscale.{{s}}.proj_out.weight",
             f"{f}/attn/to_qkv_multiscale_{{s}}/proj_out/kernel", CONV2D),
        *linear(f"{t}.attn.to_out", f"{f}/attn/to_out", bias=False, layout=LINEAR),
        *_norm(f"{t}.attn.norm_out", f"{f}/attn/norm_out"),
        # ... and the GLUMBConv
        *linear(f"{t}.conv_out.conv_inverted", f"{f}/conv_out/conv_inverted", layout=CONV1X1),
        Rule(f"{t}.conv_out.conv_depth.weight", f"{f}/conv_out/conv_depth/kernel", DEPTHWISE2D),
        Rule(f"{t}.conv_out.conv_depth.bias", f"{f}/conv_out/conv_depth/bias", IDENTITY),
        *linear(f"{t}.conv_out.conv_point", f"{f}/conv_out/conv_point", bias=False, layout=CONV1X1),
        *_norm(f"{t}.conv_out.norm", f"{f}/conv_out/norm"),
    ]


def diffusers_rules(config: AutoencoderDCConfig) -> list[Rule]:
    """diffusers ``AutoencoderDC`` state dict <-> Flax params of ``sana_jax.models.dc_ae.DCAutoencoder``."""
    del config  # one table serves every config; the loader's shape check ties it to the config
    return [
        # conv_in is a plain conv, or (first stage without layers) a down block holding `conv`; likewise conv_out.
        *linear("encoder.conv_in", "encoder/conv_in", layout=CONV2D),
        *linear("encoder.conv_in.conv", "encoder/conv_in/conv", layout=CONV2D),
        *_stage_rules("encoder.down_blocks.{i}.{j}", "encoder/down_blocks_{i}_{j}"),
        *linear("encoder.conv_out", "encoder/conv_out", layout=CONV2D),
        *linear("decoder.conv_in", "decoder/conv_in", layout=CONV2D),
        *_stage_rules("decoder.up_blocks.{i}.{j}", "decoder/up_blocks_{i}_{j}"),
        *_norm("decoder.norm_out", "decoder/norm_out"),
        *linear("decoder.conv_out", "decoder/conv_out", layout=CONV2D),
        *linear("decoder.conv_out.conv", "decoder/conv_out/conv", layout=CONV2D),
    ]
