"""sana-jax: SANA-Video (Linear DiT text-to-video) in JAX/Flax.

The names below load on first use, so that ``import sana_jax._host`` (the entry points' first step, before they
restart the interpreter under the tuned malloc) does not import JAX."""

import importlib

_EXPORTS = {"Component": "sana_jax.components", "load_component": "sana_jax.components",
            "save_component": "sana_jax.components", "linear_attention": "sana_jax.kernels",
            "SanaVideoPipeline": "sana_jax.pipeline"}

__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sana_jax' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_EXPORTS})
