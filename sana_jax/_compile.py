"""``jit``: ``jax.jit`` with the XLA compiler options measured best for this project's programs on the platform
they compile for. The pipeline's denoising loop and decode, the block streamer's step and decode and the trainer's
step are built through it, so the choice lives here alone. JAX takes compiler options on a top-level jit only, so a
function that may also run inside another jit (a component's forward and methods) goes through ``jit_anywhere``."""

from __future__ import annotations

import functools
import os

import jax

# XLA:CPU runs LLVM at -O3 by default. At -O2 the demo stream's DiT steps compile 1.5-2x faster and its VAE decodes
# 1.1-1.4x (benchmarks/stream_cold_start.py on 2 cores), and they run no slower; a cold stream's time is mostly
# compilation. Other platforms keep XLA's defaults (not measured).
# XLA:CPU hands dots and convolutions to YNNPACK by default; its own (Eigen) kernels run this project's programs
# faster on the 2-core CPU, measured with the same program compiled both ways and taking turns (2026-12-06): the DiT
# forward (benchmarks/transformer.py cases a / b) 0.92x / 0.81x the time, the small DiT's training step unrolled
# 0.92x (scanned 0.99x), the LTX-2 VAE's im2col convolutions (matmuls with a 453 MB kernel read once,
# `sana_jax.nn.convs.conv3d`) 0.4x; and earlier, the convolutions alone, the Wan2.1 VAE decode 0.83x (9.3 vs
# 11.2 s). YNNPACK keeps the reductions: without them the training step takes 1.9x as long. (The flag takes a whole
# list here, not "-individual_convolution".)
# The VAE programs (``jit(..., vae=True)``) leave the reductions off YNNPACK too: their norms reduce ~100 channels over
# large frames, which the Wan2.1 decode then runs in 0.80x the time (12.5 vs 15.8 s, benchmarks/vae.py's size, the
# same program compiled both ways, taking turns); the LTX-2 VAE's measured the same either way.
CPU_OPTIONS = {"xla_backend_optimization_level": 2,
               "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_REDUCE"}
CPU_VAE_OPTIONS = {**CPU_OPTIONS, "xla_cpu_experimental_ynn_fusion_type": ""}


@functools.cache
def compiler_options(vae: bool = False) -> dict | None:
    """The options ``jit`` adds for the default backend (None: XLA's defaults); ``vae``: those of the VAE programs.
    An optimisation level named in XLA_FLAGS is kept rather than overridden. An option this jaxlib does not know (the
    YNNPACK one is experimental) is left out rather than failing every program: one tiny compile checks."""
    if jax.default_backend() != "cpu":
        return None
    options = dict(CPU_VAE_OPTIONS if vae else CPU_OPTIONS)
    if "xla_backend_optimization_level" in os.environ.get("XLA_FLAGS", ""):
        del options["xla_backend_optimization_level"]   # a level named in XLA_FLAGS wins (the tests run at -O0)
    for name in [k for k in options if k.startswith("xla_cpu_experimental_")]:
        try:
            jax.jit(lambda x: x + 1, compiler_options={name: options[name]}).lower(jax.numpy.zeros(1)).compile()
        except Exception:  # noqa: BLE001 -- XLA reports an unknown option or value as several error types
            del options[name]
    return options


def jit(fun, *, vae: bool = False, **kwargs):
    """``jax.jit(fun, **kwargs)`` compiled with ``compiler_options(vae)`` (``vae``: a VAE decode or encode)."""
    return jax.jit(fun, compiler_options=compiler_options(vae), **kwargs)


def jit_anywhere(fun, *, vae: bool = False, **kwargs):
    """``jit`` for a function that may also be called inside another jit or transformation (a component's forward,
    ``vae.decode``): called on concrete arrays it runs the program compiled with ``compiler_options(vae)``; called
    with a traced argument, or from inside a caller's trace on concrete arrays it closed over, the plain
    ``jax.jit(fun)``, which then becomes part of the caller's program."""
    top, nested = jit(fun, vae=vae, **kwargs), jax.jit(fun, **kwargs)

    @functools.wraps(fun)
    def call(*args, **kw):
        if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves((args, kw))):
            return nested(*args, **kw)
        try:
            return top(*args, **kw)
        except ValueError as e:
            # concrete arguments inside a caller's trace: JAX refuses compiler options on a nested jit (it has no
            # public way to ask whether a trace is under way, so its refusal is the test)
            if "compiler_options" not in str(e):
                raise
            return nested(*args, **kw)

    call.lower = top.lower
    return call
