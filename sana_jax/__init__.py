"""sana-jax: SANA-Video (Linear DiT text-to-video) in JAX/Flax."""

from sana_jax.components import Component, load_component, save_component
from sana_jax.kernels import linear_attention

__all__ = ["Component", "linear_attention", "load_component", "save_component"]
__version__ = "0.1.0"
