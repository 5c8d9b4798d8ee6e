"""Shared layers: dense, normalisations, rotary embeddings and convolutions used by several models."""

from sana_jax.nn.convs import conv3d, depthwise_conv2d, temporal_conv
from sana_jax.nn.dense import dense
from sana_jax.nn.gemma import GemmaRMSNorm, apply_rotate_half_rope, gemma_rms_norm, rotate_half_rope_table
from sana_jax.nn.norms import RMSNorm, layer_norm, rms_norm
from sana_jax.nn.rope import VideoRope, apply_interleaved_rope

__all__ = ["GemmaRMSNorm", "RMSNorm", "VideoRope", "apply_interleaved_rope", "apply_rotate_half_rope", "conv3d",
           "dense", "depthwise_conv2d", "gemma_rms_norm", "layer_norm", "rms_norm", "rotate_half_rope_table",
           "temporal_conv"]
