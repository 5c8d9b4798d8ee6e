"""Sampling pipelines: prompt processing, text-to-video / image-to-video, video IO."""

from sana_jax.pipeline.sana_video import SanaVideoPipeline

__all__ = ["SanaVideoPipeline"]
