"""The embedded demo model (demo/sana_video_shapes): small, declares its sampling settings, samples the prompted
shape, colour and motion through sample.py's defaults, and gives diffusers' frames after `convert to-torch`."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from sana_jax.data import shapes
from sana_jax.eval.shapes import detect
from sana_jax.pipeline.sample import DEMO_MODEL, read_sample_defaults

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_demo_folder_is_small_and_declares_its_settings():
    files = [os.path.join(d, f) for d, _, fs in os.walk(DEMO_MODEL) for f in fs]
    assert sum(os.path.getsize(f) for f in files) <= 20 * 1024 * 1024
    for name in ("model_index.json", "tokenizer", "text_encoder", "transformer", "vae", "scheduler"):
        assert os.path.exists(os.path.join(DEMO_MODEL, name)), name
    d = read_sample_defaults(DEMO_MODEL)
    assert (d["height"], d["width"], d["frames"], d["fps"]) == (shapes.HEIGHT, shapes.WIDTH, shapes.FRAMES, shapes.FPS)
    assert d["stream"] is True and d["sampler"] == "dpm"


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
def test_demo_through_convert_to_torch_gives_diffusers_frames(tmp_path):
    """The shipped folder -> `python -m convert to-torch` -> diffusers.SanaVideoPipeline: the same uint8 frames
    (within 1) as this project's pipeline from the same initial latents, text-to-video with CFG."""
    from diffusers import SanaVideoPipeline as TorchPipeline

    from sana_jax import SanaVideoPipeline

    torch_folder = tmp_path / "torch"
    proc = subprocess.run([sys.executable, "-m", "convert", "to-torch", DEMO_MODEL, str(torch_folder)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    reference = TorchPipeline.from_pretrained(torch_folder)
    ours = SanaVideoPipeline.from_pretrained(DEMO_MODEL)
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
