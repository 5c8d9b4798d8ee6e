"""``check_training_config``: the training config's values, checked before a run creates anything.

A bad value fails at start-up naming its key and what was expected (``optim.lr=-1.0: expected a number > 0``),
instead of diverging, "training to step 0", or failing deep inside the first step. The rules are one table per
config section, so they move as one piece when the config becomes typed dataclasses. Sections checked elsewhere:
``data`` (``sana_jax.training.data.config``, called from here), ``model.architecture`` (the component config
dataclass, at build), ``mesh`` (``mesh.make_mesh``, at build: it needs the device count).
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Mapping

from sana_jax.training.data.config import read_data_config
from sana_jax.training.objective import BLOCK_MODES


class TrainingConfigError(ValueError):
    """A training config key that is missing or holds a bad value; the message names the key."""


Check = Callable[[Any], bool]


def _int(low: int) -> tuple[Check, str]:
    return (lambda v: _is_int(v) and v >= low), f"an int >= {low}"


def _number(low: float, *, strict: bool) -> tuple[Check, str]:
    ok = (lambda v: _is_number(v) and v > low) if strict else (lambda v: _is_number(v) and v >= low)
    return ok, f"a number {'>' if strict else '>='} {low:g}"


def _fraction(*, one: bool) -> tuple[Check, str]:
    """[0, 1] or [0, 1)."""
    if one:
        return (lambda v: _is_number(v) and 0 <= v <= 1), "a number in [0, 1]"
    return (lambda v: _is_number(v) and 0 <= v < 1), "a number in [0, 1)"


# key -> (check, what it expects, required)
TOP = {
    "seed": (*_int(0), True),
    "total_steps": (*_int(1), True),
    "batch_size": (*_int(1), True),
    "checkpoint_every": (*_int(1), True),
    "keep_checkpoints": (*_int(1), True),
    "log_every": (*_int(1), False),
    "device_peak_flops": (*_number(0, strict=False), False),   # 0 = unknown
}
OPTIM = {  # the keys of recipes.adamw(), all required (a test holds the two together)
    "lr": (*_number(0, strict=True), True),
    "b1": (*_fraction(one=False), True),
    "b2": (*_fraction(one=False), True),
    "eps": (*_number(0, strict=False), True),
    "weight_decay": (*_number(0, strict=False), True),
    "warmup_steps": (*_int(0), True),
    "grad_clip": (*_number(0, strict=False), True),            # 0 = off
    "ema_decay": (*_fraction(one=False), True),                # 0 = no EMA
}
FLOW_MATCHING = {  # the keys of recipes.flow_matching(), plus max_frame_offset
    "flow_shift": (*_number(0, strict=True), True),
    "logit_mean": ((lambda v: _is_number(v)), "a finite number", True),
    "logit_std": (*_number(0, strict=True), True),
    "caption_dropout": (*_fraction(one=True), True),
    "i2v_prob": (*_fraction(one=True), True),
    "block_frames": (*_int(0), True),                           # 0 = bidirectional
    "max_frame_offset": (*_int(0), False),
}
AUTOENCODER = {
    "l1_weight": (*_number(0, strict=False), True),
    "latent_l2_weight": (*_number(0, strict=False), False),
    "foreground_weight": (*_number(0, strict=False), False),
}
TASKS = ("dit", "autoencoder")


def check_training_config(config: Any) -> None:
    """Raises ``TrainingConfigError`` (``DataConfigError`` for ``data.*``) naming the first bad key.

    ``config``: the ``ml_collections.ConfigDict`` of a ``configs/*.py`` file (any mapping with the same keys)."""
    task = _get(config, "task")
    if task not in TASKS:
        raise TrainingConfigError(f"task={task!r}: expected one of {TASKS}")
    _check_section(config, "", TOP)
    optim = _section(config, "optim")
    unknown = sorted(set(_keys(optim)) - set(OPTIM))
    if unknown:
        raise TrainingConfigError(f"optim.{unknown[0]}: unknown key; expected the keys of recipes.adamw(): "
                                  f"{sorted(OPTIM)}")
    _check_section(optim, "optim.", OPTIM)
    objective = _section(config, "objective")
    if task == "dit":
        _check_section(objective, "objective.", FLOW_MATCHING)
        _check_block_modes(_get(objective, "block_modes"))
    else:
        _check_section(objective, "objective.", AUTOENCODER)
    read_data_config(_section(config, "data"))


def _check_section(section: Any, prefix: str, rules: Mapping[str, tuple[Check, str, bool]]) -> None:
    for key, (ok, expected, required) in rules.items():
        if not _has(section, key):
            if required:
                raise TrainingConfigError(f"{prefix}{key}: missing; expected {expected}")
            continue
        value = _get(section, key)
        if not ok(value):
            raise TrainingConfigError(f"{prefix}{key}={value!r}: expected {expected}")


def _check_block_modes(modes: Any) -> None:
    if not isinstance(modes, Mapping) and not hasattr(modes, "items"):
        raise TrainingConfigError(f"objective.block_modes={modes!r}: expected a dict {{mode: weight}} over "
                                  f"{BLOCK_MODES}")
    modes = dict(modes.items())
    unknown = sorted(set(modes) - set(BLOCK_MODES))
    if unknown:
        raise TrainingConfigError(f"objective.block_modes.{unknown[0]}: unknown mode; expected some of {BLOCK_MODES}")
    for mode, weight in modes.items():
        if not (_is_number(weight) and weight >= 0):
            raise TrainingConfigError(f"objective.block_modes.{mode}={weight!r}: expected a number >= 0")
    if not sum(modes.values()) > 0:
        raise TrainingConfigError(f"objective.block_modes={modes}: expected weights with a positive sum")


def _section(config: Any, key: str) -> Any:
    if not _has(config, key):
        raise TrainingConfigError(f"{key}: missing section")
    return _get(config, key)


def _has(section: Any, key: str) -> bool:
    try:
        return key in section
    except TypeError:
        return False


def _get(section: Any, key: str) -> Any:
    return section[key] if _has(section, key) else None


def _keys(section: Any) -> list[str]:
    return list(section.keys())


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
