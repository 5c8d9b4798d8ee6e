"""Shared fixtures: random-weight PyTorch reference models saved in their real folder format."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
# Eight simulated CPU devices for the sharding tests; single-device tests still run on device 0.
jax.config.update("jax_num_cpu_devices", 8)
# Training runs compile the same step again on resume: share compilations within this pytest run only (a fresh
# temporary folder, removed at exit), never between runs.
_COMPILE_CACHE = tempfile.mkdtemp(prefix="sana_jax_test_xla_cache_")
atexit.register(shutil.rmtree, _COMPILE_CACHE, ignore_errors=True)
jax.config.update("jax_compilation_cache_dir", _COMPILE_CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)

torch = pytest.importorskip("torch")


def randomize_(module, seed: int = 0, scale: float = 0.5):
    """Every parameter random (norm weights and zero-initialised convs too), so no term hides behind a 0 or 1."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(module.named_parameters()):
            if name.endswith(("norm_q.weight", "norm_k.weight", "caption_norm.weight")):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            else:
                fan_in = p[0].numel() if p.ndim > 1 else p.shape[0]
                p.copy_(scale * torch.randn(p.shape, generator=gen) / max(fan_in, 1) ** 0.5)
    return module


def rel_err(a, b) -> float:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))
