"""Sampling: bad arguments fail before any model work, non-finite numbers are an error naming the stage instead
of a black video, a signal leaves no temporary or child process, outputs follow the umask (issue: hardening, items
5, 6, 9, 10, 12)."""

import os
import shutil
import signal
import subprocess
import sys
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sana_jax.pipeline import SanaVideoPipeline
from sana_jax.pipeline import prompts as prompt_lib
from sana_jax.pipeline.finite import NonFiniteError
from sana_jax.pipeline.sample import DEMO_MODEL
from sana_jax.pipeline.video_io import write_mp4

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = dict(height=32, width=32, frames=5, num_inference_steps=2)


def _sample(*args, **kw):
    return subprocess.run([sys.executable, "sample.py", "--prompt", "a red circle moving left", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300, **kw)


@pytest.mark.parametrize("args, named", [
    (["--guidance", "inf"], "--guidance"),
    (["--guidance", "nan"], "--guidance"),
    (["--guidance", "-1"], "--guidance"),
    (["--seed", "99999999999999999999"], "--seed"),
    (["--seed", "-1"], "--seed"),
    (["--steps", "0"], "--steps"),
    (["--frames", "12"], "frames=12"),
    (["--height", "36"], "height=36"),
    (["--block-frames", "0"], "--block-frames"),
    (["--out", "."], "is a directory"),
])
def test_sample_py_rejects_bad_arguments_before_loading_the_model(tmp_path, args, named):
    out = tmp_path / "v.mp4"
    proc = _sample("--out", str(out), *args) if "--out" not in args else _sample(*args)
    assert proc.returncode == 2, proc.stderr
    assert "error:" in proc.stderr and named in proc.stderr and "Traceback" not in proc.stderr
    assert "loaded" not in proc.stdout  # failed on the configs alone, before any weights were read
    assert os.listdir(tmp_path) == []


@pytest.fixture(scope="module")
def pipe():
    return SanaVideoPipeline.from_pretrained(DEMO_MODEL)


@pytest.fixture
def poisoned(pipe):
    """poisoned(name): sets every param of pipe.<name> to NaN until the test ends."""
    saved = {}

    def poison(name):
        component = getattr(pipe, name)
        saved[name] = component.params
        component.params = jax.tree.map(lambda x: jnp.full_like(x, jnp.nan), component.params)

    yield poison
    for name, params in saved.items():
        getattr(pipe, name).params = params


@pytest.mark.parametrize("component, stage", [
    ("text_encoder", "the text encoder"),
    ("transformer", "denoising step 1 of 2"),
    ("vae", "the VAE decode"),
])
def test_non_finite_weights_stop_sampling_naming_the_stage(pipe, poisoned, component, stage):
    poisoned(component)
    with pytest.raises(NonFiniteError, match=stage):
        pipe("a red circle moving left", **SMALL)


@pytest.mark.parametrize("component, stage", [
    ("text_encoder", "the text encoder"),
    ("transformer", r"denoising \(block 1 of"),
    ("vae", r"the VAE decode \(block 1 of"),
])
def test_non_finite_weights_stop_the_stream_naming_the_stage_and_block(pipe, poisoned, component, stage):
    poisoned(component)
    with pytest.raises(NonFiniteError, match=stage):
        next(iter(pipe.stream("a red circle moving left", height=32, width=32, frames=9, block_frames=1)))


@pytest.mark.parametrize("growth", [1e10, 1e3, 1.5])
def test_first_non_finite_step_is_the_step_float64_says_overflows(growth):
    """A loop that multiplies by ``growth`` each step: the carried index is the first step whose float32 value is
    inf, which float64 NumPy finds by comparing against float32's largest value (-1 when none does in 8 steps)."""
    from sana_jax.pipeline.finite import first_non_finite_step

    def body(i, carry):
        x, bad = carry
        x = x * growth
        return x, first_non_finite_step(bad, i, x)

    _, bad = jax.lax.fori_loop(0, 8, body, (jnp.full((3,), 1e5, jnp.float32), jnp.int32(-1)))
    values = 1e5 * np.float64(growth) ** np.arange(1, 9)
    over = np.nonzero(values > np.finfo(np.float32).max)[0]
    assert int(bad) == (int(over[0]) if len(over) else -1)


def test_pipeline_call_rejects_non_finite_guidance_and_out_of_range_seed(pipe):
    for kwargs, named in ((dict(guidance_scale=float("inf")), "guidance_scale"),
                          (dict(guidance_scale=float("nan")), "guidance_scale"),
                          (dict(seed=2**32), "seed"), (dict(seed=-1), "seed"),
                          (dict(num_inference_steps=0), "num_inference_steps")):
        with pytest.raises(ValueError, match=named):
            pipe("x", **{**SMALL, **kwargs})
        with pytest.raises(ValueError, match=named):
            next(iter(pipe.stream("x", **{**SMALL, **kwargs})))


def test_sample_py_with_nan_weights_exits_1_naming_the_stage_and_writes_nothing(tmp_path):
    model = tmp_path / "model"
    shutil.copytree(DEMO_MODEL, model)
    from sana_jax import _io

    path = model / "vae" / "flax_params.safetensors"
    tensors = {k: np.full_like(v, np.nan) for k, v in _io.read_safetensors(path).items()}
    _io.write_safetensors(path, tensors, {"format": "flax"})
    out = tmp_path / "out"
    out.mkdir()
    proc = _sample("--model", str(model), "--frames", "9", "--out", str(out / "v.mp4"))
    assert proc.returncode == 1, proc.stderr
    assert "error:" in proc.stderr and "VAE decode" in proc.stderr and "Traceback" not in proc.stderr
    assert os.listdir(out) == []


def test_a_long_prompt_is_said_to_be_cut_once(pipe):
    long = " ".join(["red circle moving left"] * 200)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        prompt_lib.tokenize(pipe.tokenizer, [long, "a red circle"])
        prompt_lib.tokenize(pipe.tokenizer, ["a red circle"], instruction=None)
    cut = [w for w in seen if issubclass(w.category, prompt_lib.PromptTruncatedWarning)]
    assert len(cut) == 1 and "1 prompt(s)" in str(cut[0].message) and "max_sequence_length=300" in str(cut[0].message)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_writing_the_mp4_leaves_no_temporary_and_no_ffmpeg(tmp_path, signum):
    out = tmp_path / "v.mp4"
    proc = subprocess.Popen([sys.executable, "sample.py", "--prompt", "a red circle", "--frames", "401",
                             "--out", str(out)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        children = []
        for _ in range(600):  # ffmpeg starts with the first decoded chunk
            time.sleep(0.1)
            children = _children(proc.pid)
            if any("ffmpeg" in name for _, name in children):
                break
        assert any("ffmpeg" in name for _, name in children), "ffmpeg never started"
        assert [e for e in os.listdir(tmp_path) if e.startswith(".tmp-")]
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in err and "nothing written" in err, err
    assert os.listdir(tmp_path) == [], err
    states = {name: _state(pid) for pid, name in children}
    assert all(state == "gone" for state in states.values()), states  # reaped: neither running nor defunct


def _children(pid: int) -> list[tuple[int, str]]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)
                name, ppid = fields[0].split("(", 1)[1], int(fields[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                out.append((int(entry), name))
    return out


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_mp4_is_written_with_the_mode_the_umask_gives(tmp_path):
    previous = os.umask(0o022)
    try:
        write_mp4(tmp_path / "v.mp4", np.zeros((2, 16, 16, 3), np.uint8))
    finally:
        os.umask(previous)
    assert os.stat(tmp_path / "v.mp4").st_mode & 0o777 == 0o644


@pytest.mark.parametrize("args, named", [
    (["--dtype", "float16"], "--dtype"),
    (["--videos-per-caption", "0"], "--videos-per-caption"),
    (["--seed", "99999999999999999999"], "--seed"),
    (["--guidance", "nan"], "--guidance"),
    (["--long-seconds", "-1"], "--long-seconds"),
    (["--frames", "6"], "frames=6"),
    (["--model", "/no/such/folder"], "--model"),
])
def test_evaluation_cli_rejects_bad_arguments_with_one_error_line(args, named, capsys, monkeypatch):
    from sana_jax.shapes import evaluate as evaluation

    monkeypatch.setattr(SanaVideoPipeline, "from_pretrained", classmethod(lambda *a, **k: pytest.fail("loaded")))
    try:
        code = evaluation.main(args)
    except SystemExit as e:  # argparse's own exit for a value its type refuses
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and "error:" in err and named in err and "Traceback" not in err
