"""``jit``: ``jax.jit`` with the XLA compiler options measured best for this project's sampling programs on the
platform they compile for. The pipeline's denoising loop and decode and the block streamer's step and decode are
built through it, so the choice lives here alone. (JAX takes compiler options on a top-level jit only: a function
that may run inside another jit, such as a component's forward, keeps plain ``jax.jit``.)"""

from __future__ import annotations

import functools

import jax

# XLA:CPU runs LLVM at -O3 by default. At -O2 the demo stream's DiT steps compile 1.5-2x faster and its VAE decodes
# 1.1-1.4x (benchmarks/stream_cold_start.py on 2 cores), and they run no slower; a cold stream's time is mostly
# compilation. Other platforms keep XLA's defaults (not measured).
# XLA:CPU hands convolutions to YNNPACK by default; its own (Eigen) convolutions run the Wan2.1 VAE decode at 16x16
# latents 1.2x faster (9.3 vs 11.2 s, benchmarks/vae.py). The list is XLA's default YNNPACK fusions without
# LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION (the flag takes a whole list here, not "-individual_convolution"); the
# DiT programs have no convolution, so only the VAE decodes change.
CPU_OPTIONS = {"xla_backend_optimization_level": 2,
               "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,"
                                                       "LIBRARY_FUSION_TYPE_REDUCE"}


@functools.cache
def compiler_options() -> dict | None:
    """The options ``jit`` adds for the default backend (None: XLA's defaults). An option this jaxlib does not know
    (the YNNPACK one is experimental) is left out rather than failing every program: one tiny compile checks."""
    if jax.default_backend() != "cpu":
        return None
    options = dict(CPU_OPTIONS)
    for name in [k for k in options if k.startswith("xla_cpu_experimental_")]:
        try:
            jax.jit(lambda x: x + 1, compiler_options={name: options[name]}).lower(jax.numpy.zeros(1)).compile()
        except Exception:  # noqa: BLE001 -- XLA reports an unknown option or value as several error types
            del options[name]
    return options


def jit(fun, **kwargs):
    """``jax.jit(fun, **kwargs)`` compiled with ``compiler_options()``."""
    return jax.jit(fun, compiler_options=compiler_options(), **kwargs)
