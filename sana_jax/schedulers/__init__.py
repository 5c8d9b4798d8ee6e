"""Flow samplers as pure JAX functions: flow DPM-Solver++ (2M) for text-to-video and flow Euler for image-to-video.

A config mirrors diffusers' `scheduler_config.json`; `config.schedule(n)` builds the host-side tables and a
jittable `step(state, model_output, step_index, sample)` for one compiled denoising loop.
"""

from sana_jax.schedulers.flow_dpm_solver import (
    SANA_VIDEO_DPM_SCHEDULER,
    DPMSolverMultistepSchedulerConfig,
    FlowDPMSolverSchedule,
    FlowDPMSolverState,
    flow_dpm_sigmas,
)
from sana_jax.schedulers.flow_euler import (
    SANA_VIDEO_I2V_EULER_SCHEDULER,
    FlowEulerSchedule,
    FlowEulerState,
    FlowMatchEulerDiscreteSchedulerConfig,
    flow_euler_sigmas,
)
from sana_jax.schedulers.loading import SCHEDULER_CONFIGS, SchedulerConfig, load_scheduler

__all__ = [
    "DPMSolverMultistepSchedulerConfig",
    "FlowDPMSolverSchedule",
    "FlowDPMSolverState",
    "FlowEulerSchedule",
    "FlowEulerState",
    "FlowMatchEulerDiscreteSchedulerConfig",
    "SANA_VIDEO_DPM_SCHEDULER",
    "SANA_VIDEO_I2V_EULER_SCHEDULER",
    "SCHEDULER_CONFIGS",
    "SchedulerConfig",
    "flow_dpm_sigmas",
    "flow_euler_sigmas",
    "load_scheduler",
]
