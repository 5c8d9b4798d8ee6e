"""Flow-matching Euler: diffusers' `FlowMatchEulerDiscreteScheduler` (the SANA-Video image-to-video sampler).

    x_{i+1} = x_i + (σ_{i+1} − σ_i)·v

Sigmas: s = linspace(σ_max, σ_min, n) with σ_max/σ_min the ends of the float32 *training* table, which is
already shifted, then shifted again σ = k·s/(1 + (k−1)·s) in float64 (so the low end is shifted twice, as in
diffusers), cast to float32; the model timesteps are float32 σ·N (not truncated). A final σ = 0 is appended.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sana_jax.config import ComponentConfig, ConfigError
from sana_jax.schedulers._common import FlowSchedule, check_positive, check_supported


@dataclasses.dataclass(frozen=True)
class FlowMatchEulerDiscreteSchedulerConfig(ComponentConfig):
    """diffusers `FlowMatchEulerDiscreteScheduler` config: every `__init__` key, with diffusers' defaults.

    Only the static `shift` schedule with deterministic steps is implemented; other values of the keys checked in
    `__post_init__` are a ConfigError naming the key and the accepted values. Note: this class has no
    `flow_shift` key (diffusers silently ignores one given to `from_config`; here it is an unknown-key error).
    """

    class_name: ClassVar[str] = "FlowMatchEulerDiscreteScheduler"

    num_train_timesteps: int = 1000
    shift: float = 1.0
    use_dynamic_shifting: bool = False
    base_shift: float | None = 0.5
    max_shift: float | None = 1.15
    base_image_seq_len: int = 256
    max_image_seq_len: int = 4096
    invert_sigmas: bool = False
    shift_terminal: float | None = None
    use_karras_sigmas: bool = False
    use_exponential_sigmas: bool = False
    use_beta_sigmas: bool = False
    time_shift_type: str = "exponential"
    stochastic_sampling: bool = False

    def __post_init__(self):
        check_supported(self.class_name, self, {
            "use_dynamic_shifting": (False,),
            "invert_sigmas": (False,),
            "shift_terminal": (None,),
            "use_karras_sigmas": (False,),
            "use_exponential_sigmas": (False,),
            "use_beta_sigmas": (False,),
            "stochastic_sampling": (False,),
            # Only read with dynamic shifting, but diffusers rejects other values.
            "time_shift_type": ("exponential", "linear"),
        })
        check_positive(self.class_name, "shift", self.shift)
        if self.num_train_timesteps < 1:
            raise ConfigError(f"{self.class_name}: num_train_timesteps={self.num_train_timesteps} must be >= 1")

    def schedule(self, num_inference_steps: int) -> "FlowEulerSchedule":
        return FlowEulerSchedule(self, num_inference_steps)


# The image-to-video scheduler the diffusers conversion script writes for SANA-Video (`flow-euler`, shift 8).
SANA_VIDEO_I2V_EULER_SCHEDULER = FlowMatchEulerDiscreteSchedulerConfig(shift=8.0)


def _shift(sigmas, shift):
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def flow_euler_sigmas(num_inference_steps: int, shift: float, num_train_timesteps: int = 1000) -> np.ndarray:
    """The n float32 sigmas, descending, before the final 0 is appended (diffusers' `set_timesteps(n)`)."""
    # The training table, in float32 as diffusers' __init__ computes it; only its two ends are used.
    train = np.linspace(1, num_train_timesteps, num_train_timesteps, dtype=np.float32)[::-1] / num_train_timesteps
    train = _shift(train, float(shift))  # Python-float shift, float32 arithmetic (as torch)
    sigma_max, sigma_min = float(train[0]), float(train[-1])
    # The inference schedule, in float64, then rounded to float32.
    t = np.linspace(sigma_max * num_train_timesteps, sigma_min * num_train_timesteps, num_inference_steps)
    return _shift(t / num_train_timesteps, shift).astype(np.float32)


class FlowEulerState(NamedTuple):
    """Euler keeps no history: an empty pytree, so both samplers share one loop."""


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class FlowEulerSchedule(FlowSchedule):
    """The flow-matching Euler schedule for `num_inference_steps` n and its jittable step.

    timesteps: (n,) float32 — σ_i·N, the transformer's (fractional) timestep at step i.
    sigmas:    (n+1,) float32 — σ_0 … σ_{n−1}, then the final 0.
    orders:    (n,) int32 — all 1.
    """

    config: FlowMatchEulerDiscreteSchedulerConfig
    config_type: ClassVar[type] = FlowMatchEulerDiscreteSchedulerConfig

    def _tables(self):
        cfg, n = self.config, self.num_inference_steps
        sigmas = flow_euler_sigmas(n, cfg.shift, cfg.num_train_timesteps)
        # float32 product, as diffusers multiplies the float32 sigma tensor by N.
        return sigmas * np.float32(cfg.num_train_timesteps), np.concatenate([sigmas, np.zeros(1, np.float32)]), \
            np.ones(n)

    def model_timestep(self, step_index) -> jax.Array:
        """() float32: the transformer's timestep at step_index (a Python int or a traced int32)."""
        return jnp.asarray(self.timesteps)[step_index]

    def init_state(self, sample: jax.Array) -> FlowEulerState:
        del sample
        return FlowEulerState()

    def step(self, state: FlowEulerState, model_output: jax.Array, step_index, sample: jax.Array
             ) -> tuple[jax.Array, FlowEulerState]:
        """One Euler step from σ_i to σ_{i+1}.

        model_output: the velocity v at (sample, timesteps[step_index]), sample's shape, any float dtype.
        step_index:   i in [0, n); a Python int or a traced int32 scalar (clamped, not checked, under jit).
        sample:       x at σ_i, any shape.
        Returns (prev_sample in model_output.dtype, computed in float32; the unchanged empty state).
        """
        sigmas = jnp.asarray(self.sigmas)
        i = jnp.asarray(step_index, jnp.int32)
        dt = sigmas[i + 1] - sigmas[i]
        prev = sample.astype(jnp.float32) + dt * model_output.astype(jnp.float32)
        return prev.astype(model_output.dtype), state


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class SigmaEulerSchedule(FlowEulerSchedule):
    """Flow Euler over an explicit descending sigma list ``config`` (n + 1 floats, the last the level it ends at,
    not necessarily 0): recording an ODE trajectory at given levels runs one such schedule per segment.
    Model timesteps are 1000 sigma."""

    config: tuple
    config_type: ClassVar[type] = tuple

    def __init__(self, sigmas):
        sigmas = tuple(float(s) for s in sigmas)
        if len(sigmas) < 2 or any(a <= b for a, b in zip(sigmas, sigmas[1:])) or sigmas[-1] < 0 or sigmas[0] > 1:
            raise ValueError(f"sigmas {sigmas}: expected at least two, strictly decreasing, in [0, 1]")
        super().__init__(sigmas, len(sigmas) - 1)

    def _tables(self):
        sigmas = np.asarray(self.config, np.float32)
        return sigmas[:-1] * np.float32(1000), sigmas, np.ones(len(sigmas) - 1)
