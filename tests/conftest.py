"""The test session's JAX setup (CPU, LLVM -O0, 8 simulated devices, highest matmul precision, a per-run compile
cache); the PyTorch reference is required. Shared helpers live in `sana_jax.testing`."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The tests check numbers and behaviour, not speed, and most of their time is XLA compiling small programs: on the
# CPU, LLVM at -O0 instead of XLA's -O3 (2026-12-03: the default tier in 11.7 min on 2 cores, every case passing; at
# -O3 18.6 min on 2026-12-02, and about 30% slower than -O0 side by side). Programs built through
# `sana_jax._compile.jit` follow it too (a level named in XLA_FLAGS wins there); XLA_FLAGS naming a level wins.
if os.environ["JAX_PLATFORMS"] == "cpu" and "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

import jax
import pytest

jax.config.update("jax_default_matmul_precision", "highest")
# Eight simulated CPU devices for the sharding tests; single-device tests still run on device 0.
jax.config.update("jax_num_cpu_devices", 8)
# Training runs compile the same step again on resume: share compilations within this pytest run only (a fresh
# temporary folder, removed at exit), never between runs.
_COMPILE_CACHE = tempfile.mkdtemp(prefix="sana_jax_test_xla_cache_")
atexit.register(shutil.rmtree, _COMPILE_CACHE, ignore_errors=True)
jax.config.update("jax_compilation_cache_dir", _COMPILE_CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)

pytest.importorskip("torch")   # every parity test needs the PyTorch reference
