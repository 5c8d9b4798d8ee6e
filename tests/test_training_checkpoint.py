"""Orbax checkpoints of the train state + data state, and the metrics writer (JSON lines + TensorBoard)."""

from __future__ import annotations

import glob
import json
import math
import os
import shutil
import struct
import threading

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P, SingleDeviceSharding

from sana_jax.training.checkpoint import CheckpointMismatchError, Checkpointer
from sana_jax.training.metrics import MetricsWriter


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: dict
    opt_state: optax.OptState
    key: jax.Array
    ema_params: dict | None = None


def make_state(seed: int = 0, step: int = 7, kernel_shape=(16, 8)) -> TrainState:
    """A train state like the real one: params, AdamW state after one update (non-zero moments), int32 step,
    uint32 PRNG key, EMA params; fp32 and bf16 leaves."""
    k = jax.random.split(jax.random.PRNGKey(seed), 4)
    params = {"blocks": {"0": {"kernel": jax.random.normal(k[0], kernel_shape),
                               "bias": jax.random.normal(k[1], (8,))}},
              "embed": jax.random.normal(k[2], (8, 4)).astype(jnp.bfloat16)}
    tx = optax.adamw(1e-3)
    opt_state = tx.init(params)
    grads = jax.tree.map(lambda p: jnp.ones_like(p) * 0.1, params)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    ema = jax.tree.map(lambda p: p * 0.5, params)
    return TrainState(step=jnp.asarray(step, jnp.int32), params=params, opt_state=opt_state, key=k[3],
                      ema_params=ema)


def fsdp_sharding(mesh: Mesh, x) -> NamedSharding:
    """Leading axis over ``fsdp`` where it divides, replicated otherwise (as the FSDP rules would place it)."""
    n = mesh.shape["fsdp"]
    return NamedSharding(mesh, P("fsdp") if x.ndim and x.shape[0] % n == 0 else P())


def put(state, sharding_of):
    return jax.tree.map(lambda x: jax.device_put(x, sharding_of(x)), state)


def abstract(state, sharding_of):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding_of(x)), state)


def assert_bit_exact(restored, expected):
    assert jax.tree.structure(restored) == jax.tree.structure(expected)
    for (path, r), e in zip(jax.tree_util.tree_leaves_with_path(restored), jax.tree.leaves(expected)):
        assert r.dtype == e.dtype, jax.tree_util.keystr(path)
        as_bytes = [np.asarray(a).reshape(-1).view(np.uint8) for a in (r, e)]
        np.testing.assert_array_equal(*as_bytes, err_msg=jax.tree_util.keystr(path))


@pytest.fixture
def fsdp_mesh():
    return Mesh(np.array(jax.devices()), ("fsdp",))


def test_save_restore_round_trip_is_bit_exact_with_data_state(tmp_path, fsdp_mesh):
    state = put(make_state(), lambda x: fsdp_sharding(fsdp_mesh, x))
    expected = jax.tree.map(np.asarray, state)
    data_state = {"epoch": 2, "position": 1234, "shards": ["a-00001", "a-00002"], "seed": 0}
    with Checkpointer(tmp_path, every=10, keep=3) as ckpt:
        assert ckpt.save(10, state, data_state)
    with Checkpointer(tmp_path, every=10, keep=3) as ckpt:
        restored, restored_data = ckpt.restore(abstract(state, lambda x: fsdp_sharding(fsdp_mesh, x)))
    assert isinstance(restored, TrainState)
    assert_bit_exact(restored, expected)
    assert restored_data == data_state


def test_async_save_returns_before_writing_and_snapshots_arrays_and_data_state(tmp_path, fsdp_mesh, monkeypatch):
    # Hold the background write of the data state until the test has changed everything the save was given.
    release = threading.Event()
    write_json = ocp.JsonCheckpointHandler._save_fn

    async def held_back(self, item, directory):
        release.wait(timeout=10)
        await write_json(self, item, directory)

    monkeypatch.setattr(ocp.JsonCheckpointHandler, "_save_fn", held_back)
    state = put(make_state(), lambda x: fsdp_sharding(fsdp_mesh, x))
    expected = jax.tree.map(np.asarray, state)
    data_state = {"position": 5}
    ckpt = Checkpointer(tmp_path, every=1, keep=2, async_save=True)
    try:
        assert ckpt.save(1, state, data_state)
        assert not (tmp_path / "1").exists()  # still being written
        # What a jitted step with donated state does to the buffers, and what an iterator does to its state dict.
        jax.tree.map(lambda x: x.delete(), state)
        data_state["position"] = 6
    finally:
        release.set()
    ckpt.wait()
    assert (tmp_path / "1").is_dir()
    restored, restored_data = ckpt.restore(abstract(expected, lambda x: fsdp_sharding(fsdp_mesh, x)))
    ckpt.close()
    assert_bit_exact(restored, expected)
    assert restored_data == {"position": 5}


@pytest.mark.parametrize("target", ["data2_fsdp4", "single_device"])
def test_restore_onto_another_mesh_places_arrays_with_the_requested_shardings(tmp_path, fsdp_mesh, target):
    state = put(make_state(), lambda x: fsdp_sharding(fsdp_mesh, x))
    expected = jax.tree.map(np.asarray, state)
    with Checkpointer(tmp_path, every=1, keep=1) as ckpt:
        ckpt.save(3, state, {"position": 3})

    if target == "data2_fsdp4":
        mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "fsdp"))

        def sharding_of(x):  # 2-D leaves split over both axes, a layout the fsdp=8 save never had
            if x.ndim == 2:
                return NamedSharding(mesh, P("data", "fsdp"))
            return fsdp_sharding(mesh, x)
    else:
        def sharding_of(x):
            return SingleDeviceSharding(jax.devices()[5])

    wanted = abstract(expected, sharding_of)
    with Checkpointer(tmp_path, every=1, keep=1) as ckpt:
        restored, _ = ckpt.restore(wanted)
    assert_bit_exact(restored, expected)
    for r, w in zip(jax.tree.leaves(restored), jax.tree.leaves(wanted)):
        assert r.sharding == w.sharding
    if target == "data2_fsdp4":
        kernel = restored.params["blocks"]["0"]["kernel"]
        assert kernel.addressable_shards[0].data.shape == (8, 2)


def test_keep_retains_only_the_latest_checkpoints_and_should_save_follows_every(tmp_path):
    state = make_state()
    with Checkpointer(tmp_path / "a", every=1, keep=2) as ckpt:
        assert ckpt.latest_step() is None
        for step in range(1, 6):
            assert ckpt.save(step, state.replace(step=jnp.int32(step)), {"position": step})
        ckpt.wait()
        assert ckpt.all_steps() == [4, 5]
        assert ckpt.latest_step() == 5
    step_dirs = sorted(n for n in os.listdir(tmp_path / "a") if n[0].isdigit())
    assert step_dirs == ["4", "5"]

    with Checkpointer(tmp_path / "b", every=3, keep=5) as ckpt:
        assert [s for s in range(10) if ckpt.should_save(s)] == [0, 3, 6, 9]
        assert not ckpt.save(4, state, {})
        assert ckpt.save(6, state, {})
        assert not ckpt.save(6, state, {})           # already on disk: not rewritten
        assert ckpt.save(7, state, {}, force=True)   # the final step of a run, off the interval
        ckpt.wait()
        assert ckpt.all_steps() == [6, 7] and ckpt.latest_step() == 7


def test_interrupted_save_is_never_restored_as_latest(tmp_path):
    like = make_state()
    with Checkpointer(tmp_path, every=1, keep=5, async_save=False) as ckpt:
        for step in (1, 2, 3):
            ckpt.save(step, make_state(seed=step, step=step), {"position": step})
    # What a save killed before its final rename leaves: the step under orbax's temporary name, part-written
    # (orbax names it "<step>.orbax-checkpoint-tmp", older versions add "-<timestamp>").
    os.rename(tmp_path / "3", tmp_path / "3.orbax-checkpoint-tmp")
    os.remove(tmp_path / "3.orbax-checkpoint-tmp" / "commit_success.txt")
    shutil.copytree(tmp_path / "2", tmp_path / "4.orbax-checkpoint-tmp-1764230400")
    shutil.rmtree(tmp_path / "4.orbax-checkpoint-tmp-1764230400" / "data_state")

    # A reader (evaluation, sampling) must not take them for leftovers: they could be another process's live save.
    with Checkpointer(tmp_path, every=1, keep=5, read_only=True) as reader:
        assert reader.latest_step() == 2
        reader.restore(abstract(like, lambda x: SingleDeviceSharding(jax.devices()[0])))
        with pytest.raises(ValueError, match="read_only"):
            reader.save(5, like, {})
    assert len(glob.glob(str(tmp_path / "*.orbax-checkpoint-tmp*"))) == 2

    with Checkpointer(tmp_path, every=1, keep=5) as ckpt:
        assert ckpt.latest_step() == 2
        assert ckpt.all_steps() == [1, 2]
        restored, data_state = ckpt.restore(abstract(like, lambda x: SingleDeviceSharding(jax.devices()[0])))
        assert int(restored.step) == 2 and data_state == {"position": 2}
        assert_bit_exact(restored, jax.tree.map(np.asarray, make_state(seed=2, step=2)))
        # The resumed run reaches step 3 again and saves it over the leftover.
        assert ckpt.save(3, make_state(seed=30, step=3), {"position": 3})
        ckpt.wait()
        assert ckpt.all_steps() == [1, 2, 3]
    assert not glob.glob(str(tmp_path / "*.orbax-checkpoint-tmp*"))


def test_shape_mismatch_error_names_parameter_path_and_both_shapes(tmp_path):
    with Checkpointer(tmp_path, every=1, keep=1, async_save=False) as ckpt:
        ckpt.save(1, make_state(kernel_shape=(16, 8)), {})
        sharding = lambda x: SingleDeviceSharding(jax.devices()[0])  # noqa: E731
        with pytest.raises(CheckpointMismatchError) as err:
            ckpt.restore(abstract(make_state(kernel_shape=(16, 12)), sharding))
    message = str(err.value)
    assert "params/blocks/0/kernel: checkpoint (16, 8) float32, model expects (16, 12) float32" in message
    assert "opt_state/0/mu/blocks/0/kernel" in message
    assert "params/blocks/0/bias" not in message  # only what differs


def test_dtype_change_or_missing_parameter_is_an_error_naming_it(tmp_path):
    state = make_state()
    sharding = lambda x: SingleDeviceSharding(jax.devices()[0])  # noqa: E731
    with Checkpointer(tmp_path, every=1, keep=1, async_save=False) as ckpt:
        ckpt.save(1, state, {})
        as_fp32 = state.replace(params={**state.params, "embed": state.params["embed"].astype(jnp.float32)})
        with pytest.raises(CheckpointMismatchError, match=r"params/embed: checkpoint \(8, 4\) bfloat16, "
                                                          r"model expects \(8, 4\) float32"):
            ckpt.restore(abstract(as_fp32, sharding))
        without_ema = state.replace(ema_params=None)
        with pytest.raises(CheckpointMismatchError, match="ema_params/blocks/0/kernel: in the checkpoint, not in"):
            ckpt.restore(abstract(without_ema, sharding))


def test_data_state_is_per_process_and_a_process_count_change_is_an_error(tmp_path):
    state = make_state()
    sharding = lambda x: SingleDeviceSharding(jax.devices()[0])  # noqa: E731
    with Checkpointer(tmp_path, every=1, keep=1, async_save=False) as ckpt:
        ckpt.save(1, state, {"position": 1})
    folder = tmp_path / "1" / "data_state"
    assert sorted(p.name for p in folder.glob("*.json")) == ["process_0-of-1.json"]
    for i in range(2):  # as if two processes had saved
        shutil.copy(folder / "process_0-of-1.json", folder / f"process_{i}-of-2.json")
    os.remove(folder / "process_0-of-1.json")
    with Checkpointer(tmp_path, every=1, keep=1) as ckpt:
        with pytest.raises(FileNotFoundError, match=r"process_0-of-1\.json.*\['process_0-of-2\.json', 'process_1-of-2"):
            ckpt.restore(abstract(state, sharding))
        restored, data_state = ckpt.restore(abstract(state, sharding), restore_data_state=False)
    assert data_state is None
    assert_bit_exact(restored, jax.tree.map(np.asarray, state))


# -- metrics --------------------------------------------------------------------------------------------------


def read_jsonl(path):
    def reject(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    with open(path, encoding="utf-8") as f:
        return [json.loads(line, parse_constant=reject) for line in f]


def read_tensorboard_scalars(logdir) -> list[tuple[str, int, float]]:
    """(tag, step, value) from the TFRecord-framed event files: u64 length, u32 crc, payload, u32 crc."""
    from tensorboardX.proto import event_pb2

    scalars = []
    for name in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
        with open(name, "rb") as f:
            data = f.read()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            scalars += [(v.tag, event.step, v.simple_value) for v in event.summary.value]
    return scalars


def test_metrics_lines_are_appended_and_flushed_on_each_write(tmp_path):
    writer = MetricsWriter(tmp_path)
    writer.write(1, {"loss": jnp.float32(0.5), "tokens": np.int64(4096), "lr": 1e-4})
    assert read_jsonl(tmp_path / "metrics.jsonl") == [{"step": 1, "loss": 0.5, "tokens": 4096, "lr": 1e-4}]
    writer.write(2, {"loss": jnp.asarray([0.25])})
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2]  # still open: flushed
    writer.close()
    with MetricsWriter(tmp_path) as again:
        again.write(3, {"loss": 0.125})
    assert [r["loss"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [0.5, 0.25, 0.125]
    assert isinstance(read_jsonl(tmp_path / "metrics.jsonl")[0]["tokens"], int)


def test_resume_step_drops_the_lines_logged_after_the_restored_checkpoint(tmp_path):
    with MetricsWriter(tmp_path) as writer:
        for step in range(10, 130, 10):
            writer.write(step, {"loss": 1.0 / step})
    with open(tmp_path / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"step": 130, "lo')  # the crash cut this line short
    with MetricsWriter(tmp_path, resume_step=100) as writer:
        assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == list(range(10, 110, 10))
        writer.write(110, {"loss": 0.5})
    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(10, 120, 10))
    assert records[-1]["loss"] == 0.5


def test_disabled_writer_writes_nothing(tmp_path):
    workdir = tmp_path / "run"
    with MetricsWriter(workdir, enabled=False) as writer:
        writer.write(1, {"loss": 0.5})
    assert not workdir.exists()
    workdir.mkdir()
    (workdir / "metrics.jsonl").write_text('{"step": 5, "loss": 1.0}\n')
    with MetricsWriter(workdir, enabled=False, resume_step=2) as writer:
        writer.write(3, {"loss": 0.5})
    assert os.listdir(workdir) == ["metrics.jsonl"]
    assert (workdir / "metrics.jsonl").read_text() == '{"step": 5, "loss": 1.0}\n'


def test_tensorboard_event_file_holds_the_scalars(tmp_path):
    with MetricsWriter(tmp_path) as writer:
        writer.write(1, {"loss": 0.5, "grad_norm": jnp.float32(2.0)})
        writer.write(2, {"loss": 0.25})
    scalars = read_tensorboard_scalars(tmp_path / "tensorboard")
    assert sorted(scalars) == [("grad_norm", 1, 2.0), ("loss", 1, 0.5), ("loss", 2, 0.25)]


def test_non_finite_metric_is_written_as_json_null_and_as_nan_in_tensorboard(tmp_path):
    with MetricsWriter(tmp_path) as writer:
        writer.write(1, {"loss": jnp.float32(jnp.nan), "grad_norm": np.inf, "lr": 1e-4})
    assert read_jsonl(tmp_path / "metrics.jsonl") == [{"step": 1, "loss": None, "grad_norm": None, "lr": 1e-4}]
    scalars = {tag: v for tag, _, v in read_tensorboard_scalars(tmp_path / "tensorboard")}
    assert math.isnan(scalars["loss"]) and scalars["grad_norm"] == math.inf
