"""The demo models shipped in the package (`sana_jax.shapes.DEMO_MODEL`, the 4-step LongSANA student, and
`DEMO_TEACHER`): package data an install carries, small, declaring their sampling settings; the default samples
the prompted shape, colour and motion through sample.py's defaults; the teacher gives diffusers' frames after
`convert to-torch`, the student converts to a causal transformer folder this project loads back."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from sana_jax.pipeline.sample import merge_defaults, read_sample_defaults
from sana_jax.shapes import DEMO_MODEL, DEMO_TEACHER
from sana_jax.shapes import world as shapes
from sana_jax.shapes.detect import detect

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_demo_model_resolves_inside_the_package_and_every_file_is_declared_package_data():
    import fnmatch
    import importlib.resources
    import tomllib

    import sana_jax.shapes

    package = importlib.resources.files("sana_jax.shapes")
    assert os.path.samefile(DEMO_MODEL, os.fspath(package / "model"))
    assert os.path.samefile(DEMO_TEACHER, os.fspath(package / "teacher"))
    assert os.path.samefile(os.path.dirname(DEMO_MODEL), os.path.dirname(sana_jax.shapes.__file__))
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        patterns = tomllib.load(f)["tool"]["setuptools"]["package-data"]["sana_jax.shapes"]
    files = [os.path.relpath(os.path.join(d, f), os.path.dirname(DEMO_MODEL))
             for folder in (DEMO_MODEL, DEMO_TEACHER) for d, _, fs in os.walk(folder) for f in fs
             if "__pycache__" not in d]
    assert {"model/transformer/flax_params.safetensors", "teacher/transformer/flax_params.safetensors"} <= set(files)
    for name in files:   # setuptools' glob: "*" stays inside one folder, as fnmatch on path parts does
        assert any(len(name.split("/")) == len(p.split("/")) and all(map(fnmatch.fnmatchcase, name.split("/"),
                                                                         p.split("/"))) for p in patterns), name


def test_merge_defaults_puts_the_given_flags_over_the_folders_settings():
    folder = read_sample_defaults(DEMO_MODEL)
    merged = merge_defaults(DEMO_MODEL, steps=3, guidance=None, sampler="few_step", stream=False)
    assert merged == {**folder, "steps": 3, "sampler": "few_step", "stream": False}
    assert merge_defaults(DEMO_MODEL) == folder
    with pytest.raises(TypeError, match="num_inference_steps"):
        merge_defaults(DEMO_MODEL, num_inference_steps=3)


def test_demo_folders_are_small_and_declare_their_settings():
    from sana_jax.components import load_config

    files = [os.path.join(d, f) for folder in (DEMO_MODEL, DEMO_TEACHER) for d, _, fs in os.walk(folder) for f in fs]
    assert sum(os.path.getsize(f) for f in files) <= 30 * 1024 * 1024   # every shipped model together
    for folder in (DEMO_MODEL, DEMO_TEACHER):
        for name in ("model_index.json", "tokenizer", "text_encoder", "transformer", "vae", "scheduler"):
            assert os.path.exists(os.path.join(folder, name)), (folder, name)
        d = read_sample_defaults(folder)
        assert (d["height"], d["width"], d["frames"], d["fps"]) == (shapes.HEIGHT, shapes.WIDTH, shapes.FRAMES,
                                                                    shapes.FPS)
        assert d["stream"] is True and d["decode_window"] == 2
    student, teacher = read_sample_defaults(DEMO_MODEL), read_sample_defaults(DEMO_TEACHER)
    assert (student["sampler"], student["steps"], student["guidance"]) == ("few_step", 4, 1.0)
    assert (teacher["sampler"], teacher["steps"], teacher["guidance"]) == ("dpm", 20, 6.0)
    assert load_config(os.path.join(DEMO_MODEL, "transformer")).class_name == "SanaVideoCausalTransformer3DModel"
    assert load_config(os.path.join(DEMO_TEACHER, "transformer")).class_name == "SanaVideoTransformer3DModel"


def test_readme_first_command_writes_the_prompted_video(tmp_path):
    """`python sample.py --prompt ...` with no --model: a held-out combination, checked by the detector."""
    import av

    out = tmp_path / "video.mp4"
    prompt = "a red circle moving left"
    assert shapes.parse_caption(prompt) in shapes.HELD_OUT
    proc = subprocess.run([sys.executable, "sample.py", "--prompt", prompt, "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    with av.open(str(out)) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    assert frames.shape == (shapes.FRAMES, shapes.HEIGHT, shapes.WIDTH, 3)
    got = detect(frames)
    assert (got.colour, got.shape, got.direction) == ("red", "circle", "left")


@pytest.mark.slow
def test_demo_teacher_through_convert_to_torch_gives_diffusers_frames(tmp_path):
    """The shipped teacher -> `python -m convert to-torch` -> diffusers.SanaVideoPipeline: the same uint8 frames
    (within 1) as this project's pipeline from the same initial latents, text-to-video with CFG. (The student's
    causal transformer has no diffusers class; its parts are the teacher's but for the transformer, whose
    blocks are the same SanaVideoTransformer3DModel blocks.)"""
    from diffusers import SanaVideoPipeline as TorchPipeline

    from sana_jax import SanaVideoPipeline

    torch_folder = tmp_path / "torch"
    proc = subprocess.run([sys.executable, "-m", "convert", "to-torch", DEMO_TEACHER, str(torch_folder)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    reference = TorchPipeline.from_pretrained(torch_folder)
    ours = SanaVideoPipeline.from_pretrained(DEMO_TEACHER)
    noise = torch.randn((1, 16, 5, 4, 4), generator=torch.Generator().manual_seed(0))
    kw = dict(negative_prompt="", height=shapes.HEIGHT, width=shapes.WIDTH, frames=shapes.FRAMES,
              num_inference_steps=6, guidance_scale=4.0)
    prompt = "a green triangle moving up"
    with torch.no_grad():
        ref = reference(prompt, latents=noise.clone(), output_type="np", use_resolution_binning=False, **kw).frames
    video = ours(prompt, latents=np.transpose(noise.numpy(), (0, 2, 3, 4, 1)), **kw)
    expected = np.round(np.clip(np.asarray(ref), 0, 1) * 255).astype(np.int16)
    assert video.shape == expected.shape == (1, shapes.FRAMES, shapes.HEIGHT, shapes.WIDTH, 3)
    assert np.abs(video.astype(np.int16) - expected).max() <= 1


def test_load_tokenizer_resolves_the_class_autotokenizer_does_and_tokenizes_the_same():
    from transformers import AutoTokenizer

    from sana_jax.pipeline.tokenizer_files import load_tokenizer

    folder = os.path.join(DEMO_MODEL, "tokenizer")
    ours, reference = load_tokenizer(folder), AutoTokenizer.from_pretrained(folder)
    assert type(ours) is type(reference)
    text = ["a red circle moving left", "a zebra"]
    a, b = (t(text, padding="max_length", max_length=12, truncation=True, return_tensors="np")
            for t in (ours, reference))
    np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
    np.testing.assert_array_equal(a["attention_mask"], b["attention_mask"])


@pytest.mark.slow
def test_demo_student_converts_to_a_causal_transformer_folder_in_the_diffusers_layout(tmp_path):
    """`python -m convert to-torch` of the shipped student: a SanaVideoCausalTransformer3DModel folder (the
    LongSANA layout) whose state dict loads strictly into diffusers' SanaVideoTransformer3DModel of the same config
    (the same blocks), and which this project loads back to the same params."""
    import json

    from diffusers import SanaVideoTransformer3DModel
    from safetensors.torch import load_file

    import jax

    from sana_jax.components import load_component

    out = tmp_path / "torch"
    proc = subprocess.run([sys.executable, "-m", "convert", "to-torch", DEMO_MODEL, str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    with open(out / "transformer" / "config.json") as f:
        config = json.load(f)
    assert config["_class_name"] == "SanaVideoCausalTransformer3DModel"
    with open(out / "model_index.json") as f:
        assert json.load(f)["transformer"] == ["diffusers", "SanaVideoCausalTransformer3DModel"]
    reference = SanaVideoTransformer3DModel.from_config({k: v for k, v in config.items() if not k.startswith("_")})
    reference.load_state_dict(load_file(out / "transformer" / "diffusion_pytorch_model.safetensors"), strict=True)
    ours = load_component(os.path.join(DEMO_MODEL, "transformer"))
    back = load_component(out / "transformer")
    assert back.class_name == "SanaVideoCausalTransformer3DModel"
    for a, b in zip(jax.tree_util.tree_leaves(ours.params), jax.tree_util.tree_leaves(back.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
