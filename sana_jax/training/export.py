"""A training run's checkpoint -> a component folder (diffusers format loads in diffusers; or JAX format).

    python -m convert to-torch WORKDIR DST [--step N [N ...]] [--ema]

The run's ``config.json`` says what was trained; the params (or their EMA) are read from the checkpoint onto one
device and written like ``save_component`` does, under the conversion rules of ``weights.pipeline_folder``.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import jax
import ml_collections
import numpy as np

from sana_jax.components import Component, write_component
from sana_jax.training import mesh as mesh_lib
from sana_jax.training.checkpoint import Checkpointer
from sana_jax.training.config import read_training_config
from sana_jax.training.state import learning_rate
from sana_jax.training.step import ShardedStep
from sana_jax.training.tasks import make_task
from sana_jax.weights.pipeline_folder import check_destination, check_finite, conversion_output


def is_training_run(path: str | os.PathLike) -> bool:
    return os.path.isfile(os.path.join(path, "config.json")) and os.path.isdir(os.path.join(path, "checkpoints"))


def load_run_config(workdir: str | os.PathLike) -> ml_collections.ConfigDict:
    """The run's experiment config, its architecture being the component it trained (``model/config.json``,
    which ``model.init_from`` may have supplied); the weights come from the checkpoint."""
    with open(os.path.join(workdir, "config.json")) as f:
        config = ml_collections.ConfigDict(json.load(f))
    with open(os.path.join(workdir, "model", "config.json")) as f:
        architecture = {k: v for k, v in json.load(f).items() if not k.startswith("_")}
    config.model.init_from = ""
    config.model.architecture = architecture
    return config


def restore_params(workdir: str | os.PathLike, *, step: int | Sequence[int] | None = None, ema: bool = False):
    """(task, params on one device, step) of a run's checkpoint (the latest when ``step`` is None). ``step`` a
    sequence of two or more steps: the params of those checkpoints averaged uniformly (in float64, then their own
    dtype), and the steps returned as a list (a sequence of one is that step)."""
    config = read_training_config(load_run_config(workdir))
    null = None
    if config.task != "autoencoder":  # shapes only matter for the loss, which is not run here
        null = (np.zeros((1, 1), np.float32), np.ones((1,), np.int32))
    task = make_task(config, null)
    program = ShardedStep(task, task.optimizer(), learning_rate(config.optim),
                          mesh_lib.make_mesh({}, jax.devices()[:1]), mesh_lib.DEFAULT_RULES, task.minimal_batch(),
                          seed=config.seed, ema_decay=float(config.optim.ema_decay))
    checkpoints = Checkpointer(os.path.join(workdir, "checkpoints"), every=1, keep=1, read_only=True)
    try:
        steps = _check_steps(workdir, step, checkpoints.all_steps())
        trees = []
        for s in steps:
            state, _ = checkpoints.restore(program.abstract_sharded(), s, restore_data_state=False)
            if ema and state.ema_params is None:
                raise ValueError(f"{workdir}: --ema asked for, but the run kept no EMA (optim.ema_decay = 0)")
            trees.append(state.ema_params if ema else task.trained_model(state.params))
    finally:
        checkpoints.close()
    if len(steps) == 1:
        return task, trees[0], steps[0]
    average = jax.tree_util.tree_map(
        lambda *ps: (sum(np.asarray(p, np.float64) for p in ps) / len(ps)).astype(np.asarray(ps[0]).dtype), *trees)
    return task, average, steps


def _check_steps(workdir, step, available: list[int]) -> list[int]:
    """``step`` (None: the latest; an int; a sequence of distinct ints) as a list of saved steps, else an error
    naming the run, what was asked and the steps it has."""
    if not available:
        raise FileNotFoundError(f"{workdir}: no checkpoint in {os.path.join(workdir, 'checkpoints')}")
    steps = [max(available)] if step is None else [step] if isinstance(step, int) else list(step)
    if not steps or len(set(steps)) != len(steps) or not all(isinstance(s, int) for s in steps):
        raise ValueError(f"{workdir}: step={step!r}; expected a step or distinct steps to average, of {available}")
    missing = [s for s in steps if s not in available]
    if missing:
        raise FileNotFoundError(f"{workdir}: no checkpoint at step(s) {missing}; the run has {available}")
    return steps


def export_run(workdir: str | os.PathLike, dst: str | os.PathLike, *, step: int | Sequence[int] | None = None,
               ema: bool = False, format: str = "diffusers", overwrite: bool = False, strict: bool = False,
               warn=None) -> int | list[int]:
    """Writes the run's model at ``step`` to ``dst`` (a component folder); returns the step written. Several steps:
    their params averaged uniformly (checkpoint averaging; `restore_params`), the list of steps returned.

    ``dst`` follows the conversion rules (``pipeline_folder.check_destination``); non-finite params are a warning
    (``warn``, default stderr) or, with ``strict``, an error.
    """
    check_destination(workdir, dst, overwrite=overwrite)
    task, params, step = restore_params(workdir, step=step, ema=ema)
    model = Component(task.config.class_name, task.config, task.module, jax.device_get(params))
    check_finite(model, f"{workdir} step {step}{' EMA' if ema else ''}", strict=strict, warn=warn)
    with conversion_output(workdir, dst, overwrite=overwrite, format=format, step=step, ema=ema) as tmp:
        write_component(model, tmp, format)
    return step
