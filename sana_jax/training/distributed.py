"""Multi-host start-up: one process per host, joined by ``jax.distributed`` when the environment says so."""

from __future__ import annotations

import os

import jax


def cluster_requested() -> bool:
    """True when this process is one of several: an explicit coordinator (JAX_COORDINATOR_ADDRESS with
    JAX_NUM_PROCESSES and JAX_PROCESS_ID), a multi-host Cloud TPU slice, or a SLURM job of several tasks."""
    if os.environ.get("JAX_COORDINATOR_ADDRESS"):
        return True
    if "," in os.environ.get("TPU_WORKER_HOSTNAMES", ""):
        return True
    return int(os.environ.get("SLURM_NTASKS", "1")) > 1


def initialize(mode: str = "auto") -> None:
    """``mode``: "auto" (join when ``cluster_requested``), "on" (always), "off" (never).

    CPU processes exchange collectives through gloo (the default CPU client has no cross-process collectives)."""
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"distributed={mode!r}; expected 'auto', 'on' or 'off'")
    if mode == "off" or (mode == "auto" and not cluster_requested()):
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    address = os.environ.get("JAX_COORDINATOR_ADDRESS")
    if address:
        missing = [k for k in ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID") if k not in os.environ]
        if missing:
            raise ValueError(f"JAX_COORDINATOR_ADDRESS={address} is set but {missing} are not")
        jax.distributed.initialize(address, int(os.environ["JAX_NUM_PROCESSES"]), int(os.environ["JAX_PROCESS_ID"]))
    else:
        jax.distributed.initialize()  # cluster auto-detection (Cloud TPU, SLURM, ...)
