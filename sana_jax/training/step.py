"""One optimiser step, and its sharded compilation on a mesh.

``train_step(state, batch)`` is a pure function: per-step randomness is fold_in(state.rng, state.step), so a run
resumed from a checkpoint draws exactly what the uninterrupted run drew. ``ShardedStep`` jits it once with
explicit in/out shardings read from the logical axis names and donates the old state.
"""

from __future__ import annotations

import contextlib
import functools

import flax.linen as nn
import jax
import numpy as np
import optax

from sana_jax import _compile
from sana_jax.training import mesh as mesh_lib
from sana_jax.training.state import TrainState, abstract_state, init_state


def loss_and_grads(task, params, batch, rng, step=0):
    """((loss, aux), grads) of ``task.loss`` at ``params`` (``step``: the optimiser step, for tasks whose loss
    alternates between parts, such as Self-Forcing's generator and critic turns)."""
    return jax.value_and_grad(task.loss, has_aux=True)(params, batch, rng, step)


def train_step(state: TrainState, batch: dict, *, task, optimizer, schedule, ema_decay: float = 0.0):
    """(new state, metrics): loss, grad_norm (before clipping), lr of this step, and the task's aux values."""
    rng = jax.random.fold_in(state.rng, state.step)
    (loss, aux), grads = loss_and_grads(task, state.params, batch, rng, state.step)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = state.ema_params
    if ema is not None:
        ema = jax.tree_util.tree_map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, ema,
                                     task.trained_model(params))
    metrics = {"loss": loss, "grad_norm": optax.global_norm(grads), "lr": schedule(state.step), **aux}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema), metrics


class ShardedStep:
    """The state layout on ``mesh`` and the compiled init / step / grads programs.

    ``state_shardings`` mirror the state (params and optimiser moments by their logical names, scalars
    replicated); ``batch_shardings`` come from the task's ``batch_axes``. ``traces`` counts how often the step was
    traced — it must stay 1 over a run.
    """

    def __init__(self, task, optimizer, schedule, mesh, rules, example_batch: dict, *, seed: int,
                 ema_decay: float = 0.0):
        self.task, self.mesh, self.rules = task, mesh, tuple(rules)
        self.optimizer, self.schedule, self.seed, self.ema_decay = optimizer, schedule, seed, ema_decay
        self.example_batch = example_batch
        boxed, self.abstract = abstract_state(task, optimizer, example_batch, seed, ema_decay > 0)
        with self.context():
            self.state_shardings = mesh_lib.logical_shardings(mesh, self.rules, boxed)
        self.batch_shardings = mesh_lib.batch_shardings(mesh, self.rules, task.batch_axes)
        _check_divisible(example_batch, self.batch_shardings, task.batch_axes)
        self.traces = 0
        step = functools.partial(self._traced_step, task=task, optimizer=optimizer, schedule=schedule,
                                 ema_decay=ema_decay)
        self._step = _compile.jit(step, in_shardings=(self.state_shardings, self.batch_shardings),
                             out_shardings=(self.state_shardings, mesh_lib.replicated(mesh)), donate_argnums=0)
        self._grads = _compile.jit(functools.partial(loss_and_grads, task),
                              in_shardings=(self.state_shardings.params, self.batch_shardings, None, None),
                              out_shardings=((mesh_lib.replicated(mesh), None), self.state_shardings.params))

    @contextlib.contextmanager
    def context(self):
        """The mesh and logical rules every trace of the model runs under."""
        with jax.set_mesh(self.mesh), nn.logical_axis_rules(list(self.rules)):
            yield

    def _traced_step(self, state, batch, **kw):
        self.traces += 1
        return train_step(state, batch, **kw)

    def init(self) -> TrainState:
        """A fresh state, created directly in its sharded layout."""
        fn = jax.jit(lambda: nn.meta.unbox(init_state(self.task, self.optimizer, self.example_batch, self.seed,
                                                      self.ema_decay > 0)),
                     out_shardings=self.state_shardings)
        with self.context():
            return fn()

    def abstract_sharded(self):
        """The state as ShapeDtypeStructs carrying this mesh's shardings (the target of a checkpoint restore)."""
        # An optimiser that updates only some params (optax.multi_transform) keeps empty MaskedNodes for the
        # others; their sharding is a leaf there, which the abstract state keeps as the empty node it is.
        return jax.tree_util.tree_map(
            lambda a, s: a if isinstance(a, optax.MaskedNode) else jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
            self.abstract, self.state_shardings, is_leaf=lambda x: isinstance(x, optax.MaskedNode))

    def __call__(self, state: TrainState, batch: dict):
        with self.context():
            return self._step(state, batch)

    def grads(self, params, batch, rng, step=0):
        """((loss, aux), grads) on the mesh, grads laid out like the params."""
        with self.context():
            return self._grads(params, batch, rng, jax.numpy.int32(step))

    def lower(self, state, batch):
        with self.context():
            return self._step.lower(state, batch)


def _check_divisible(batch: dict, shardings: dict, axes: dict) -> None:
    """Every sharded batch axis divides evenly over its mesh axes (no silent padding of a batch)."""
    for key, sharding in shardings.items():
        for dim, (size, names) in enumerate(zip(batch[key].shape, sharding.spec)):
            names = () if names is None else (names,) if isinstance(names, str) else tuple(names)
            parts = int(np.prod([sharding.mesh.shape[n] for n in names]))
            if size % parts:
                raise ValueError(f"batch {key!r} axis {dim} ({axes[key][dim]}) has size {size}, which the mesh axes "
                                 f"{names} ({parts} devices) do not divide; change batch_size or the mesh")
