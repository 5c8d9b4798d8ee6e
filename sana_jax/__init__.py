"""sana-jax: SANA-Video (Linear DiT text-to-video) in JAX/Flax."""

from sana_jax.components import Component, load_component, save_component
from sana_jax.kernels import linear_attention
from sana_jax.pipeline import SanaVideoPipeline

__all__ = ["Component", "SanaVideoPipeline", "linear_attention", "load_component", "save_component"]
__version__ = "0.1.0"
