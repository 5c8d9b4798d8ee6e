"""A training run's safety: the workdir lock, Ctrl-C, unreadable checkpoints, and config values checked up front."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import ml_collections
import pytest

from sana_jax.training import recipes
from sana_jax.training.checkpoint import Checkpointer, CorruptCheckpointError
from sana_jax.training.config import (FlowMatchingConfig, MeshConfig, OptimConfig, TrainingConfig,
                                      TrainingConfigError, field_names, read_training_config)
from sana_jax.training.mesh import MESH_AXES
from sana_jax.training.trainer import NonFiniteLoss, build, train
from sana_jax.training.workdir_lock import WorkdirLock, WorkdirLockedError
from sana_jax.testing.training import REPO, load_config

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _tiny(**overrides):
    return load_config("tiny_smoke", **{"log_every": 1, **overrides})


def _files(folder) -> dict[str, bytes]:
    return {os.path.relpath(p, folder): open(p, "rb").read()
            for p in glob.glob(os.path.join(folder, "**"), recursive=True) + glob.glob(os.path.join(folder, ".*"))
            if os.path.isfile(p)}


def _losses(workdir) -> dict[int, float]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return {row["step"]: row["loss"] for row in map(json.loads, f)}


def _steps(workdir) -> list[int]:
    return Checkpointer(os.path.join(workdir, "checkpoints"), every=1, keep=1, read_only=True).all_steps()


_HOLD_LOCK = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("workdir_lock", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
module.WorkdirLock(sys.argv[2]).acquire()
print("locked", flush=True)
time.sleep(600)
"""


def _hold_lock(workdir) -> subprocess.Popen:
    """Another process that takes the workdir's lock (the lock module alone, loaded from its file) and keeps it."""
    path = os.path.join(REPO, "sana_jax", "training", "workdir_lock.py")
    proc = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, path, str(workdir)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


# -- the workdir lock ----------------------------------------------------------------------------------------------

def test_second_run_on_a_locked_workdir_fails_naming_the_holder_and_changes_no_file(tmp_path):
    train(_tiny(total_steps=2, checkpoint_every=2), str(tmp_path), progress=False)
    holder = _hold_lock(tmp_path)
    try:
        before = _files(tmp_path)
        with pytest.raises(WorkdirLockedError, match=f"pid {holder.pid} host {socket.gethostname()}"):
            train(_tiny(total_steps=4, checkpoint_every=2), str(tmp_path), progress=False)
        assert _files(tmp_path) == before  # the first run's metrics, checkpoints and config byte for byte
    finally:
        holder.kill()
        holder.wait()
    assert sorted(_losses(tmp_path)) == [1, 2]


def test_lock_of_a_killed_run_is_released_and_train_restores_the_signal_handlers(tmp_path):
    holder = _hold_lock(tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.wait()

    def mine(*_):
        pass

    previous = {s: signal.signal(s, mine) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        summary = train(_tiny(total_steps=1, checkpoint_every=1), str(tmp_path), progress=False)
        assert signal.getsignal(signal.SIGINT) is mine and signal.getsignal(signal.SIGTERM) is mine
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    assert summary["step"] == 1 and summary["stopped_by"] is None
    with WorkdirLock(tmp_path):  # released when train() returned
        pass


# -- an unreadable newest checkpoint -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory):
    """A workdir with checkpoints 1 and 2 of tiny_smoke."""
    workdir = tmp_path_factory.mktemp("two_checkpoints")
    train(_tiny(total_steps=2, checkpoint_every=1, keep_checkpoints=2), str(workdir), progress=False)
    assert _steps(workdir) == [1, 2]
    return workdir


def _damage(step_dir, how: str) -> str:
    """Damages checkpoint folder ``step_dir`` as ``how`` says; returns the path the error must name."""
    state = os.path.join(step_dir, "state")
    if how == "emptied _METADATA":
        open(os.path.join(state, "_METADATA"), "w").close()
        return os.path.join(state, "_METADATA")
    data_files = glob.glob(os.path.join(state, "d", "*")) + glob.glob(os.path.join(state, "ocdbt.process_*", "d", "*"))
    if how == "garbled array file":
        for path in data_files:
            with open(path, "r+b") as f:
                f.write(os.urandom(64))
        return state
    if how == "truncated array file":
        for path in data_files:
            os.truncate(path, os.path.getsize(path) // 2)
        return state
    if how == "removed state folder":
        shutil.rmtree(state)
        return state
    raise ValueError(how)


@pytest.mark.parametrize("how", ["emptied _METADATA", "garbled array file", "removed state folder"])
def test_unreadable_newest_checkpoint_is_reported_and_the_run_resumes_from_the_older_one(
        two_checkpoints, tmp_path, capsys, how):
    workdir = tmp_path / "run"
    shutil.copytree(two_checkpoints, workdir)
    named = _damage(workdir / "checkpoints" / "2", how)
    summary = train(_tiny(total_steps=3, checkpoint_every=1, keep_checkpoints=2), str(workdir), progress=False)
    out, err = capsys.readouterr()
    assert f"checkpoint step 2 is unreadable: {named}" in err
    assert err.count("is unreadable") == 1 and "Traceback" not in err
    assert "step 1 (the newest readable one" in out
    assert summary["step"] == 3
    # It resumed from step 1: step 2 was trained again, to the loss the first run logged (resume is exact), and
    # the unreadable step 2 was overwritten by a readable one.
    assert _losses(workdir)[2] == _losses(two_checkpoints)[2]
    assert _steps(workdir) == [2, 3]
    Checkpointer(workdir / "checkpoints", every=1, keep=2, read_only=True).restore(_abstract_state(), 2)


def _abstract_state():
    """tiny_smoke's train state as the restore target."""
    _, program, data = build(_tiny())
    data.close()
    return program.abstract_sharded()


def test_truncated_array_file_is_reported_naming_the_step_the_file_and_the_parameter(two_checkpoints, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(two_checkpoints / "checkpoints", workdir / "checkpoints")
    named = _damage(workdir / "checkpoints" / "2", "truncated array file")
    with pytest.raises(CorruptCheckpointError, match=r"reading parameter \S+") as info:
        Checkpointer(workdir / "checkpoints", every=1, keep=2).restore(_abstract_state(), 2)
    assert info.value.step == 2 and info.value.path.startswith(named)


def _run_cli(workdir, *flags) -> subprocess.Popen:
    """train.py on tiny_smoke, as started from a terminal: SIGINT at its default even where this test process
    ignores it (started in the background by a script)."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    return subprocess.Popen([sys.executable, os.path.join(REPO, "train.py"), "--config",
                             os.path.join(REPO, "configs", "tiny_smoke.py"), "--workdir", str(workdir), *flags],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


@pytest.mark.slow
def test_cli_with_no_readable_checkpoint_exits_2_with_a_short_error_naming_step_and_file(two_checkpoints, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(two_checkpoints, workdir)
    shutil.rmtree(workdir / "checkpoints" / "2")
    named = _damage(workdir / "checkpoints" / "1", "garbled array file")
    proc = _run_cli(workdir, "--config.total_steps=3")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err[-3000:]
    assert "Traceback" not in err and len(err.splitlines()) < 20, err[-3000:]
    assert err.startswith(f"error: checkpoint step 1 is unreadable: {named}") and "reading parameter" in err
    assert "move them away" in err


# -- SIGINT --------------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_sigint_saves_a_checkpoint_and_exits_130_without_a_traceback(tmp_path):
    proc = _run_cli(tmp_path, "--config.total_steps=100000", "--config.checkpoint_every=100000",
                    "--config.log_every=1")
    metrics = tmp_path / "metrics.jsonl"
    deadline = time.time() + 240
    while not (metrics.exists() and metrics.read_text().strip()):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert "SIGINT: saved step" in out
    steps = _steps(tmp_path)
    assert len(steps) == 1 and steps[0] >= 1


# -- config values -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("key, value, message", [
    ("optim.lr", -1.0, "optim.lr=-1.0: expected a number > 0"),
    ("optim.lr", float("nan"), "optim.lr=nan: expected a number > 0"),
    ("total_steps", -5, "total_steps=-5: expected an int >= 1"),
    ("batch_size", 0, "batch_size=0: expected an int >= 1"),
    ("checkpoint_every", 0, "checkpoint_every=0: expected an int >= 1"),
    ("keep_checkpoints", 0, "keep_checkpoints=0: expected an int >= 1"),
    ("log_every", 0, "log_every=0: expected an int >= 1"),
    ("optim.ema_decay", 1.0, r"optim.ema_decay=1.0: expected a number in \[0, 1\)"),
    ("optim.warmup_steps", -1, "optim.warmup_steps=-1: expected an int >= 0"),
    ("optim.weight_decay", -0.1, "optim.weight_decay=-0.1: expected a number >= 0"),
    ("optim.grad_clip", -1.0, "optim.grad_clip=-1.0: expected a number >= 0"),
    ("objective.caption_dropout", 1.5, r"objective.caption_dropout=1.5: expected a number in \[0, 1\]"),
    ("objective.block_modes", {"sideways": 1.0}, "objective.block_modes.sideways: unknown mode"),
    ("data.num_examples", 0, "data.num_examples=0: expected an int >= 1"),
])
def test_bad_config_value_fails_naming_the_key_before_the_workdir_is_created(tmp_path, key, value, message):
    workdir = tmp_path / "run"
    with pytest.raises(ValueError, match=message):
        train(_tiny(**{key: value}), str(workdir), progress=False)
    assert not workdir.exists()


def test_config_reader_accepts_every_shipped_config_and_knows_every_optimiser_key():
    assert set(field_names(OptimConfig)) == set(recipes.adamw())
    assert set(recipes.flow_matching()) - {"block_modes"} <= set(field_names(FlowMatchingConfig))
    assert field_names(MeshConfig) == MESH_AXES
    for path in sorted(glob.glob(os.path.join(REPO, "configs", "*.py"))):
        config = load_config(os.path.basename(path)[:-3])
        if config.data.source in ("manifest", "latent_cache"):
            config.data.path = "data"  # the shipped files leave the data path to the command line
        read = read_training_config(config)
        assert isinstance(read, TrainingConfig)
        assert read_training_config(ml_collections.ConfigDict(read.to_dict())) == read  # config.json reads back
    unknown = _tiny()
    unknown.optim.learning_rate = 1e-3
    with pytest.raises(TrainingConfigError, match="optim.learning_rate: unknown key"):
        read_training_config(unknown)


@pytest.mark.parametrize("name, key, value, message", [
    ("tiny_smoke", "model.remat_polcy", "full",
     "model.remat_polcy: unknown key in section 'model'; the nearest valid key is model.remat_policy"),
    ("tiny_smoke", "optim.lrr", 1.0, "optim.lrr: unknown key in section 'optim'; the nearest valid key is optim.lr"),
    ("tiny_smoke", "objective.flow_shfit", 3.0,
     "objective.flow_shfit: unknown key in section 'objective'; the nearest valid key is objective.flow_shift"),
    ("tiny_smoke", "data.num_exmples", 8,
     "data.num_exmples: unknown key in section 'data'; the nearest valid key is data.num_examples"),
    ("tiny_smoke", "mesh.fsdb", 1, "mesh.fsdb: unknown key in section 'mesh'; the nearest valid key is mesh.fsdp"),
    ("tiny_smoke", "total_step", 5,
     "total_step: unknown key in the top level section; the nearest valid key is total_steps"),
    # a key of the other task's section is unknown to this one
    ("demo_autoencoder", "model.scan_layers", False, "model.scan_layers: unknown key in section 'model'"),
    ("demo_autoencoder", "objective.l1_wieght", 1.0,
     "objective.l1_wieght: unknown key in section 'objective'; the nearest valid key is objective.l1_weight"),
])
def test_misspelt_key_in_any_section_fails_naming_it_and_the_nearest_valid_key_before_the_workdir_is_created(
        tmp_path, name, key, value, message):
    config = load_config(name)
    *path, last = key.split(".")
    node = config
    for part in path:
        node = node[part]
    with node.unlocked() if hasattr(node, "unlocked") else contextlib.nullcontext():
        node[last] = value
    workdir = tmp_path / "run"
    with pytest.raises(ValueError, match=re.escape(message)):
        train(config, str(workdir), progress=False)
    assert not workdir.exists()


def test_recipes_refuse_a_misspelt_key_naming_the_nearest():
    with pytest.raises(TrainingConfigError, match=re.escape("optim.warmup_step: unknown key in section 'optim'; "
                                                            "the nearest valid key is optim.warmup_steps")):
        recipes.adamw(warmup_step=5)
    assert read_training_config(_tiny()).objective == FlowMatchingConfig()  # tiny_smoke: the published objective


def test_missing_required_key_fails_naming_it():
    config = _tiny()
    del config["total_steps"]
    with pytest.raises(TrainingConfigError, match="total_steps: missing; expected an int >= 1"):
        read_training_config(config)
    config = load_config("demo_autoencoder")
    del config.objective["l1_weight"]
    with pytest.raises(TrainingConfigError, match="objective.l1_weight: missing"):
        read_training_config(config)


_MISSPELT_EXPERIMENT = """
import importlib.util
spec = importlib.util.spec_from_file_location("tiny_smoke", {path!r})
tiny_smoke = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tiny_smoke)


def get_config():
    c = tiny_smoke.get_config()
    c.{key} = {value!r}
    return c
"""


@pytest.mark.parametrize("key, value, message", [
    ("model.remat_polcy", "full", "model.remat_polcy: unknown key in section 'model'; the nearest valid key is "
                                  "model.remat_policy"),
    ("optim.lrr", 1.0, "optim.lrr: unknown key in section 'optim'; the nearest valid key is optim.lr"),
    ("objective.flow_shfit", 3.0, "objective.flow_shfit: unknown key in section 'objective'; the nearest valid key "
                                  "is objective.flow_shift"),
])
def test_cli_experiment_file_with_a_misspelt_key_exits_2_naming_it_and_creates_no_workdir(tmp_path, key, value,
                                                                                          message):
    experiment = tmp_path / "misspelt.py"
    experiment.write_text(_MISSPELT_EXPERIMENT.format(path=os.path.join(REPO, "configs", "tiny_smoke.py"), key=key,
                                                      value=value))
    workdir = tmp_path / "run"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, os.path.join(REPO, "train.py"), "--config", str(experiment), "--workdir",
                           str(workdir)], env=env, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip() == f"error: {message}", proc.stderr[-3000:]
    assert not workdir.exists()


def test_non_finite_loss_before_any_checkpoint_says_none_was_written(tmp_path):
    config = _tiny(total_steps=4, checkpoint_every=10, **{"optim.lr": 1e20, "optim.grad_clip": 0.0,
                                                          "optim.warmup_steps": 0})
    with pytest.raises(NonFiniteLoss, match="at step 2; stopped. No checkpoint was written yet"):
        train(config, str(tmp_path), progress=False)
    assert _steps(tmp_path) == []


@pytest.mark.parametrize("flags, message", [
    (["--config=/nonexistent/experiment.py"], "error: --config=/nonexistent/experiment.py: cannot load it"),
    (["--config.optim.lr=-1"], "error: optim.lr=-1.0: expected a number > 0"),
    (["--config.optim.lrr=1"], "error: a --config.KEY=VALUE override names a key the config file does not have"),
    (["--config.model.remat_polcy=full"], "error: a --config.KEY=VALUE override names a key the config file does not "
     "have: model.remat_polcy: unknown key in section 'model'; the nearest valid key is model.remat_policy"),
    (["--config.objective.flow_shfit=3"], "error: a --config.KEY=VALUE override names a key the config file does "
     "not have: objective.flow_shfit: unknown key in section 'objective'; the nearest valid key is "
     "objective.flow_shift"),
    (["--config.optim.lrr=1"], "error: a --config.KEY=VALUE override names a key the config file does not have: "
     "optim.lrr: unknown key in section 'optim'; the nearest valid key is optim.lr"),
    (["--config.data.sed=1"], "error: a --config.KEY=VALUE override names a key the config file does not have: "
     "data.sed: unknown key in section 'data'; the nearest valid key is data.seed"),
    (["--config.mesh.dta=1"], "error: a --config.KEY=VALUE override names a key the config file does not have: "
     "mesh.dta: unknown key in section 'mesh'; the nearest valid key is mesh.data"),
    (["--config.total_step=1"], "error: a --config.KEY=VALUE override names a key the config file does not have: "
     "total_step: unknown key in the top level section; the nearest valid key is total_steps"),
])
def test_cli_bad_config_prints_one_error_line_exits_2_and_creates_no_workdir(tmp_path, flags, message):
    workdir = tmp_path / "run"
    proc = _run_cli(workdir, *flags)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err[-3000:]
    assert err.strip().splitlines() == [err.strip()] and err.startswith(message), err[-3000:]
    assert not workdir.exists()
