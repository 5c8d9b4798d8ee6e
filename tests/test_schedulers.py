"""Flow samplers against diffusers 0.42.1: schedules, every intermediate sample, the jitted loop, config parsing."""

from __future__ import annotations

import dataclasses
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sana_jax.config import ConfigError
from sana_jax.schedulers import (
    SANA_VIDEO_DPM_SCHEDULER,
    SANA_VIDEO_I2V_EULER_SCHEDULER,
    DPMSolverMultistepSchedulerConfig,
    FlowMatchEulerDiscreteSchedulerConfig,
    load_scheduler,
)
from sana_jax.testing.numerics import rel_err

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

STEPS = (1, 2, 5, 14, 15, 20, 50)
SHIFTS = (1.0, 3.0, 8.0)
TOL = 1e-5


def torch_dpm(shift: float = 8.0, **kwargs):
    return diffusers.DPMSolverMultistepScheduler(
        flow_shift=shift, use_flow_sigmas=True, prediction_type="flow_prediction", **kwargs
    )


def jax_dpm(shift: float = 8.0, **kwargs):
    return DPMSolverMultistepSchedulerConfig(
        flow_shift=shift, use_flow_sigmas=True, prediction_type="flow_prediction", **kwargs
    )


class LinearModel:
    """v = x·A + b over the channel axis: the same float32 numbers for both frameworks."""

    def __init__(self, channels: int = 8, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.a = (0.6 * rng.standard_normal((channels, channels)) / channels**0.5).astype(np.float32)
        self.b = (0.3 * rng.standard_normal(channels)).astype(np.float32)
        self.x = rng.standard_normal((2, 3, 5, channels)).astype(np.float32)

    def torch(self, x):
        return x @ torch.from_numpy(self.a) + torch.from_numpy(self.b)

    def jax(self, x):
        return jnp.dot(x, self.a, precision=jax.lax.Precision.HIGHEST) + self.b


def torch_trajectory(sched, n: int, model: LinearModel) -> list[np.ndarray]:
    sched.set_timesteps(n)
    x = torch.from_numpy(model.x)
    out = []
    for t in sched.timesteps:
        x = sched.step(model.torch(x), t, x).prev_sample
        out.append(x.numpy())
    return out


def jax_trajectory(schedule, model: LinearModel) -> np.ndarray:
    """All intermediate samples (n, *x.shape) from one jitted lax.scan with a traced step index."""

    @jax.jit
    def run(x):
        def body(carry, i):
            x, state = carry
            x, state = schedule.step(state, model.jax(x), i, x)
            return (x, state), x

        _, xs = jax.lax.scan(body, (x, schedule.init_state(x)), jnp.arange(schedule.num_inference_steps))
        return xs

    return np.asarray(run(jnp.asarray(model.x)))


def jax_fori_final(schedule, model: LinearModel) -> np.ndarray:
    @jax.jit
    def run(x):
        def body(i, carry):
            x, state = carry
            return schedule.step(state, model.jax(x), i, x)

        x, _ = jax.lax.fori_loop(0, schedule.num_inference_steps, body, (x, schedule.init_state(x)))
        return x

    return np.asarray(run(jnp.asarray(model.x)))


# --- schedules -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shift", SHIFTS)
@pytest.mark.parametrize("n", STEPS)
def test_dpm_timesteps_and_sigmas_equal_diffusers(n, shift):
    ref = torch_dpm(shift)
    ref.set_timesteps(n)
    ours = jax_dpm(shift).schedule(n)
    assert ours.timesteps.dtype == np.float32 and ours.timesteps.shape == (n,)
    np.testing.assert_array_equal(ours.timesteps.astype(np.int64), ref.timesteps.numpy())
    np.testing.assert_array_equal(ours.timesteps, ref.timesteps.numpy().astype(np.float32))
    assert ours.sigmas.dtype == np.float32 and ours.sigmas.shape == (n + 1,)
    np.testing.assert_array_equal(ours.sigmas, ref.sigmas.numpy())


@pytest.mark.parametrize("shift", SHIFTS)
@pytest.mark.parametrize("n", STEPS)
def test_euler_timesteps_and_sigmas_equal_diffusers(n, shift):
    ref = diffusers.FlowMatchEulerDiscreteScheduler(shift=shift)
    ref.set_timesteps(n)
    ours = FlowMatchEulerDiscreteSchedulerConfig(shift=shift).schedule(n)
    assert ours.timesteps.dtype == np.float32 and ours.timesteps.shape == (n,)
    np.testing.assert_array_equal(ours.timesteps, ref.timesteps.numpy())
    assert ours.sigmas.dtype == np.float32 and ours.sigmas.shape == (n + 1,)
    np.testing.assert_array_equal(ours.sigmas, ref.sigmas.numpy())


@pytest.mark.parametrize("solver_order", (1, 2))
@pytest.mark.parametrize("n", STEPS)
def test_dpm_solver_order_per_step_equals_diffusers_choice(n, solver_order):
    """diffusers' order decision (history, last step, the n < 15 rule), recorded by spying on its update calls."""
    ref = torch_dpm(8.0, solver_order=solver_order)
    orders = []
    first, second = ref.dpm_solver_first_order_update, ref.multistep_dpm_solver_second_order_update
    ref.dpm_solver_first_order_update = lambda *a, **k: orders.append(1) or first(*a, **k)
    ref.multistep_dpm_solver_second_order_update = lambda *a, **k: orders.append(2) or second(*a, **k)
    torch_trajectory(ref, n, LinearModel())
    assert list(jax_dpm(8.0, solver_order=solver_order).schedule(n).orders) == orders
    if solver_order == 2 and n >= 3:
        assert orders == [1] + [2] * (n - 2) + [1]


# --- steps -------------------------------------------------------------------------------------------------------


def assert_trajectories_close(ours: np.ndarray, ref: list[np.ndarray]):
    assert ours.shape == (len(ref), *ref[0].shape)
    errs = [rel_err(o, r) for o, r in zip(ours, ref)]
    assert max(errs) <= TOL, f"per-step rel errors {errs}"


@pytest.mark.parametrize("n", (2, 5, 14, 50))
def test_dpm_every_intermediate_sample_matches_diffusers(n):
    model = LinearModel()
    ref = torch_trajectory(torch_dpm(8.0), n, model)
    assert_trajectories_close(jax_trajectory(SANA_VIDEO_DPM_SCHEDULER.schedule(n), model), ref)


def test_dpm_first_order_solver_matches_diffusers():
    model = LinearModel(seed=1)
    ref = torch_trajectory(torch_dpm(3.0, solver_order=1), 20, model)
    assert_trajectories_close(jax_trajectory(jax_dpm(3.0, solver_order=1).schedule(20), model), ref)


@pytest.mark.parametrize("shift", (8.0, 1.0))
@pytest.mark.parametrize("n", (2, 5, 14, 50))
def test_euler_every_intermediate_sample_matches_diffusers(n, shift):
    model = LinearModel(seed=2)
    ref = torch_trajectory(diffusers.FlowMatchEulerDiscreteScheduler(shift=shift), n, model)
    ours = jax_trajectory(FlowMatchEulerDiscreteSchedulerConfig(shift=shift).schedule(n), model)
    assert_trajectories_close(ours, ref)


def test_dpm_eager_steps_with_python_int_index_match_diffusers():
    model = LinearModel(seed=3)
    ref = torch_trajectory(torch_dpm(8.0), 5, model)
    schedule = SANA_VIDEO_DPM_SCHEDULER.schedule(5)
    x = jnp.asarray(model.x)
    state = schedule.init_state(x)
    for i in range(5):
        x, state = schedule.step(state, model.jax(x), i, x)
        assert rel_err(x, ref[i]) <= TOL


@pytest.mark.parametrize(
    "schedule, reference",
    [
        (SANA_VIDEO_DPM_SCHEDULER.schedule(50), lambda: torch_dpm(8.0)),
        (SANA_VIDEO_I2V_EULER_SCHEDULER.schedule(50), lambda: diffusers.FlowMatchEulerDiscreteScheduler(shift=8.0)),
    ],
    ids=["dpm", "euler"],
)
def test_jitted_fori_loop_final_sample_matches_diffusers(schedule, reference):
    model = LinearModel(seed=4)
    ref = torch_trajectory(reference(), 50, model)[-1]
    assert rel_err(jax_fori_final(schedule, model), ref) <= TOL


@pytest.mark.parametrize("schedule", [SANA_VIDEO_DPM_SCHEDULER.schedule(3), SANA_VIDEO_I2V_EULER_SCHEDULER.schedule(3)],
                         ids=["dpm", "euler"])
def test_step_returns_model_output_dtype_and_keeps_state_structure(schedule):
    x = jnp.ones((1, 2, 4), jnp.bfloat16)
    state = schedule.init_state(x)
    out, new_state = jax.jit(schedule.step)(state, jnp.full_like(x, 0.5), jnp.int32(1), x)
    assert out.dtype == jnp.bfloat16 and out.shape == x.shape
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    assert all(a.dtype == b.dtype and a.shape == b.shape
               for a, b in zip(jax.tree.leaves(new_state), jax.tree.leaves(state)))


def test_schedules_are_hashable_by_config_and_steps_with_read_only_tables():
    a, b = SANA_VIDEO_DPM_SCHEDULER.schedule(20), jax_dpm(8.0).schedule(20)
    assert a == b and hash(a) == hash(b) and a != jax_dpm(8.0).schedule(21)
    with pytest.raises(ValueError):
        a.sigmas[0] = 0.0
    with pytest.raises(ValueError, match="num_inference_steps"):
        SANA_VIDEO_DPM_SCHEDULER.schedule(0)


# --- configs -----------------------------------------------------------------------------------------------------


def assert_config_equals_diffusers(ours, ref_config, path):
    saved = {k for k in json.loads(path.read_text()) if not k.startswith("_")}
    assert saved == {k for k in ref_config if not k.startswith("_")} == {f.name for f in dataclasses.fields(ours)}
    for key in saved:
        expected = ref_config[key]
        expected = tuple(expected) if isinstance(expected, list) else expected
        assert getattr(ours, key) == expected, key


def test_load_scheduler_reads_diffusers_saved_dpm_config_with_minus_infinity(tmp_path):
    ref = torch_dpm(8.0)
    ref.save_config(tmp_path / "scheduler")
    path = tmp_path / "scheduler" / "scheduler_config.json"
    assert "-Infinity" in path.read_text()
    for where in (tmp_path, tmp_path / "scheduler", path):  # pipeline folder, scheduler folder, json file
        ours = load_scheduler(where)
        assert isinstance(ours, DPMSolverMultistepSchedulerConfig) and ours == SANA_VIDEO_DPM_SCHEDULER
    assert ours.lambda_min_clipped == -np.inf
    assert_config_equals_diffusers(ours, ref.config, path)


def test_load_scheduler_reads_diffusers_saved_euler_config(tmp_path):
    ref = diffusers.FlowMatchEulerDiscreteScheduler(shift=8.0)
    ref.save_config(tmp_path)
    ours = load_scheduler(tmp_path)
    assert isinstance(ours, FlowMatchEulerDiscreteSchedulerConfig) and ours == SANA_VIDEO_I2V_EULER_SCHEDULER
    assert_config_equals_diffusers(ours, ref.config, tmp_path / "scheduler_config.json")


@pytest.mark.parametrize("config, cls", [(SANA_VIDEO_DPM_SCHEDULER, diffusers.DPMSolverMultistepScheduler),
                                         (SANA_VIDEO_I2V_EULER_SCHEDULER, diffusers.FlowMatchEulerDiscreteScheduler)],
                         ids=["dpm", "euler"])
def test_written_config_loads_in_diffusers_with_the_same_schedule(tmp_path, config, cls):
    config.to_json_file(tmp_path / "scheduler_config.json")
    ref = cls.from_pretrained(tmp_path)
    ref.set_timesteps(50)
    ours = config.schedule(50)
    np.testing.assert_array_equal(ours.sigmas, ref.sigmas.numpy())
    np.testing.assert_array_equal(ours.timesteps, ref.timesteps.numpy().astype(np.float32))


def write_config(tmp_path, **changes):
    data = SANA_VIDEO_DPM_SCHEDULER.to_dict()
    data.update(changes)
    path = tmp_path / "scheduler_config.json"
    path.write_text(json.dumps(data))
    return path


def test_unknown_key_is_an_error_naming_it(tmp_path):
    with pytest.raises(ConfigError, match="not_a_scheduler_key"):
        load_scheduler(write_config(tmp_path, not_a_scheduler_key=1))


@pytest.mark.parametrize("key, value, accepted", [
    ("solver_type", "heun", "'midpoint'"),
    ("algorithm_type", "sde-dpmsolver++", "'dpmsolver++'"),
    ("solver_order", 3, "1, 2"),
    ("prediction_type", "epsilon", "'flow_prediction'"),
    ("use_karras_sigmas", True, "False"),
    ("final_sigmas_type", "sigma_min", "'zero'"),
])
def test_unsupported_dpm_value_is_an_error_naming_key_and_accepted_values(tmp_path, key, value, accepted):
    path = write_config(tmp_path, **{key: value})
    with pytest.raises(ConfigError, match=re.escape(f"{path}: ")) as err:
        load_scheduler(path)
    assert f"{key}={value!r} (accepted: {accepted})" in str(err.value)


def test_euler_rejects_stochastic_sampling_dynamic_shifting_and_a_flow_shift_key():
    with pytest.raises(ConfigError, match="use_dynamic_shifting=True.*stochastic_sampling=True"):
        FlowMatchEulerDiscreteSchedulerConfig(stochastic_sampling=True, use_dynamic_shifting=True)
    # The docs' `from_config(..., flow_shift=8.0)` silently means shift 1.0 in diffusers; here it is an error.
    with pytest.raises(ConfigError, match="flow_shift"):
        FlowMatchEulerDiscreteSchedulerConfig.from_dict({"flow_shift": 8.0})


def test_load_scheduler_rejects_other_scheduler_classes(tmp_path):
    diffusers.EulerDiscreteScheduler().save_config(tmp_path)
    with pytest.raises(ConfigError, match="EulerDiscreteScheduler"):
        load_scheduler(tmp_path)
