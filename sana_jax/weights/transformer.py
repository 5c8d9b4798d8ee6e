"""Rulebooks for the SANA-Video transformer: diffusers <-> Flax, and the original NVlabs layout -> diffusers."""

from __future__ import annotations

import re
from typing import Mapping

import numpy as np

from sana_jax.config import SanaVideoTransformerConfig
from sana_jax.weights.rulebook import (CONV1X1, CONV3D, DEPTHWISE2D, TEMPORAL, Rule, WeightMappingError,
                                       linear)

BLOCKS = "transformer_blocks"


def diffusers_rules(config: SanaVideoTransformerConfig) -> list[Rule]:
    """diffusers ``SanaVideoTransformer3DModel`` state dict <-> unscanned Flax params (per-layer keys)."""
    time_prefix = "time_embed" if config.guidance_embeds else "time_embed.emb"
    b = f"{BLOCKS}.{{L}}"
    f = f"{BLOCKS}_{{L}}"
    rules = [
        Rule("patch_embedding.weight", "patch_embedding_kernel", CONV3D),
        Rule("patch_embedding.bias", "patch_embedding_bias"),
        *linear(f"{time_prefix}.timestep_embedder.linear_1", "timestep_embedder/linear_1"),
        *linear(f"{time_prefix}.timestep_embedder.linear_2", "timestep_embedder/linear_2"),
        *linear("time_embed.guidance_embedder.linear_1", "guidance_embedder/linear_1"),
        *linear("time_embed.guidance_embedder.linear_2", "guidance_embedder/linear_2"),
        *linear("time_embed.linear", "time_linear"),
        *linear("caption_projection.linear_1", "caption_linear_1"),
        *linear("caption_projection.linear_2", "caption_linear_2"),
        Rule("caption_norm.weight", "caption_norm/scale"),
        Rule(f"{b}.scale_shift_table", f"{f}/scale_shift_table"),
        *[r for n in ("q", "k", "v") for r in linear(f"{b}.attn1.to_{n}", f"{f}/attn1/to_{n}",
                                                      bias=config.attention_bias)],
        *linear(f"{b}.attn1.to_out.0", f"{f}/attn1/to_out"),
        *[r for n in ("q", "k", "v", "out.0") for r in linear(f"{b}.attn2.to_{n}", f"{f}/attn2/to_{n[:3]}")],
        *[Rule(f"{b}.{a}.norm_{n}.weight", f"{f}/{a}/norm_{n}/scale") for a in ("attn1", "attn2") for n in "qk"],
        *linear(f"{b}.ff.conv_inverted", f"{f}/ff/conv_inverted", layout=CONV1X1),
        Rule(f"{b}.ff.conv_depth.weight", f"{f}/ff/conv_depth_kernel", DEPTHWISE2D),
        Rule(f"{b}.ff.conv_depth.bias", f"{f}/ff/conv_depth_bias"),
        *linear(f"{b}.ff.conv_point", f"{f}/ff/conv_point", bias=False, layout=CONV1X1),
        Rule(f"{b}.ff.conv_temp.weight", f"{f}/ff/conv_temp_kernel", TEMPORAL),
        Rule("scale_shift_table", "scale_shift_table"),
        *linear("proj_out", "proj_out"),
    ]
    return rules


# Original NVlabs key -> diffusers key(s). Several targets: the tensor is split in equal parts along dim 0
# (qkv in 3, the cross-attention kv in 2).
ORIGINAL_RULES: list[tuple[str, tuple[str, ...]]] = [
    ("x_embedder.proj.{p}", ("patch_embedding.{p}",)),
    ("y_embedder.y_proj.fc1.{p}", ("caption_projection.linear_1.{p}",)),
    ("y_embedder.y_proj.fc2.{p}", ("caption_projection.linear_2.{p}",)),
    ("t_embedder.mlp.0.{p}", ("time_embed.emb.timestep_embedder.linear_1.{p}",)),
    ("t_embedder.mlp.2.{p}", ("time_embed.emb.timestep_embedder.linear_2.{p}",)),
    ("t_block.1.{p}", ("time_embed.linear.{p}",)),
    ("attention_y_norm.weight", ("caption_norm.weight",)),
    ("blocks.{L}.scale_shift_table", ("transformer_blocks.{L}.scale_shift_table",)),
    ("blocks.{L}.attn.qkv.weight", tuple(f"transformer_blocks.{{L}}.attn1.to_{n}.weight" for n in "qkv")),
    ("blocks.{L}.attn.q_norm.weight", ("transformer_blocks.{L}.attn1.norm_q.weight",)),
    ("blocks.{L}.attn.k_norm.weight", ("transformer_blocks.{L}.attn1.norm_k.weight",)),
    ("blocks.{L}.attn.proj.{p}", ("transformer_blocks.{L}.attn1.to_out.0.{p}",)),
    ("blocks.{L}.mlp.inverted_conv.conv.{p}", ("transformer_blocks.{L}.ff.conv_inverted.{p}",)),
    ("blocks.{L}.mlp.depth_conv.conv.{p}", ("transformer_blocks.{L}.ff.conv_depth.{p}",)),
    ("blocks.{L}.mlp.point_conv.conv.weight", ("transformer_blocks.{L}.ff.conv_point.weight",)),
    ("blocks.{L}.mlp.t_conv.weight", ("transformer_blocks.{L}.ff.conv_temp.weight",)),
    ("blocks.{L}.cross_attn.q_linear.{p}", ("transformer_blocks.{L}.attn2.to_q.{p}",)),
    ("blocks.{L}.cross_attn.kv_linear.{p}", tuple(f"transformer_blocks.{{L}}.attn2.to_{n}.{{p}}" for n in "kv")),
    ("blocks.{L}.cross_attn.q_norm.weight", ("transformer_blocks.{L}.attn2.norm_q.weight",)),
    ("blocks.{L}.cross_attn.k_norm.weight", ("transformer_blocks.{L}.attn2.norm_k.weight",)),
    ("blocks.{L}.cross_attn.proj.{p}", ("transformer_blocks.{L}.attn2.to_out.0.{p}",)),
    ("final_layer.linear.{p}", ("proj_out.{p}",)),
    ("final_layer.scale_shift_table", ("scale_shift_table",)),
]
# Training-only tensors of the original checkpoint that the model does not use.
ORIGINAL_DROPPED = ("y_embedder.y_embedding", "pos_embed", "logvar_linear.weight", "logvar_linear.bias")


def original_to_diffusers(state_dict: Mapping[str, np.ndarray], *, source: str) -> dict[str, np.ndarray]:
    """Renames (and splits) an original NVlabs state dict into diffusers keys."""
    compiled = []
    for pattern, targets in ORIGINAL_RULES:
        body = re.escape(pattern).replace(r"\{L\}", r"(?P<L>\d+)").replace(r"\{p\}", r"(?P<p>weight|bias)")
        compiled.append((re.compile(f"^{body}$"), targets))
    out, unexpected = {}, []
    for key, value in state_dict.items():
        if key in ORIGINAL_DROPPED:
            continue
        for regex, targets in compiled:
            m = regex.match(key)
            if m is None:
                continue
            parts = np.split(np.asarray(value), len(targets), axis=0) if len(targets) > 1 else [value]
            if len(targets) > 1 and value.shape[0] % len(targets):
                raise WeightMappingError(f"{source}: {key} has shape {value.shape}; dim 0 must split in "
                                         f"{len(targets)}")
            for target, part in zip(targets, parts):
                out[target.format(**m.groupdict())] = part
            break
        else:
            unexpected.append(key)
    if unexpected:
        raise WeightMappingError(f"{source}: unexpected key(s) in the original checkpoint: {sorted(unexpected)[:20]}")
    return out
