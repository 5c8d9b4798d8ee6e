"""Shared layers: normalisations, rotary embeddings and convolutions used by several models."""

from sana_jax.nn.convs import depthwise_conv2d, temporal_conv
from sana_jax.nn.norms import RMSNorm, layer_norm, rms_norm
from sana_jax.nn.rope import VideoRope, apply_interleaved_rope

__all__ = ["RMSNorm", "VideoRope", "apply_interleaved_rope", "depthwise_conv2d", "layer_norm", "rms_norm",
           "temporal_conv"]
