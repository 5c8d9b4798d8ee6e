"""Reading a diffusers `scheduler_config.json` into the matching sana_jax scheduler config."""

from __future__ import annotations

import os

from sana_jax.config import ConfigError, read_json
from sana_jax.schedulers.flow_dpm_solver import DPMSolverMultistepSchedulerConfig
from sana_jax.schedulers.flow_euler import FlowMatchEulerDiscreteSchedulerConfig

SCHEDULER_CONFIGS = {
    cls.class_name: cls for cls in (DPMSolverMultistepSchedulerConfig, FlowMatchEulerDiscreteSchedulerConfig)
}

SchedulerConfig = DPMSolverMultistepSchedulerConfig | FlowMatchEulerDiscreteSchedulerConfig


def _config_file(path: str | os.PathLike) -> str:
    path = os.fspath(path)
    if not os.path.isdir(path):
        return path
    candidates = [os.path.join(path, "scheduler_config.json"), os.path.join(path, "scheduler", "scheduler_config.json")]
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(f"{path}: no scheduler config; looked for {candidates}")


def load_scheduler(folder_or_json_path: str | os.PathLike) -> SchedulerConfig:
    """Reads a scheduler config; the class comes from its `_class_name`.

    folder_or_json_path: a `scheduler_config.json`, the `scheduler/` folder holding one, or a pipeline folder with
    `scheduler/scheduler_config.json`. Returns a DPMSolverMultistepSchedulerConfig or a
    FlowMatchEulerDiscreteSchedulerConfig; call `.schedule(num_inference_steps)` on it for the sampler.
    """
    path = _config_file(folder_or_json_path)
    data = read_json(path)
    name = data.get("_class_name")
    if name not in SCHEDULER_CONFIGS:
        raise ConfigError(f"{path}: _class_name {name!r} is not a supported scheduler; expected one of "
                          f"{sorted(SCHEDULER_CONFIGS)}")
    try:
        return SCHEDULER_CONFIGS[name].from_dict(data, source=path)
    except (ConfigError, ValueError) as e:
        if str(e).startswith(path):
            raise
        raise type(e)(f"{path}: {e}") from None
