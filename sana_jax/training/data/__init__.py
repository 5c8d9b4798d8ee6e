"""Training data: batches of generated latents, decoded videos (manifest) or precomputed latents (latent cache).

    it = make_iterator(data_cfg, batch_size=B, process_index=p, process_count=P)
    batch = next(it); state = it.get_state(); it.set_state(state); it.skipped
    embeds, mask = null_text(data_cfg)
    precompute_latent_cache(manifest, pipeline, out_dir, height=..., width=..., frames=..., fps=...)
"""

from sana_jax.training.data.config import DataConfig, DataConfigError, read_data_config
from sana_jax.training.data.latent_cache import LatentCacheError, LatentCacheWriter
from sana_jax.training.data.pipeline import DataIterator, make_iterator, null_text
from sana_jax.training.data.precompute import precompute_latent_cache

__all__ = ["DataConfig", "DataConfigError", "DataIterator", "LatentCacheError", "LatentCacheWriter",
           "make_iterator", "null_text", "precompute_latent_cache", "read_data_config"]
