"""What the two flow samplers share: config value checks and the host-side schedule base class."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Iterable

import numpy as np

from sana_jax.config import ConfigError


def check_supported(class_name: str, config: Any, accepted: dict[str, Iterable[Any]]) -> None:
    """Raises one ConfigError listing every key whose value this port does not implement.

    accepted: key -> the values this port accepts for it (diffusers may accept more).
    """
    problems = []
    for key, values in accepted.items():
        values = tuple(values)
        value = getattr(config, key)
        # `type(v) is type(value)` keeps True from matching 1 and 1.0 from matching True.
        if not any(value == v and type(value) is type(v) for v in values):
            problems.append(f"{key}={value!r} (accepted: {', '.join(repr(v) for v in values)})")
    if problems:
        raise ConfigError(f"{class_name}: unsupported value(s) for sana_jax: {'; '.join(problems)}")


def check_positive(class_name: str, key: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{class_name}: {key}={value!r} must be > 0 (a flow shift keeps sigmas in (0, 1])")


def frozen_array(x: np.ndarray, dtype) -> np.ndarray:
    x = np.array(x, dtype=dtype)
    x.setflags(write=False)
    return x


@dataclasses.dataclass(frozen=True, eq=False)
class FlowSchedule:
    """Base of a host-side schedule: the tables are a pure function of (config, num_inference_steps).

    Equality and hash follow (type, config, num_inference_steps), so a schedule can be a static argument of
    `jax.jit` and two equal schedules share one compilation.
    """

    config: Any
    num_inference_steps: int
    # Filled by __post_init__ from `_tables()`, read-only: (n,) float32, (n+1,) float32, (n,) int32.
    timesteps: np.ndarray = dataclasses.field(init=False)
    sigmas: np.ndarray = dataclasses.field(init=False)
    orders: np.ndarray = dataclasses.field(init=False)

    config_type: ClassVar[type] = object  # the config class a subclass accepts

    def __post_init__(self):
        n = self.num_inference_steps
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"num_inference_steps must be an int >= 1, got {n!r}")
        object.__setattr__(self, "num_inference_steps", int(n))
        if not isinstance(self.config, self.config_type):
            raise TypeError(f"config must be a {self.config_type.__name__}, got {type(self.config).__name__}")
        timesteps, sigmas, orders = self._tables()
        object.__setattr__(self, "timesteps", frozen_array(timesteps, np.float32))
        object.__setattr__(self, "sigmas", frozen_array(sigmas, np.float32))
        object.__setattr__(self, "orders", frozen_array(orders, np.int32))

    def _tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(model timesteps (n,), sigmas (n+1,) ending in 0, solver order per step (n,)) for this config and n."""
        raise NotImplementedError

    def _key(self):
        return (type(self), self.config, self.num_inference_steps)

    def __eq__(self, other):
        return isinstance(other, FlowSchedule) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        return f"{type(self).__name__}(config={self.config!r}, num_inference_steps={self.num_inference_steps})"
