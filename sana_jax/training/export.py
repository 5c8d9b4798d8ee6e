"""A training run's checkpoint -> a component folder (diffusers format loads in diffusers; or JAX format).

    python -m convert to-torch WORKDIR DST [--step N] [--ema]

The run's ``config.json`` says what was trained; the params (or their EMA) are read from the checkpoint onto one
device and written like ``save_component`` does, under the conversion rules of ``weights.pipeline_folder``.
"""

from __future__ import annotations

import json
import os

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


def restore_params(workdir: str | os.PathLike, *, step: int | None = None, ema: bool = False):
    """(task, params on one device, step) of a run's checkpoint (the latest when ``step`` is None)."""
    config = read_training_config(load_run_config(workdir))
    null = None
    if config.task != "autoencoder":  # shapes only matter for the loss, which is not run here
        null = (np.zeros((1, 1), np.float32), np.ones((1,), np.int32))
    task = make_task(config, null)
    program = ShardedStep(task, task.optimizer(), learning_rate(config.optim),
                          mesh_lib.make_mesh({}, jax.devices()[:1]), mesh_lib.DEFAULT_RULES, task.minimal_batch(),
                          seed=config.seed, ema_decay=float(config.optim.ema_decay))
    checkpoints = Checkpointer(os.path.join(workdir, "checkpoints"), every=1, keep=1, read_only=True)
    step = checkpoints.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"{workdir}: no checkpoint in {checkpoints.directory}")
    state, _ = checkpoints.restore(program.abstract_sharded(), step, restore_data_state=False)
    checkpoints.close()
    if ema and state.ema_params is None:
        raise ValueError(f"{workdir}: --ema asked for, but the run kept no EMA (optim.ema_decay = 0)")
    return task, (state.ema_params if ema else task.trained_model(state.params)), step


def export_run(workdir: str | os.PathLike, dst: str | os.PathLike, *, step: int | None = None, ema: bool = False,
               format: str = "diffusers", overwrite: bool = False, strict: bool = False, warn=None) -> int:
    """Writes the run's model at ``step`` to ``dst`` (a component folder); returns the step written.

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
