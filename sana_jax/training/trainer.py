"""``train(config, workdir)``: the training loop — data, sharded step, checkpoints, metrics, preemption.

Re-running with the same workdir resumes from its latest checkpoint (params, optimiser, step, PRNG key and the data
iterator's position), also onto a different mesh. SIGTERM saves a checkpoint and returns. A non-finite loss stops
the run naming the step; checkpoints are written only after their step's loss was seen to be finite, so the last
one on disk is good.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import time

import jax
import numpy as np
from tqdm import tqdm

from sana_jax.training import distributed
from sana_jax.training import mesh as mesh_lib
from sana_jax.training.checkpoint import Checkpointer
from sana_jax.training.data import make_iterator, null_text
from sana_jax.training.metrics import MetricsWriter
from sana_jax.training.state import learning_rate, make_optimizer
from sana_jax.training.step import ShardedStep
from sana_jax.training.tasks import make_task

log = logging.getLogger(__name__)


class NonFiniteLoss(RuntimeError):
    pass


def build(config, *, devices=None):
    """(task, ShardedStep, data iterator) for ``config`` on this process's share of the global batch."""
    proc, nproc = jax.process_index(), jax.process_count()
    if config.batch_size % nproc:
        raise ValueError(f"batch_size={config.batch_size} must be divisible by the {nproc} processes")
    data = make_iterator(config.data, batch_size=config.batch_size, process_index=proc, process_count=nproc)
    task = make_task(config, null_text(config.data) if config.task == "dit" else None)
    example = _global_example(task, config, data)
    mesh = mesh_lib.make_mesh(dict(config.mesh), devices)
    program = ShardedStep(task, make_optimizer(config.optim), learning_rate(config.optim), mesh,
                          mesh_lib.rules_from(config.get("mesh_rules", ())), example, seed=config.seed,
                          ema_decay=float(config.optim.ema_decay))
    return task, program, data


def _global_example(task, config, data) -> dict:
    """The global batch's shapes, read from one batch of a throwaway iterator (the real one is not advanced)."""
    with make_iterator(config.data, batch_size=config.batch_size, process_index=jax.process_index(),
                       process_count=jax.process_count()) as probe:
        local = next(probe)
    missing = sorted(set(task.batch_axes) - set(local))
    if missing:
        raise ValueError(f"data.source={config.data.source!r} gives {sorted(local)}; task {config.task!r} needs "
                         f"{missing}")
    return {k: jax.ShapeDtypeStruct((config.batch_size, *local[k].shape[1:]), local[k].dtype)
            for k in task.batch_axes}


def global_batch(local: dict, program: ShardedStep) -> dict:
    """This process's rows -> global arrays laid out by the batch shardings."""
    return {k: jax.make_array_from_process_local_data(s, np.asarray(local[k]))
            for k, s in program.batch_shardings.items()}


def write_run_config(config, task, workdir: str) -> None:
    """``WORKDIR/config.json`` (the experiment) and ``WORKDIR/model/config.json`` (the component trained)."""
    os.makedirs(os.path.join(workdir, "model"), exist_ok=True)
    task.config.to_json_file(os.path.join(workdir, "model", "config.json"))
    tmp = os.path.join(workdir, "config.json.tmp")
    with open(tmp, "w") as f:
        f.write(config.to_json_best_effort(indent=2))
    os.replace(tmp, os.path.join(workdir, "config.json"))


def train(config, workdir: str, *, distributed_mode: str = "auto", devices=None, progress: bool = True) -> dict:
    """Trains to ``config.total_steps``; returns {"step", "loss", "skipped", "preempted"}."""
    distributed.initialize(distributed_mode)
    is_main = jax.process_index() == 0
    os.makedirs(workdir, exist_ok=True)
    task, program, data = build(config, devices=devices)
    checkpoints = Checkpointer(os.path.join(workdir, "checkpoints"), every=int(config.checkpoint_every),
                               keep=int(config.keep_checkpoints))
    start = checkpoints.latest_step()
    if start is None:
        state, start = program.init(), 0
    else:
        state, data_state = checkpoints.restore(program.abstract_sharded(), start)
        data.set_state(data_state)
        if is_main:
            print(f"resumed from {checkpoints.directory} step {start}")
    if is_main:
        write_run_config(config, task, workdir)
        print(f"{jax.process_count()} process(es), {jax.device_count()} devices, mesh "
              f"{dict(program.mesh.shape)}, global batch {config.batch_size}")
    writer = MetricsWriter(workdir, enabled=is_main, resume_step=start)

    stop = {"signal": False}
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.update(signal=True))
    total = int(config.total_steps)
    log_every = max(int(config.get("log_every", 10)), 1)
    peak = float(config.get("device_peak_flops", 0.0)) or None
    flops = tokens = None
    bar = tqdm(total=total, initial=start, disable=not (progress and is_main), desc="train", unit="step")
    last_loss, step, preempted = math.nan, start, False
    window = (time.perf_counter(), start)
    pending = None
    try:
        while step < total:
            batch = global_batch(next(data), program)
            if flops is None:
                flops = _step_flops(program, state, batch)
                tokens = task.tokens(next(iter(batch.values())).shape)
            state, metrics = program(state, batch)
            step += 1
            if pending is not None:
                last_loss = _check_finite(*pending)
            pending = (step, metrics)
            preempted = _agree(stop["signal"]) or checkpoints.reached_preemption(step)
            if step % log_every == 0 or step == total or checkpoints.should_save(step) or preempted:
                last_loss = _check_finite(*pending)
                now = time.perf_counter()
                rate = (step - window[1]) / max(now - window[0], 1e-9)
                window = (now, step)
                row = {k: float(v) for k, v in jax.device_get(metrics).items()}
                row.update(steps_per_s=rate, tokens_per_s=rate * tokens, skipped=data.skipped)
                if peak and flops:
                    row["mfu"] = rate * flops / (peak * jax.device_count())
                writer.write(step, row)
                bar.set_postfix(loss=f"{row['loss']:.4f}")
            if step == start + 1:  # the first step is mostly compilation: rates count from its end
                jax.block_until_ready(metrics["loss"])
                window = (time.perf_counter(), step)
            bar.update(1)
            if checkpoints.should_save(step) or step == total or preempted:
                checkpoints.save(step, state, data.get_state(), force=True)
            if preempted:
                if is_main:
                    print(f"SIGTERM: saved step {step} to {checkpoints.directory}; exiting")
                break
    finally:
        signal.signal(signal.SIGTERM, previous)
        bar.close()
        checkpoints.wait()
        checkpoints.close()
        writer.close()
        data.close()
    if is_main:
        print(f"trained to step {step} in {workdir} (metrics.jsonl, tensorboard/, checkpoints/); "
              f"{data.skipped} unreadable examples skipped")
    return {"step": step, "loss": last_loss, "skipped": data.skipped, "preempted": preempted}


def _check_finite(step: int, metrics: dict) -> float:
    loss = float(jax.device_get(metrics["loss"]))
    if not math.isfinite(loss):
        raise NonFiniteLoss(f"loss is {loss} at step {step}; stopped. The last checkpoint on disk was written "
                            f"before this step and is good.")
    return loss


def _agree(flag: bool) -> bool:
    """Every process stops at the same step: any process's SIGTERM stops them all."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils
    return bool(np.any(multihost_utils.process_allgather(np.asarray([flag]))))


def _step_flops(program: ShardedStep, state, batch) -> float | None:
    """FLOPs of one global step from XLA's cost model (None when the backend gives none)."""
    try:
        cost = program.lower(state, batch).cost_analysis()
    except Exception as e:  # the cost model is optional on some backends
        log.info("no cost analysis: %s", e)
        return None
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    value = (cost or {}).get("flops")
    return float(value) if value else None
