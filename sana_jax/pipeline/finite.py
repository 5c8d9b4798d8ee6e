"""Non-finite numbers are an error naming the stage that produced them, never a black video."""

from __future__ import annotations

import jax
import jax.numpy as jnp


class NonFiniteError(RuntimeError):
    """NaN or inf where a sampling stage (text encoder, denoising step, VAE decode) should give numbers."""

    def __init__(self, stage: str):
        super().__init__(f"{stage} produced non-finite values (NaN/inf); nothing was written. Check the weights "
                         f"(`python -m convert ... --strict` names non-finite params) and the sampling arguments")
        self.stage = stage


def all_finite(x) -> jax.Array:
    """A scalar bool, traceable: every element of ``x`` finite."""
    return jnp.all(jnp.isfinite(x))


def require_finite(x, stage: str) -> None:
    """Raises ``NonFiniteError(stage)`` unless ``x`` (an array, or an ``all_finite`` flag) is all finite."""
    ok = x if getattr(x, "dtype", None) == jnp.bool_ else all_finite(x)
    if not bool(ok):
        raise NonFiniteError(stage)


def first_non_finite_step(previous, i, x) -> jax.Array:
    """Carried through a compiled loop: the first step ``i`` whose ``x`` holds NaN/inf, else -1."""
    return jnp.where((previous < 0) & ~all_finite(x), i, previous)
