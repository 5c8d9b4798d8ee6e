"""The train state (fp32 master params, optimiser state, optional EMA, step, PRNG key) and the optimiser.

The published recipe: AdamW, lr 5e-5, betas (0.9, 0.999), eps 1e-10, weight decay 0, linear warm-up then constant,
gradient clipping at global norm 0.1 (``decay_steps``: cosine decay after the warm-up instead).
"""

from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    step: jax.Array          # int32 scalar: optimiser steps taken
    params: Any              # fp32 master params (compute dtype is the module's)
    opt_state: Any
    ema_params: Any          # None when EMA is off
    rng: jax.Array           # uint32 (2,): per-step keys are fold_in(rng, step), so a resumed run draws the same


def learning_rate(optim) -> optax.Schedule:
    """Linear warm-up from 0 over ``warmup_steps``, then constant ``lr`` (``decay_steps`` > 0: cosine decay from
    ``lr`` to 0 over that many steps, then 0)."""
    lr, warmup, decay = float(optim.lr), int(optim.warmup_steps), int(optim.decay_steps)
    after = optax.cosine_decay_schedule(lr, decay) if decay > 0 else optax.constant_schedule(lr)
    if warmup <= 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), after], [warmup])


def make_optimizer(optim) -> optax.GradientTransformation:
    """``optim``: the keys of ``sana_jax.training.recipes.adamw()``; grad_clip 0 = off."""
    adamw = optax.adamw(learning_rate(optim), b1=optim.b1, b2=optim.b2, eps=optim.eps,
                        weight_decay=optim.weight_decay)
    clip = float(optim.grad_clip)
    return optax.chain(optax.clip_by_global_norm(clip), adamw) if clip > 0 else adamw


def init_state(task, optimizer, batch: dict, seed: int, ema: bool) -> TrainState:
    """A fresh state; params (and the optimiser moments, which mirror them) keep their logical-axis boxes so
    ``nn.get_partition_spec`` reads the sharding of every leaf. Unbox with ``nn.meta.unbox`` before use."""
    init_key, train_key = jax.random.split(jax.random.PRNGKey(seed))
    params = task.init(init_key, batch)
    opt_state = optimizer.init(params)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state,
                      ema_params=task.trained_model(params) if ema else None, rng=train_key)


def abstract_state(task, optimizer, batch: dict, seed: int, ema: bool):
    """(boxed abstract state, unboxed abstract state) without allocating anything."""
    boxed = jax.eval_shape(lambda: init_state(task, optimizer, batch, seed, ema))
    return boxed, nn.meta.unbox(boxed)
