"""`python -m convert` never deletes or writes outside its destination, says so about non-finite weights, and
leaves nothing behind when stopped (issue: hardening, items 1, 2, 5, 6, 9)."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from convert.__main__ import main as convert
from sana_jax import _io
from sana_jax.pipeline.sample import DEMO_MODEL

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tree_digest(folder) -> dict:
    """relative path -> sha256 of every file under ``folder`` (symlinks not followed)."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return out


@pytest.fixture
def src(tmp_path):
    """A writable copy of the shipped demo pipeline (JAX format, 12 MB)."""
    path = tmp_path / "src"
    shutil.copytree(DEMO_MODEL, path)
    return path


def _edit_index(folder, **entries):
    index_path = folder / "model_index.json"
    index = json.loads(index_path.read_text())
    index.update(entries)
    index_path.write_text(json.dumps(index))


def test_convert_refuses_a_non_empty_folder_it_did_not_write_and_overwrite_replaces_it(src, tmp_path, capsys):
    dst = tmp_path / "mine"
    dst.mkdir()
    (dst / "notes.txt").write_text("keep me")
    assert convert(["to-torch", str(src), str(dst)]) == 2
    err = capsys.readouterr().err
    assert "non-empty folder" in err and "--overwrite" in err and str(dst) in err
    assert os.listdir(dst) == ["notes.txt"] and (dst / "notes.txt").read_text() == "keep me"
    assert not [e for e in os.listdir(tmp_path) if ".tmp-" in e]

    assert convert(["to-torch", str(src), str(dst), "--overwrite"]) == 0
    assert not (dst / "notes.txt").exists() and (dst / "model_index.json").is_file()


def test_convert_replaces_its_own_earlier_output_without_overwrite(src, tmp_path):
    dst = tmp_path / "out"
    assert convert(["to-torch", str(src), str(dst)]) == 0
    assert (dst / "transformer" / "diffusion_pytorch_model.safetensors").is_file()
    assert convert(["to-jax", str(src), str(dst)]) == 0
    assert (dst / "transformer" / "flax_params.safetensors").is_file()
    assert not (dst / "transformer" / "diffusion_pytorch_model.safetensors").exists()


@pytest.mark.parametrize("where", ["same", "parent", "child", "current_dir"])
def test_convert_never_writes_over_or_into_its_source_even_with_overwrite(src, tmp_path, where, monkeypatch):
    dst = {"same": src, "parent": tmp_path, "child": src / "converted", "current_dir": "."}[where]
    if where == "current_dir":  # `python -m convert to-jax SRC .` run from inside the source folder
        monkeypatch.chdir(src)
    before = _tree_digest(tmp_path)
    for extra in ([], ["--overwrite"]):
        assert convert(["to-jax", str(src), str(dst), *extra]) == 2
    assert _tree_digest(tmp_path) == before
    assert sorted(os.listdir(tmp_path)) == ["src"]


def test_convert_of_a_training_run_into_the_run_is_refused_and_the_run_is_untouched(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints" / "10").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    (run / "metrics.jsonl").write_text('{"step": 10, "loss": 0.5}\n')
    before = _tree_digest(run)
    assert convert(["to-torch", str(run), str(run)]) == 2
    assert "is SRC" in capsys.readouterr().err
    assert _tree_digest(run) == before and (run / "checkpoints" / "10").is_dir()


def test_convert_refuses_a_component_name_that_leads_to_a_sibling_folder(src, tmp_path, capsys):
    sibling = tmp_path / "other_model" / "vae"
    shutil.copytree(src / "vae", sibling)
    before = _tree_digest(tmp_path / "other_model")
    _edit_index(src, **{"../other_model/vae": ["diffusers", "AutoencoderKLWan"]})
    dst = tmp_path / "dst"
    assert convert(["to-torch", str(src), str(dst)]) == 2
    err = capsys.readouterr().err
    assert "'../other_model/vae'" in err and "not a plain name" in err
    assert _tree_digest(tmp_path / "other_model") == before
    assert not dst.exists() and not (tmp_path / "other_model" / "vae.tmp").exists()


def test_convert_refuses_a_component_folder_that_is_a_symlink_out_of_the_source(src, tmp_path, capsys):
    outside = tmp_path / "outside"
    shutil.copytree(src / "vae", outside / "vae")
    before = _tree_digest(outside)
    os.symlink(outside / "vae", src / "linked_vae")
    _edit_index(src, linked_vae=["diffusers", "AutoencoderKLWan"])
    dst = tmp_path / "dst"
    assert convert(["to-torch", str(src), str(dst)]) == 2
    assert "'linked_vae'" in capsys.readouterr().err
    assert _tree_digest(outside) == before and not dst.exists()


def test_plain_name_and_inside_refuse_every_escape(tmp_path):
    for bad in ("", ".", "..", "a/b", "../x", "a\\b", "x\0y", 3):
        with pytest.raises(_io.UnsafePathError, match="not a plain name"):
            _io.plain_name(bad, where="idx", what="component")
    for bad in ("/etc/passwd", "../x.safetensors", "a/../../x", ""):
        with pytest.raises(_io.UnsafePathError, match="idx"):
            _io.inside(tmp_path, bad, where="idx", what="shard")
    assert _io.inside(tmp_path, "a/../b.safetensors", where="idx", what="shard") == \
        os.path.join(tmp_path, "a/../b.safetensors")
    os.symlink("/", tmp_path / "root")
    _io.inside(tmp_path, "root/etc", where="idx", what="folder")  # lexically inside: a file symlink is allowed
    with pytest.raises(_io.UnsafePathError, match="through a symlink"):
        _io.inside(tmp_path, "root/etc", where="idx", what="folder", resolve=True)


def _poison(folder, key_part: str):
    """Sets one parameter (the first whose key contains ``key_part``) of a JAX-format component to NaN."""
    path = os.path.join(folder, "flax_params.safetensors")
    tensors = {k: np.array(v) for k, v in _io.read_safetensors(path).items()}
    key = next(k for k in sorted(tensors) if key_part in k)
    tensors[key].flat[0] = np.nan
    _io.write_safetensors(path, tensors, {"format": "flax"})
    return key


def test_convert_warns_about_non_finite_weights_and_strict_refuses_them(src, tmp_path, capsys):
    key = _poison(src / "transformer", "kernel")
    assert convert(["to-torch", str(src), str(tmp_path / "warned")]) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "non-finite" in err and key in err and "transformer" in err
    assert convert(["to-torch", str(src), str(tmp_path / "strict"), "--strict"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and key in err
    assert not (tmp_path / "strict").exists() and not [e for e in os.listdir(tmp_path) if ".tmp-" in e]


def test_outputs_get_the_permissions_the_umask_gives(src, tmp_path):
    previous = os.umask(0o022)
    try:
        assert convert(["to-torch", str(src), str(tmp_path / "out")]) == 0
        with _io.atomic_file(tmp_path / "a.txt") as tmp:
            open(tmp, "w").close()
    finally:
        os.umask(previous)
    assert os.stat(tmp_path / "a.txt").st_mode & 0o777 == 0o644
    for root, _, files in os.walk(tmp_path / "out"):
        assert os.stat(root).st_mode & 0o777 == 0o755, root
        for name in files:
            assert os.stat(os.path.join(root, name)).st_mode & 0o777 == 0o644, name


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_convert_removes_the_temporary_folder_and_keeps_the_old_output(src, tmp_path, signum):
    """The conversion is held inside its temporary folder (writing a component sleeps), then signalled."""
    dst = tmp_path / "dst"
    assert convert(["to-jax", str(src), str(dst)]) == 0
    before = _tree_digest(dst)
    slow = ("import sys, time; import sana_jax.components as c; write = c.write_component; "
            "c.write_component = lambda *a, **k: (write(*a, **k), print('writing', flush=True), time.sleep(120)); "
            "from convert.__main__ import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.Popen([sys.executable, "-c", slow, "to-torch", str(src), str(dst)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        assert [e for e in os.listdir(tmp_path) if e.startswith(".dst.tmp-")]
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in err and "left as it was" in err
    assert sorted(os.listdir(tmp_path)) == ["dst", "src"]
    assert _tree_digest(dst) == before


def test_atomic_directory_defers_a_signal_until_the_swap_is_done(tmp_path, monkeypatch):
    """A SIGTERM arriving between the two renames of the swap is raised after it: the path is never missing."""
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("old")
    rename = os.rename

    def rename_then_signal(a, b):
        rename(a, b)
        if b.endswith(os.sep + "x"):  # the old folder moved aside: signal before the new one moves in
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # the handler runs here, inside the deferred block

    with _io.terminate_cleanly(), pytest.raises(_io.Terminated):
        with _io.atomic_directory(tmp_path / "out") as tmp:
            open(os.path.join(tmp, "new.txt"), "w").close()
            monkeypatch.setattr(os, "rename", rename_then_signal)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path / "out")) == ["new.txt"]
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_precompute_refuses_an_out_folder_it_did_not_write_or_that_holds_its_inputs(tmp_path, capsys):
    from sana_jax.training.precompute import main as precompute

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    (tmp_path / "clips.jsonl").write_text('{"video": "a.mp4", "caption": "x"}\n')
    common = ["--pipeline", DEMO_MODEL, "--manifest", str(tmp_path / "clips.jsonl"), "--height", "32", "--width",
              "32", "--frames", "17", "--fps", "8"]
    assert precompute([*common, "--out", str(mine)]) == 2
    assert "no latent cache wrote" in capsys.readouterr().err
    for extra in ([], ["--overwrite"]):  # the manifest lies inside --out: never, even with --overwrite
        assert precompute([*common, "--out", str(tmp_path), *extra]) == 2
        assert "contains SRC" in capsys.readouterr().err
    assert os.listdir(mine) == ["notes.txt"] and sorted(os.listdir(tmp_path)) == ["clips.jsonl", "mine"]
