"""The typed training config: one frozen dataclass per section, read strictly from an experiment file.

    config = read_training_config(config_dict)   # -> TrainingConfig; raises TrainingConfigError / DataConfigError

Experiment files (``configs/*.py``) stay ``ml_collections.ConfigDict``s, so ``--config.KEY=VALUE`` overrides work
through absl; ``train()`` converts them here before anything is created. Every field carries its description and
its value rule in ``metadata`` (``help``, ``check``); the defaults live here only (``recipes`` builds its ConfigDicts
from these classes). An unknown key in any section is an error naming the key, its section and the nearest valid
key; a bad value names the key and what was expected (``optim.lr=-1.0: expected a number > 0``); a missing key takes
its field's default, and a field without one is required. Checked elsewhere: ``model.architecture`` (the component
config dataclass, at build) and the mesh's fit to the devices (``mesh.make_mesh``, at build: it needs the count).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
from typing import Any, Callable, Iterable, Mapping

from sana_jax.kernels.linear_attention import IMPLEMENTATIONS
from sana_jax.models.transformer import REMAT_POLICIES
from sana_jax.pipeline.denoise import FEW_STEP_TIMESTEPS
from sana_jax.training.data.config import DataConfig, read_data_config
from sana_jax.training.objective import BLOCK_MODES

TASKS = ("dit", "autoencoder", "ode_init", "self_forcing")
DTYPES = ("float32", "bfloat16", "float16")


class TrainingConfigError(ValueError):
    """A training config key that is unknown, missing or holds a bad value; the message names the key."""


# -- value rules: (check, what it expects) -------------------------------------------------------------------------

Rule = tuple[Callable[[Any], bool], str]


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _int(low: int) -> Rule:
    return (lambda v: _is_int(v) and v >= low), f"an int >= {low}"


def _number(low: float, *, strict: bool) -> Rule:
    ok = (lambda v: _is_number(v) and v > low) if strict else (lambda v: _is_number(v) and v >= low)
    return ok, f"a number {'>' if strict else '>='} {low:g}"


def _fraction(*, one: bool) -> Rule:
    """[0, 1] or [0, 1)."""
    if one:
        return (lambda v: _is_number(v) and 0 <= v <= 1), "a number in [0, 1]"
    return (lambda v: _is_number(v) and 0 <= v < 1), "a number in [0, 1)"


def _one_of(choices: Iterable[str]) -> Rule:
    choices = tuple(choices)
    return (lambda v: v in choices), f"one of {choices}"


_FINITE: Rule = (_is_number, "a finite number")
_BOOL: Rule = ((lambda v: isinstance(v, bool)), "True or False")
_STR: Rule = ((lambda v: isinstance(v, str)), "a string (a path, or '' for none)")
_TIMESTEPS: Rule = ((lambda v: isinstance(v, (tuple, list)) and len(v) >= 1
                     and all(_is_number(t) and 0 < t <= 1000 for t in v)
                     and all(a > b for a, b in zip(v, v[1:]))), "a decreasing sequence of timesteps in (0, 1000]")
_MAPPING: Rule = ((lambda v: isinstance(v, Mapping) or hasattr(v, "to_dict")), "a dict")
_MESH_SIZE: Rule = ((lambda v: _is_int(v) and (v >= 1 or v == -1)), "an int >= 1, or -1 (what the devices leave)")
_RULES: Rule = ((lambda v: isinstance(v, (tuple, list)) and all(isinstance(r, (tuple, list)) and len(r) == 2
                                                                and isinstance(r[0], str) for r in v)),
                "a sequence of (logical axis, mesh axis | tuple of mesh axes | None) pairs")


def _field(help: str, rule: Rule | None = None, default: Any = dataclasses.MISSING, *, factory=dataclasses.MISSING):
    """A field with its description and its value rule (``metadata``)."""
    return dataclasses.field(default=default, default_factory=factory, metadata={"help": help, "rule": rule})


# -- the sections --------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """AdamW, linear warm-up then constant (or cosine decay to 0); the defaults are the published SANA-Video
    recipe."""
    lr: float = _field("peak learning rate, reached after warmup_steps", _number(0, strict=True), 5e-5)
    b1: float = _field("AdamW beta1", _fraction(one=False), 0.9)
    b2: float = _field("AdamW beta2", _fraction(one=False), 0.999)
    eps: float = _field("AdamW epsilon", _number(0, strict=False), 1e-10)
    weight_decay: float = _field("AdamW decoupled weight decay", _number(0, strict=False), 0.0)
    warmup_steps: int = _field("steps of linear warm-up from 0 to lr", _int(0), 500)
    decay_steps: int = _field("after warm-up, cosine decay from lr to 0 over this many steps (then 0); "
                              "0 = constant lr", _int(0), 0)
    grad_clip: float = _field("clip gradients at this global norm; 0 = off", _number(0, strict=False), 0.1)
    ema_decay: float = _field("decay of an EMA of the params; 0 = no EMA", _fraction(one=False), 0.0)


@dataclasses.dataclass(frozen=True)
class FlowMatchingConfig:
    """The ``objective`` of task "dit": flow matching on the NVlabs sigma grid (defaults: the published recipe)."""
    flow_shift: float = _field("the sigma grid's shift", _number(0, strict=True), 3.0)
    logit_mean: float = _field("mean of the logit-normal timestep distribution", _FINITE, 0.0)
    logit_std: float = _field("std of the logit-normal timestep distribution", _number(0, strict=True), 1.0)
    caption_dropout: float = _field("probability of training on the empty caption (for CFG)",
                                    _fraction(one=True), 0.1)
    i2v_prob: float = _field("probability of an image-to-video sample: a clean, unscored first latent frame",
                             _fraction(one=True), 0.0)
    block_frames: int = _field("latent frames per block of block-causal diffusion forcing; 0 = bidirectional",
                               _int(0), 0)
    block_modes: dict = _field(f"{{mode: weight}} drawing the per-block timesteps; modes: {BLOCK_MODES}", _MAPPING,
                               factory=lambda: {"incremental": 1.0})
    max_frame_offset: int = _field("random RoPE time offsets in [0, this] per batch (teaches long-video positions)",
                                   _int(0), 0)


@dataclasses.dataclass(frozen=True)
class OdeInitConfig:
    """The ``objective`` of task "ode_init" (LongSANA stage 1): the block-causal student regressed onto a teacher's
    ODE trajectories (a latent cache from ``python -m sana_jax.training.ode_pairs``); per (clip, block) one state
    k of the trajectory, the clean state being context only; loss: MSE of the predicted x0 to the trajectory's end."""
    block_frames: int = _field("latent frames per block, laid out as the stream lays them (the first takes the "
                               "remainder)", _int(1))
    timesteps: tuple = _field("the few-step timesteps the trajectories were recorded at (their cache's "
                              "metadata must agree)", _TIMESTEPS, FEW_STEP_TIMESTEPS)
    max_frame_offset: int = _field("random RoPE time offsets in [0, this] per batch (teaches long-video positions)",
                                   _int(0), 0)


@dataclasses.dataclass(frozen=True)
class SelfForcingConfig:
    """The ``objective`` of task "self_forcing" (LongSANA stages 2 and 3): the student rolls out its own blocks
    through its carried state (the few-step sampler of ``pipe.stream``, a random exit step per block) and is trained
    by DMD against a frozen teacher (real score, CFG) and a critic (fake score) trained online by flow matching on
    the student's detached samples. ``long_rollout_blocks`` > 0: a long rollout (the first block and up to this many
    more, all without gradient) before the scored window."""
    teacher: str = _field("the frozen teacher (real score): a transformer component folder, or a pipeline folder "
                          "(needed for a negative_prompt)", _STR)
    block_frames: int = _field("latent frames per block of the rollout (the first takes the remainder)", _int(1))
    critic_init_from: str = _field("the critic's (fake score's) start; '' = the teacher's weights", _STR, "")
    guidance_scale: float = _field("CFG weight of the real score: uncond + w (cond - uncond)", _number(0, strict=False),
                                   4.0)
    negative_prompt: str = _field("the real score's unconditional prompt; '' = the data's empty caption", _STR, "")
    timesteps: tuple = _field("the student's few-step timesteps (the exit step is one of them)", _TIMESTEPS,
                              FEW_STEP_TIMESTEPS)
    dmd_shift: float = _field("shift of the DMD / critic timestep distribution t = 1000 s u / (1 + (s - 1) u)",
                              _number(0, strict=True), 5.0)
    min_timestep: float = _field("DMD / critic timesteps are clipped to [min_timestep, max_timestep]",
                                 _number(0, strict=False), 20.0)
    max_timestep: float = _field("see min_timestep", _number(0, strict=True), 980.0)
    generator_every: int = _field("one generator update every this many steps (a critic update every step)",
                                  _int(1), 5)
    long_rollout_blocks: int = _field("0: the rollout is the clip (all blocks scored); N > 0: the first block and "
                                      "0..N more without gradient, then the scored window of (clip frames - 1) / "
                                      "block_frames blocks after one clean context frame", _int(0), 0)
    window_context: bool = _field("long rollouts: the scores see the window after its clean context frame (pinned, "
                                  "as image-to-video; LongSANA's layout); False: the window's blocks alone, as a "
                                  "clip of their own", _BOOL, True)


@dataclasses.dataclass(frozen=True)
class AutoencoderObjectiveConfig:
    """The ``objective`` of task "autoencoder": weighted MSE + l1_weight * L1 + latent_l2_weight * mean(latent²)."""
    l1_weight: float = _field("weight of the L1 reconstruction term", _number(0, strict=False))
    latent_l2_weight: float = _field("weight of mean(latent²), which keeps the latent scale bounded",
                                     _number(0, strict=False), 0.0)
    foreground_weight: float = _field("pixels weigh 1 + this * their distance from the frame's median colour",
                                      _number(0, strict=False), 0.0)
    decoder_window: int = _field(
        "0: encoder and decoder trained together. k > 0 (AutoencoderKLWan): the decoder alone, the encoder frozen, "
        "on each latent frame as the encoder makes it in a clip of k latent frames (a window ending at or after "
        "it), so long decodes meet the latents a model trained on k-latent-frame clips generates", _int(0), 0)


@dataclasses.dataclass(frozen=True)
class DiTModelConfig:
    """The ``model`` of task "dit": a SanaVideoTransformer3DModel."""
    architecture: dict = _field("diffusers config.json keys of the transformer (unused with init_from)", _MAPPING,
                                factory=dict)
    init_from: str = _field("a component folder to start from (its config.json and weights); '' = random init",
                            _STR, "")
    dtype: str = _field("compute dtype", _one_of(DTYPES), "float32")
    param_dtype: str = _field("dtype of the master params", _one_of(DTYPES), "float32")
    scan_layers: bool = _field("blocks under nn.scan (False: unrolled)", _BOOL, True)
    # dots_no_batch keeps the Dense outputs and recomputes the rest in the backward: on the 2-core CPU the small DiT's
    # step took 0.84-0.94x the time of "none" in every run, with 0.55x XLA's temp memory (benchmarks/train_step.py)
    remat_policy: str = _field("rematerialisation of each block", _one_of(REMAT_POLICIES), "dots_no_batch")
    attention_implementation: str = _field("linear attention kernel", _one_of(IMPLEMENTATIONS), "auto")


AUTOENCODER_CLASSES = ("AutoencoderDC", "AutoencoderKLWan")


@dataclasses.dataclass(frozen=True)
class AutoencoderModelConfig:
    """The ``model`` of task "autoencoder"."""
    class_name: str = _field("the autoencoder trained", _one_of(AUTOENCODER_CLASSES), "AutoencoderDC")
    architecture: dict = _field("diffusers config.json keys of the autoencoder (unused with init_from)", _MAPPING,
                                factory=dict)
    init_from: str = _field("a component folder to start from (its config.json and weights); '' = random init",
                            _STR, "")
    dtype: str = _field("compute dtype", _one_of(DTYPES), "float32")
    param_dtype: str = _field("dtype of the master params", _one_of(DTYPES), "float32")


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Device mesh axis sizes, one field per ``mesh.MESH_AXES`` (a test holds the two together); one may be -1
    (whatever the devices leave)."""
    data: int = _field("data-parallel axis (batch)", _MESH_SIZE, 1)
    fsdp: int = _field("fully sharded data-parallel axis (batch, and params' embed: ZeRO-3)", _MESH_SIZE, 1)
    tensor: int = _field("tensor-parallel axis (mlp, heads)", _MESH_SIZE, 1)
    sequence: int = _field("sequence-parallel axis (video frames)", _MESH_SIZE, 1)

    def shape(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """A training run: the top-level (run) keys and one typed section each."""
    task: str = _field("what is trained", _one_of(TASKS))
    seed: int = _field("seed of the params' init and the per-step PRNG keys", _int(0))
    total_steps: int = _field("the step the run trains to", _int(1))
    batch_size: int = _field("global batch size (divided over the processes)", _int(1))
    checkpoint_every: int = _field("steps between checkpoints", _int(1))
    keep_checkpoints: int = _field("checkpoints kept (the newest)", _int(1))
    model: DiTModelConfig | AutoencoderModelConfig = _field("the model section")
    data: DataConfig = _field("the data section (sana_jax.training.data.config)")
    objective: FlowMatchingConfig | AutoencoderObjectiveConfig | OdeInitConfig | SelfForcingConfig = _field(
        "the objective section")
    optim: OptimConfig = _field("the optimiser section", factory=OptimConfig)
    critic_optim: OptimConfig | None = _field("the critic's optimiser (task self_forcing only)", None, None)
    mesh: MeshConfig = _field("the mesh section", factory=MeshConfig)
    mesh_rules: tuple = _field("logical-axis rules; () = sana_jax.training.mesh.DEFAULT_RULES", _RULES, ())
    log_every: int = _field("steps between metrics rows", _int(1), 10)
    device_peak_flops: float = _field("peak FLOP/s of one device, for MFU; 0 = unknown (not reported)",
                                      _number(0, strict=False), 0.0)

    def to_dict(self) -> dict:
        """Plain JSON-ready values (tuples as lists), as ``WORKDIR/config.json`` holds them; a section this task
        does not have (None) is left out."""
        return _json_ready({k: v for k, v in dataclasses.asdict(self).items() if v is not None})


SECTIONS = {  # section -> {task: class}
    "model": {"dit": DiTModelConfig, "autoencoder": AutoencoderModelConfig, "ode_init": DiTModelConfig,
              "self_forcing": DiTModelConfig},
    "objective": {"dit": FlowMatchingConfig, "autoencoder": AutoencoderObjectiveConfig, "ode_init": OdeInitConfig,
                  "self_forcing": SelfForcingConfig},
    "critic_optim": {"self_forcing": OptimConfig},
    "optim": {task: OptimConfig for task in TASKS},
    "data": {task: DataConfig for task in TASKS},
    "mesh": {task: MeshConfig for task in TASKS},
}
TOP_LEVEL = "top level"


def field_names(cls) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def valid_keys(section: str, task: str | None = None) -> tuple[str, ...]:
    """The keys of ``section`` ("" for the top level) for ``task`` (None: of any task)."""
    if not section:
        return field_names(TrainingConfig)
    classes = SECTIONS[section]
    chosen = [classes[task]] if task in classes else list(classes.values())
    return tuple(dict.fromkeys(k for cls in chosen for k in field_names(cls)))


def unknown_key_message(section: str, key: str, valid: Iterable[str]) -> str:
    """``optim.lrr: unknown key in section 'optim'; the nearest valid key is optim.lr``."""
    valid = sorted(valid)
    prefix = f"{section}." if section else ""
    where = f"section '{section}'" if section else f"the {TOP_LEVEL} section"
    nearest = difflib.get_close_matches(key, valid, n=1)
    hint = (f"the nearest valid key is {prefix}{nearest[0]}" if nearest else f"valid keys: {valid}")
    return f"{prefix}{key}: unknown key in {where}; {hint}"


# -- the reader ----------------------------------------------------------------------------------------------------

def read_training_config(config: Any) -> TrainingConfig:
    """``config`` (the ``ml_collections.ConfigDict`` of a ``configs/*.py`` file, any mapping with its keys, or a
    ``TrainingConfig``, returned as is) as a checked ``TrainingConfig``.

    Raises ``TrainingConfigError`` (``DataConfigError`` for a bad ``data.*`` value) naming the first bad key: unknown
    keys of every section first (with the nearest valid key), then missing keys and values."""
    if isinstance(config, TrainingConfig):
        return config
    raw = _as_dict(config, TOP_LEVEL)
    task = raw.get("task")
    if task not in TASKS:
        raise TrainingConfigError(f"task={task!r}: expected one of {TASKS}" if "task" in raw else
                                  f"task: missing; expected one of {TASKS}")
    _check_known("", raw, field_names(TrainingConfig))
    sections = {}
    for name, classes in SECTIONS.items():
        if name in raw:
            if task not in classes:
                raise TrainingConfigError(f"{name}: a section of task {' / '.join(classes)} only; this is task "
                                          f"{task!r}")
            sections[name] = _as_dict(raw[name], name)
            _check_known(name, sections[name], field_names(classes[task]))
    if "objective" in sections and "block_modes" in sections["objective"] and task == "dit":
        _check_block_modes(sections["objective"]["block_modes"])
    top = {k: v for k, v in raw.items() if k not in SECTIONS}
    values = _read_fields(TrainingConfig, top, "", skip=set(SECTIONS))
    for name in ("model", "data"):
        if name not in sections:
            raise TrainingConfigError(f"{name}: missing section")
    values["model"] = SECTIONS["model"][task](**_read_fields(SECTIONS["model"][task], sections["model"], "model"))
    objective_cls = SECTIONS["objective"][task]
    values["objective"] = objective_cls(**_read_fields(objective_cls, sections.get("objective", {}), "objective"))
    values["optim"] = OptimConfig(**_read_fields(OptimConfig, sections.get("optim", {}), "optim"))
    if task == "self_forcing":
        values["critic_optim"] = OptimConfig(**_read_fields(OptimConfig, sections.get("critic_optim", {}),
                                                            "critic_optim"))
        if values["objective"].min_timestep > values["objective"].max_timestep:
            raise TrainingConfigError(f"objective.min_timestep={values['objective'].min_timestep}: expected <= "
                                      f"objective.max_timestep={values['objective'].max_timestep}")
    values["mesh"] = MeshConfig(**_read_fields(MeshConfig, sections.get("mesh", {}), "mesh"))
    if list(values["mesh"].shape().values()).count(-1) > 1:
        raise TrainingConfigError(f"mesh={values['mesh'].shape()}: at most one axis may be -1")
    if not values["model"].init_from and not values["model"].architecture:
        raise TrainingConfigError("model.architecture: missing; the config needs model.architecture (diffusers "
                                  "config.json keys) or model.init_from (a component folder)")
    values["data"] = read_data_config(sections["data"])
    if task == "autoencoder" and values["objective"].decoder_window:
        _check_decoder_window(values["objective"].decoder_window, values["model"], values["data"])
    return TrainingConfig(**values)


def _check_decoder_window(k: int, model, data) -> None:
    if model.class_name != "AutoencoderKLWan":
        raise TrainingConfigError(f"objective.decoder_window={k}: a causal video autoencoder's option "
                                  f"(model.class_name 'AutoencoderKLWan'); this is {model.class_name!r}")
    if k < 2:
        raise TrainingConfigError(f"objective.decoder_window={k}: expected 0 (off) or >= 2 latent frames")
    needed = 1 + 4 * k   # one latent frame more than the window (the Wan VAE's 4x in time): some frame is past it
    if data.frames < needed:
        raise TrainingConfigError(f"data.frames={data.frames}: objective.decoder_window={k} needs clips longer "
                                  f"than the window, at least {needed} frames")


def _check_known(section: str, raw: Mapping[str, Any], valid: Iterable[str]) -> None:
    valid = set(valid)
    unknown = sorted(set(raw) - valid)
    if unknown:
        raise TrainingConfigError(unknown_key_message(section, unknown[0], valid))


def _read_fields(cls, raw: Mapping[str, Any], section: str, *, skip: set[str] = frozenset()) -> dict[str, Any]:
    """{field: value} of ``cls`` from ``raw`` (known keys only), each checked by its rule; a missing field with a
    default is left out (the dataclass fills it)."""
    prefix = f"{section}." if section else ""
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        rule = f.metadata["rule"]
        if f.name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                expected = f" expected {rule[1]}" if rule else ""
                raise TrainingConfigError(f"{prefix}{f.name}: missing;{expected} ({f.metadata['help']})")
            continue
        value = raw[f.name]
        if rule is not None and not rule[0](value):
            raise TrainingConfigError(f"{prefix}{f.name}={value!r}: expected {rule[1]}")
        values[f.name] = _plain(value)
    return values


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


def _as_dict(section: Any, name: str) -> dict[str, Any]:
    if hasattr(section, "to_dict"):
        return section.to_dict()
    if isinstance(section, Mapping):
        return dict(section)
    if dataclasses.is_dataclass(section) and not isinstance(section, type):
        return {f.name: getattr(section, f.name) for f in dataclasses.fields(section)}
    raise TrainingConfigError(f"{name}: expected a section (an ml_collections.ConfigDict or a dict); "
                              f"got {type(section).__name__}")


def _plain(value: Any) -> Any:
    """ConfigDicts as dicts, lists as tuples (hashable, as a frozen config's values should be where they can)."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, list):
        return tuple(_plain(v) for v in value)
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return value


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_json_ready(v) for v in value]
    return value
