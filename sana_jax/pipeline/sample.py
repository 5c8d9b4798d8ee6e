"""Prompt -> mp4 on disk, the library function behind ``sample.py``."""

from __future__ import annotations

import os
import time

from sana_jax.pipeline.video_io import write_mp4


def check_output_path(out: str) -> None:
    """Fails early (before any model work) when ``out`` cannot be written."""
    directory = os.path.dirname(os.path.abspath(out)) or "."
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"--out {out}: directory {directory} does not exist")
    if not os.access(directory, os.W_OK):
        raise PermissionError(f"--out {out}: directory {directory} is not writable")
    if not out.endswith(".mp4"):
        raise ValueError(f"--out {out}: expected a path ending in .mp4")


def sample_to_file(model: str, prompt: str, out: str, *, image: str | None = None, fps: int = 16,
                   dtype: str = "float32", log=print, **call_kwargs) -> str:
    """Loads the pipeline at ``model``, samples one video and writes it to ``out`` (H.264 mp4 at ``fps``)."""
    from sana_jax.pipeline.sana_video import SanaVideoPipeline

    check_output_path(out)
    if image is not None and not os.path.isfile(image):
        raise FileNotFoundError(f"--image {image}: no such file")
    if fps < 1:
        raise ValueError(f"--fps {fps}: expected >= 1")
    start = time.perf_counter()
    pipe = SanaVideoPipeline.from_pretrained(model, dtype=dtype)
    log(f"loaded {model} in {time.perf_counter() - start:.1f} s")
    frames = pipe(prompt, image=image, progress=True, **call_kwargs)
    for stage, seconds in pipe.timings.items():
        log(f"{stage}: {seconds:.1f} s")
    start = time.perf_counter()
    write_mp4(out, frames[0], fps=fps)
    log(f"wrote {os.path.abspath(out)} ({frames.shape[1]} frames, {frames.shape[3]}x{frames.shape[2]}, {fps} fps) "
        f"in {time.perf_counter() - start:.1f} s")
    return out
