"""Flow DPM-Solver++ (2M, midpoint): diffusers' `DPMSolverMultistepScheduler` with `use_flow_sigmas=True`.

This is SANA-Video's text-to-video sampler (published config: `SANA_VIDEO_DPM_SCHEDULER`). On the flow path
α_t = 1 − σ_t and λ = log α − log σ. With v the model's velocity at (x, σ_s0):

    x0   = x − σ_s0·v                                       (data prediction, "flow_prediction")
    h    = λ_t − λ_s0,  φ = α_t·(e^{−h} − 1)
    x_t  = (σ_t/σ_s0)·x − φ·x0                              (order 1)
    x_t  = (σ_t/σ_s0)·x − φ·x0 − ½φ·(x0 − x0_prev)/r0       (order 2, r0 = (λ_s0 − λ_s1)/h)

Order 1 is used while there is no previous prediction and at the last step (`final_sigmas_type="zero"`
forces it; so does `euler_at_final`, and `lower_order_final` when there are fewer than 15 steps). At the last
step σ_t = 0, so λ_t = +∞, e^{−h} = 0 and x_t = x0. The schedule is built on the host in float64 exactly as
diffusers builds it; the update runs in float32 inside jit.
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
class DPMSolverMultistepSchedulerConfig(ComponentConfig):
    """diffusers `DPMSolverMultistepScheduler` config: every `__init__` key, with diffusers' defaults.

    Only the flow path is implemented. Keys that the flow path never reads (the beta schedule, `timestep_spacing`,
    `steps_offset`, `lambda_min_clipped`, `variance_type`, ...) are accepted with any value diffusers accepts,
    because they do not change the result. Keys that would change the math must take the values below;
    anything else is a ConfigError naming the key and the accepted values. diffusers' defaults are *not* a
    flow config (`prediction_type="epsilon"`, `use_flow_sigmas=False`), so `DPMSolverMultistepSchedulerConfig()`
    is rejected: use `SANA_VIDEO_DPM_SCHEDULER` or pass the flow keys.
    """

    class_name: ClassVar[str] = "DPMSolverMultistepScheduler"

    num_train_timesteps: int = 1000
    beta_start: float = 0.0001
    beta_end: float = 0.02
    beta_schedule: str = "linear"
    trained_betas: tuple[float, ...] | None = None
    solver_order: int = 2
    prediction_type: str = "epsilon"
    thresholding: bool = False
    dynamic_thresholding_ratio: float = 0.995
    sample_max_value: float = 1.0
    algorithm_type: str = "dpmsolver++"
    solver_type: str = "midpoint"
    lower_order_final: bool = True
    euler_at_final: bool = False
    use_karras_sigmas: bool = False
    use_exponential_sigmas: bool = False
    use_beta_sigmas: bool = False
    use_lu_lambdas: bool = False
    use_flow_sigmas: bool = False
    flow_shift: float = 1.0
    final_sigmas_type: str = "zero"
    lambda_min_clipped: float = -float("inf")
    variance_type: str | None = None
    timestep_spacing: str = "linspace"
    steps_offset: int = 0
    rescale_betas_zero_snr: bool = False
    use_dynamic_shifting: bool = False
    time_shift_type: str = "exponential"

    def __post_init__(self):
        check_supported(self.class_name, self, {
            # The math this port implements.
            "prediction_type": ("flow_prediction",),
            "use_flow_sigmas": (True,),
            "algorithm_type": ("dpmsolver++",),
            "solver_type": ("midpoint",),
            "solver_order": (1, 2),
            "final_sigmas_type": ("zero",),
            "thresholding": (False,),
            # Alternative sigma schedules take precedence over the flow sigmas in diffusers.
            "use_karras_sigmas": (False,),
            "use_lu_lambdas": (False,),
            "use_exponential_sigmas": (False,),
            "use_beta_sigmas": (False,),
            # Resolution-dependent shifting (`mu`) is not implemented.
            "use_dynamic_shifting": (False,),
            # Not read on the flow path, but diffusers rejects other values.
            "beta_schedule": ("linear", "scaled_linear", "squaredcos_cap_v2"),
            "timestep_spacing": ("linspace", "leading", "trailing"),
            "variance_type": (None, "learned", "learned_range"),
            "time_shift_type": ("exponential",),
        })
        check_positive(self.class_name, "flow_shift", self.flow_shift)
        if self.num_train_timesteps < 1:
            raise ConfigError(f"{self.class_name}: num_train_timesteps={self.num_train_timesteps} must be >= 1")

    def schedule(self, num_inference_steps: int) -> "FlowDPMSolverSchedule":
        return FlowDPMSolverSchedule(self, num_inference_steps)


# The published SANA-Video t2v scheduler (SANA-Video_2B_480p/720p_diffusers `scheduler/scheduler_config.json`).
SANA_VIDEO_DPM_SCHEDULER = DPMSolverMultistepSchedulerConfig(
    prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=8.0
)


def flow_dpm_sigmas(num_inference_steps: int, flow_shift: float, num_train_timesteps: int = 1000) -> np.ndarray:
    """The n shifted flow sigmas in float64, descending, before the final 0 is appended: diffusers' flow path.

    s = 1 − linspace(1, 1/N, n+1) runs 0 … 1 − 1/N; after the shift σ = k·s/(1 + (k−1)·s) the list is flipped
    and its last entry (σ = 0) dropped, so every step starts at σ > 0.
    """
    alphas = np.linspace(1.0, 1.0 / num_train_timesteps, num_inference_steps + 1)
    s = 1.0 - alphas
    shifted = flow_shift * s / (1.0 + (flow_shift - 1.0) * s)
    return np.flip(shifted)[:-1].copy()


class FlowDPMSolverState(NamedTuple):
    """The multistep history carried between steps (a pytree; zeros before the first step).

    x0_prev:     sample's shape, float32 — the previous step's data prediction x0.
    lambda_prev: () float32 — λ = log(1 − σ) − log σ at the previous step's σ.
    has_prev:    () bool — whether x0_prev holds a prediction (diffusers' `lower_order_nums >= 1`).
    """

    x0_prev: jax.Array
    lambda_prev: jax.Array
    has_prev: jax.Array


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class FlowDPMSolverSchedule(FlowSchedule):
    """The flow DPM-Solver++ schedule for `num_inference_steps` n and its jittable step.

    timesteps: (n,) float32 — what the transformer is given at step i: the integer ⌊σ_i·N⌋ (diffusers truncates
               σ·1000 to int64), stored as float32 values of those integers (exact: they are ≤ N).
    sigmas:    (n+1,) float32 — σ_0 … σ_{n−1}, then the final 0.
    orders:    (n,) int32 — the solver order diffusers uses at each step of a run that starts at step 0.

    Usage inside one compiled loop:

        sched = SANA_VIDEO_DPM_SCHEDULER.schedule(50)
        def body(i, carry):
            x, state = carry
            v = model(x, sched.model_timestep(i))
            return sched.step(state, v, i, x)
        x, _ = jax.lax.fori_loop(0, sched.num_inference_steps, body, (x, sched.init_state(x)))

    Steps are addressed by index, not by timestep value, so duplicated integer timesteps (large n with a large
    shift) do not make the run skip a step the way diffusers' `index_for_timestep` does at its first step.
    """

    config: DPMSolverMultistepSchedulerConfig
    config_type: ClassVar[type] = DPMSolverMultistepSchedulerConfig

    def _tables(self):
        cfg, n = self.config, self.num_inference_steps
        sigmas = flow_dpm_sigmas(n, cfg.flow_shift, cfg.num_train_timesteps)
        timesteps = (sigmas * cfg.num_train_timesteps).astype(np.int64)  # truncated, as diffusers
        index = np.arange(n)
        second = (cfg.solver_order >= 2) & (index >= 1) & ~self._lower_order_final(index)
        return timesteps, np.concatenate([sigmas, [0.0]]), np.where(second, 2, 1)

    def _lower_order_final(self, step_index):
        """Whether diffusers drops to order 1 at step_index because it is the last step (numpy or traced)."""
        cfg, n = self.config, self.num_inference_steps
        forced = cfg.euler_at_final or (cfg.lower_order_final and n < 15) or cfg.final_sigmas_type == "zero"
        # diffusers' `lower_order_second` (step n−2 when n < 15) only limits order 3, which is not implemented.
        return (step_index == n - 1) & forced

    def model_timestep(self, step_index) -> jax.Array:
        """() float32: the transformer's timestep at step_index (a Python int or a traced int32)."""
        return jnp.asarray(self.timesteps)[step_index]

    def init_state(self, sample: jax.Array) -> FlowDPMSolverState:
        """sample: any shape (e.g. latents (B, F, H, W, C)); the history starts empty."""
        return FlowDPMSolverState(
            x0_prev=jnp.zeros(sample.shape, jnp.float32),
            lambda_prev=jnp.zeros((), jnp.float32),
            has_prev=jnp.zeros((), jnp.bool_),
        )

    def step(self, state: FlowDPMSolverState, model_output: jax.Array, step_index, sample: jax.Array
             ) -> tuple[jax.Array, FlowDPMSolverState]:
        """One solver step from σ_i to σ_{i+1}.

        state:        the FlowDPMSolverState from `init_state` or the previous step.
        model_output: the velocity v at (sample, timesteps[step_index]), sample's shape, any float dtype.
        step_index:   i in [0, n); a Python int or a traced int32 scalar (fori_loop / scan index). Not checked
                      under jit: an index out of range is clamped by the gather.
        sample:       x at σ_i, any shape.
        Returns (prev_sample, new_state): x at σ_{i+1} in model_output.dtype (computed in float32), and the
        history for step i+1.
        """
        sigmas = jnp.asarray(self.sigmas)
        i = jnp.asarray(step_index, jnp.int32)
        sigma_s0, sigma_t = sigmas[i], sigmas[i + 1]
        x = sample.astype(jnp.float32)
        x0 = x - sigma_s0 * model_output.astype(jnp.float32)

        alpha_s0, alpha_t = 1.0 - sigma_s0, 1.0 - sigma_t
        lambda_s0 = jnp.log(alpha_s0) - jnp.log(sigma_s0)
        lambda_t = jnp.log(alpha_t) - jnp.log(sigma_t)  # +inf at the final σ = 0
        h = lambda_t - lambda_s0
        phi = alpha_t * (jnp.exp(-h) - 1.0)

        # Order 2 needs a previous prediction and is switched off at the last step. The order-1 update is the
        # same formula with the D1 term multiplied by exactly 0; the guarded 1/r0 keeps NaN and inf out of it.
        second = state.has_prev & ~self._lower_order_final(i)
        if self.config.solver_order < 2:
            second = jnp.zeros((), jnp.bool_)
        r0 = jnp.where(second, (lambda_s0 - state.lambda_prev) / h, 1.0)
        inv_r0 = jnp.where(second, 1.0 / r0, 0.0)
        d1 = inv_r0 * (x0 - state.x0_prev)
        x_t = (sigma_t / sigma_s0) * x - phi * x0 - (0.5 * phi) * d1

        new_state = FlowDPMSolverState(x0_prev=x0, lambda_prev=lambda_s0, has_prev=jnp.ones((), jnp.bool_))
        return x_t.astype(model_output.dtype), new_state
