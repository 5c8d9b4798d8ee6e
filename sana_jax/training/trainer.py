"""``train(config, workdir)``: the training loop — data, sharded step, checkpoints, metrics, preemption.

Re-running with the same workdir resumes from its latest checkpoint (params, optimiser, step, PRNG key and the data
iterator's position), also onto a different mesh; an unreadable latest checkpoint is skipped for the newest readable
one, saying so. SIGTERM and SIGINT (Ctrl-C) save a checkpoint at the step reached and return, naming the signal. A
non-finite loss stops the run naming the step; checkpoints are written only after their step's loss was seen to be
finite, so the last one on disk is good. The config is read strictly (``training.config``: unknown keys and bad
values are errors naming the key) before anything is created, and a run holds a lock on its workdir
(``workdir_lock``): a second run on it fails instead of mixing the two.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from typing import Iterator

import jax
import numpy as np
from tqdm import tqdm

from sana_jax.training import distributed
from sana_jax.training import mesh as mesh_lib
from sana_jax.training.checkpoint import Checkpointer, CorruptCheckpointError, abandoned_reads_quiet
from sana_jax.training.config import TrainingConfig, read_training_config
from sana_jax.training.data import make_iterator, null_text
from sana_jax.training.metrics import MetricsWriter
from sana_jax.training.state import learning_rate
from sana_jax.training.step import ShardedStep
from sana_jax.training.tasks import make_task
from sana_jax.training.workdir_lock import LOCK_FILE, WorkdirLock, WorkdirLockedError

log = logging.getLogger(__name__)


class NonFiniteLoss(RuntimeError):
    pass


def build(config, *, devices=None):
    """(task, ShardedStep, data iterator) for ``config`` (a ``TrainingConfig``, or an experiment's ConfigDict: read
    strictly first) on this process's share of the global batch."""
    config = read_training_config(config)
    proc, nproc = jax.process_index(), jax.process_count()
    if config.batch_size % nproc:
        raise ValueError(f"batch_size={config.batch_size} must be divisible by the {nproc} processes")
    data = make_iterator(config.data, batch_size=config.batch_size, process_index=proc, process_count=nproc)
    task = make_task(config, null_text(config.data) if config.task in ("dit", "self_forcing") else None)
    example = _global_example(task, config)
    mesh = mesh_lib.make_mesh(config.mesh.shape(), devices)
    program = ShardedStep(task, task.optimizer(), learning_rate(config.optim), mesh,
                          mesh_lib.rules_from(config.mesh_rules), example, seed=config.seed,
                          ema_decay=float(config.optim.ema_decay))
    return task, program, data


def _global_example(task, config: TrainingConfig) -> dict:
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


def write_run_config(config: TrainingConfig, task, workdir: str) -> None:
    """``WORKDIR/config.json`` (the experiment as read: every key, defaults included) and
    ``WORKDIR/model/config.json`` (the component trained)."""
    os.makedirs(os.path.join(workdir, "model"), exist_ok=True)
    task.config.to_json_file(os.path.join(workdir, "model", "config.json"))
    tmp = os.path.join(workdir, "config.json.tmp")
    with open(tmp, "w") as f:
        json.dump(config.to_dict(), f, indent=2)
    os.replace(tmp, os.path.join(workdir, "config.json"))


def train(config, workdir: str, *, distributed_mode: str = "auto", devices=None, progress: bool = True) -> dict:
    """Trains to ``config.total_steps`` (``config``: an experiment's ConfigDict or a ``TrainingConfig``); returns
    {"step", "loss", "skipped", "preempted", "stopped_by"}.

    ``stopped_by``: "SIGINT" or "SIGTERM" when a signal stopped the run (after saving a checkpoint at the step it
    reached; ``preempted`` is then True), None when it ran to its end. Raises, before anything is created in the
    workdir: ``TrainingConfigError`` / ``DataConfigError`` for an unknown key or a bad value,
    ``WorkdirLockedError`` when another run holds the workdir; ``CorruptCheckpointError`` when no checkpoint of the
    workdir can be read.
    """
    config = read_training_config(config)
    distributed.initialize(distributed_mode)
    is_main = jax.process_index() == 0
    with abandoned_reads_quiet(), _stop_signals() as stop, _workdir_lock(workdir, is_main) as created:
        try:
            task, program, data = build(config, devices=devices)
        except BaseException:
            if created:  # the fresh workdir holds nothing of this run but its lock file: leave no trace
                _remove_fresh_workdir(workdir)
            raise
        return _run(config, workdir, task, program, data, stop, is_main=is_main, progress=progress)


def _run(config: TrainingConfig, workdir: str, task, program: ShardedStep, data, stop: dict, *, is_main: bool,
         progress: bool) -> dict:
    checkpoints = Checkpointer(os.path.join(workdir, "checkpoints"), every=int(config.checkpoint_every),
                               keep=int(config.keep_checkpoints))
    total = int(config.total_steps)
    last_loss, step, stopped_by = math.nan, 0, None
    bar = writer = None
    try:
        state, start = resume(checkpoints, program, data, is_main=is_main)
        last_saved = start or None
        if is_main:
            write_run_config(config, task, workdir)
            print(f"{jax.process_count()} process(es), {jax.device_count()} devices, mesh "
                  f"{dict(program.mesh.shape)}, global batch {config.batch_size}")
        writer = MetricsWriter(workdir, enabled=is_main, resume_step=start)
        log_every = config.log_every
        peak = float(config.device_peak_flops) or None
        flops = tokens = None
        bar = tqdm(total=total, initial=start, disable=not (progress and is_main), desc="train", unit="step")
        step = start
        window = (time.perf_counter(), start)
        pending = None
        stopped_by = _agreed_signal(stop["signal"])  # a signal during start-up: no step to take, none to save
        while step < total and stopped_by is None:
            batch = global_batch(next(data), program)
            if flops is None:
                flops = _step_flops(program, state, batch)
                tokens = task.tokens(next(iter(batch.values())).shape)
            state, metrics = program(state, batch)
            step += 1
            if pending is not None:
                last_loss = _check_finite(*pending, last_saved)
            pending = (step, metrics)
            stopped_by = _agreed_signal(stop["signal"])
            if stopped_by is None and checkpoints.reached_preemption(step):
                stopped_by = "SIGTERM"  # the step the JAX preemption service chose after a SIGTERM on some host
            if step % log_every == 0 or step == total or checkpoints.should_save(step) or stopped_by:
                last_loss = _check_finite(*pending, last_saved)
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
            if checkpoints.should_save(step) or step == total or stopped_by:
                checkpoints.save(step, state, data.get_state(), force=True)
                last_saved = step
        if stopped_by:
            checkpoints.wait()
            if is_main:
                print(f"{stopped_by}: saved step {step} to {checkpoints.directory}; exiting" if step > start else
                      f"{stopped_by} before the first step: nothing new to save; exiting")
    finally:
        if bar is not None:
            bar.close()
        checkpoints.wait()
        checkpoints.close()
        if writer is not None:
            writer.close()
        data.close()
    if is_main and not stopped_by:
        print(f"trained to step {step} in {workdir} (metrics.jsonl, tensorboard/, checkpoints/); "
              f"{data.skipped} unreadable examples skipped")
    return {"step": step, "loss": last_loss, "skipped": data.skipped, "preempted": stopped_by is not None,
            "stopped_by": stopped_by}


def resume(checkpoints: Checkpointer, program: ShardedStep, data, *, is_main: bool = True) -> tuple[object, int]:
    """(train state, step) of the newest readable checkpoint, with ``data`` set to its position; a fresh state and
    step 0 when there is no checkpoint.

    An unreadable checkpoint (``CorruptCheckpointError``) is reported once and skipped for the next older one; the
    run overwrites it when it saves that step again. A checkpoint that does not match the model
    (``CheckpointMismatchError``) stops the run: an older one would not match either. When no checkpoint is
    readable, raises the newest one's ``CorruptCheckpointError``, saying what to do about it."""
    steps = checkpoints.all_steps()
    if not steps:
        return program.init(), 0
    corrupt = []
    for step in reversed(steps):
        error = None
        try:
            state, data_state = checkpoints.restore(program.abstract_sharded(), step)
        except CorruptCheckpointError as e:
            error = e
        if _agree(error is not None):  # every process resumes from the same step
            error = error or CorruptCheckpointError(step, checkpoints.directory / str(step),
                                                    "unreadable on another process")
            corrupt.append(error)
            checkpoints.replace_when_saved(step)
            continue
        data.set_state(data_state)
        if is_main:
            for error in corrupt:
                print(f"warning: {error}", file=sys.stderr)
            note = (f" (the newest readable one; unreadable step(s) {[e.step for e in corrupt]} will be overwritten "
                    f"when the run saves them again)" if corrupt else "")
            print(f"resumed from {checkpoints.directory} step {step}{note}")
        return state, step
    folders = " ".join(str(checkpoints.directory / str(e.step)) for e in corrupt)
    raise corrupt[0].with_hint(
        f"No checkpoint in {checkpoints.directory} is readable (steps {sorted(e.step for e in corrupt)}): restore "
        f"them from a copy, or move them away ({folders}) to train from scratch in this workdir")


def _check_finite(step: int, metrics: dict, last_saved: int | None) -> float:
    loss = float(jax.device_get(metrics["loss"]))
    if not math.isfinite(loss):
        where = ("No checkpoint was written yet" if last_saved is None else
                 f"The last checkpoint, step {last_saved}, was written before this step and is good")
        raise NonFiniteLoss(f"loss is {loss} at step {step}; stopped. {where}.")
    return loss


@contextlib.contextmanager
def _workdir_lock(workdir: str, is_main: bool) -> Iterator[bool]:
    """Holds the workdir's lock for the run: on process 0, for a local path (see ``workdir_lock``; a ``://`` path
    has no lock). Yields whether this process created the workdir. Every process raises when process 0 could not
    take the lock."""
    local = "://" not in workdir
    created = is_main and local and not os.path.exists(workdir)
    lock, error = None, None
    if is_main and local:
        lock = WorkdirLock(workdir)
        try:
            lock.acquire()
        except WorkdirLockedError as e:
            error = e
    else:
        os.makedirs(workdir, exist_ok=True)
    if _agree(error is not None):
        raise error or WorkdirLockedError(f"{workdir} is in use by another training run (process 0 could not take "
                                          f"its lock)")
    try:
        yield created
    finally:
        if lock is not None:
            lock.release()


def _remove_fresh_workdir(workdir: str) -> None:
    """Removes ``workdir`` when it holds nothing but the lock file this run created."""
    try:
        if os.listdir(workdir) == [LOCK_FILE]:
            os.remove(os.path.join(workdir, LOCK_FILE))
            os.rmdir(workdir)
    except OSError as e:
        log.warning("could not remove the empty workdir %s: %s", workdir, e)


@contextlib.contextmanager
def _stop_signals() -> Iterator[dict]:
    """SIGINT and SIGTERM set ``stop["signal"]`` (to their name) instead of ending the process: the loop then saves
    a checkpoint at the step it reached and returns. A second SIGINT raises ``KeyboardInterrupt`` (stop without
    saving). The previous handlers are back afterwards. Outside the main thread (Python delivers signals to it
    alone) nothing is installed; an ignored SIGINT (a background job of a shell script) stays ignored."""
    stop = {"signal": None}
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def on_signal(signum, frame):
        if signum == signal.SIGINT and stop["signal"] == "SIGINT":
            raise KeyboardInterrupt
        if signum == signal.SIGINT:
            os.write(2, b"\nSIGINT: stopping; the step reached is saved first (Ctrl-C again: stop without "
                        b"saving)\n")
        stop["signal"] = stop["signal"] or signal.Signals(signum).name

    handled = [signal.SIGTERM] + ([] if signal.getsignal(signal.SIGINT) is signal.SIG_IGN else [signal.SIGINT])
    previous = {s: signal.signal(s, on_signal) for s in handled}
    try:
        yield stop
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _agreed_signal(name: str | None) -> str | None:
    """The stop signal of every process: the first process's that received one (a signal on any process stops
    them all at the same step)."""
    if jax.process_count() == 1:
        return name
    from jax.experimental import multihost_utils
    codes = multihost_utils.process_allgather(np.asarray([0 if name is None else signal.Signals[name].value]))
    received = [int(c) for c in np.asarray(codes).reshape(-1) if c]
    return signal.Signals(received[0]).name if received else None


def _agree(flag: bool) -> bool:
    """True on every process when ``flag`` is True on any."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils
    return bool(np.any(multihost_utils.process_allgather(np.asarray([flag]))))


def _step_flops(program: ShardedStep, state, batch) -> float | None:
    """FLOPs of one global step from XLA's cost model (None when the backend gives none)."""
    try:
        cost = program.lower(state, batch).cost_analysis()
    except Exception as e:  # noqa: BLE001 -- the cost model is optional; any backend's failure just means "unknown"
        log.info("no cost analysis: %s", e)
        return None
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    value = (cost or {}).get("flops")
    return float(value) if value else None
